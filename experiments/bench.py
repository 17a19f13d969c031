"""Benchmark of probekit's speed and memory claims, measured in one run on one machine.

1. Extraction over the bare forward: ``probekit.extract`` (noise, hooks, pooling, HDF5 writes) vs
   the bare model forward on the same images and grid points, inputs fitted and noised beforehand.
2. bf16 over fp32 extraction: time of ``extract`` with ``precision="bf16"`` vs ``"fp32"``, how far
   the bf16 features move (|bf16 - fp32| / max |fp32| of the cell) and what that does to the
   linear-probe top-1 (best cell, and mean |change| over cells).
   1b. The forward's FLOPs as ``probekit extract`` records them (``torch.utils.flop_counter``) and
   the achieved FLOP/s of the bare forward and of ``extract``, beside a 2048^2 float32 matmul
   measured in the same run; on the CPU, the forward's time split into convolutions (and their
   FLOP rate against the matmul's), attention and the rest, by torch.profiler.
3. The batched ``linear`` grid probe over the scikit-learn ``logreg`` loop on the same cells.
4. ``knn`` over all cells.
5. Cache write and read throughput (MB/s).
6. Peak memory (RSS) of ``probekit extract`` at N and 4N images, and of ``probekit probe`` with and
   without ``--max-memory``.

Sections 1 and 2 interleave their repeats (bare, fp32, bf16, rotating the order) and report
medians, so drift in machine load hits every side alike. With CUDA visible (``--device auto`` or
``cuda``) the bare / fp32 / bf16 extraction timings and the feature change are measured on the GPU
as well; probing, cache and memory measures stay on the CPU.

Usage (defaults take about 11 minutes on a 2-core CPU: extraction timings ~6, the logreg loop ~3.5):
    python experiments/bench.py
    python experiments/bench.py --train 60 --test 30 --timesteps 0,50 --repeats 1   # smoke test
    python experiments/bench.py --model experiments/models/unet-small --random-init
    # sections 1, 2 (~3 min)
    python experiments/bench.py --only-extraction --train 300 --test 100 --timesteps 10,100,400
Writes experiments/results/bench.csv (measure, value, unit, machine, setup) and prints a table; the
machine column names the CPU model and torch's CPU capability, since ratios differ between CPUs.
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from probekit.core.noise import sample_noise, split_seed
from probekit.core.precision import machine_description
from probekit.core.schedule import GridPoint
from probekit.data import ImageDataset, fit_images, load_dataset, stratified_subset
from probekit.features.cache import CacheLayout, CacheWriter, FeatureCache, SplitLabels
from probekit.features.extraction import ExtractConfig, extract, plan_extraction
from probekit.features.group import Cell, cell_infos, load_cells
from probekit.models import load_backbone
from probekit.models.backbone import Backbone
from probekit.probes import CellScore, run_probe
from probekit.probes.run import ProbeRunConfig

# the shipped checkpoint: trained features make the bf16 accuracy change meaningful
DEFAULT_MODEL = "checkpoints/fashion-mnist-ddpm"
DEFAULT_TIMESTEPS = "10,50,100,200,400,700"
DATASET = "fashion-mnist"
MB = 1e6  # throughput in decimal megabytes per second, as disks are rated


@dataclass
class Row:
    section: str
    measure: str
    value: float | int | str
    unit: str
    setup: str


class Report:
    """Rows of the results table; each section's setup text is shared by its rows."""

    def __init__(self) -> None:
        self.rows: list[Row] = []

    def add(self, section: str, setup: str, measure: str, value: float | int | str, unit: str) -> None:
        self.rows.append(Row(section, measure, value, unit, setup))

    def table(self, machine: str) -> pd.DataFrame:
        return pd.DataFrame(
            [
                {"measure": r.measure, "value": r.value, "unit": r.unit, "machine": machine, "setup": r.setup}
                for r in self.rows
            ]
        )

    def print(self, machine: str) -> None:
        print(f"\nmachine: {machine}")
        section = setup = None
        for row in self.rows:
            if row.section != section or row.setup != setup:
                section, setup = row.section, row.setup
                print(f"\n[{section}]  {setup}")
            value = f"{row.value:.4g}" if isinstance(row.value, float) else str(row.value)
            print(f"  {row.measure:<56s} {value:>14s}  {row.unit}")


def resolve_devices(choice: str) -> list[str]:
    """Devices for the extraction sections: always the CPU, plus CUDA when asked for or available."""
    if choice == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda was asked for but no CUDA GPU is visible: use --device cpu or auto")
    if choice == "cpu" or not torch.cuda.is_available():
        return ["cpu"]
    return ["cpu", "cuda"]


def subset(dataset: ImageDataset, n_train: int, n_test: int, seed: int = 0) -> ImageDataset:
    """A copy of ``dataset`` cut to class-stratified train / test subsets (the same ones the CLI's limits pick)."""
    out = copy.copy(dataset)
    out.splits = {
        "train": stratified_subset(dataset.splits["train"], n_train, seed=seed),
        "test": stratified_subset(dataset.splits["test"], n_test, seed=seed),
    }
    return out


def n_images(dataset: ImageDataset) -> int:
    return sum(len(split.labels) for split in dataset.splits.values())


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


# ---------------------------------------------------------------- 1 and 2: extraction timings


def bare_inputs(
    backbone: Backbone, dataset: ImageDataset, config: ExtractConfig
) -> list[tuple[torch.Tensor, GridPoint]]:
    """The noised network inputs extraction would feed, built the same way but ahead of the clock."""
    plan = plan_extraction(backbone, config)
    inputs = []
    for split_name, split in dataset.splits.items():
        seed = split_seed(config.seed, split_name)
        for start in range(0, len(split.labels), config.batch_size):
            x0, _ = fit_images(
                split.read(slice(start, start + config.batch_size)),
                size=backbone.input_size,
                channels=backbone.input_channels,
                value_range=backbone.value_range,
                fit=config.fit,
            )
            x0 = backbone.encode(x0.to(backbone.device))
            ids = split.index[start : start + config.batch_size]
            for point in plan.grid:
                if point.alpha_bar >= 1.0:
                    inputs.append((x0, point))
                    continue
                noise = sample_noise(x0.shape[1:], ids, seed=seed, t=point.t, draw=0, device=x0.device)
                inputs.append((backbone.schedule.add_noise(x0, noise, point), point))
    return inputs


def time_bare(backbone: Backbone, inputs: Sequence[tuple[torch.Tensor, GridPoint]]) -> float:
    device = str(backbone.device)
    _sync(device)
    started = time.perf_counter()
    for x, point in inputs:
        backbone.forward(x, point)
    _sync(device)  # CUDA kernels run asynchronously: stop the clock when they are done
    return time.perf_counter() - started


def time_extract(backbone: Backbone, dataset: ImageDataset, path: Path, config: ExtractConfig) -> float:
    """Seconds of one full ``extract`` into a fresh file (features end on the host, so no sync needed)."""
    path.unlink(missing_ok=True)
    started = time.perf_counter()
    extract(backbone, dataset, path, config, progress=False, overwrite=True)
    return time.perf_counter() - started


def feature_change(fp32_path: Path, bf16_path: Path) -> tuple[float, float]:
    """(max, mean) over cells of |bf16 - fp32| / max |fp32| of the cell, train and test together.

    Scaling by the cell's largest magnitude, not elementwise, keeps near-zero features (common
    after pooling) from blowing the ratio up.
    """
    maxima, means = [], []
    with FeatureCache(fp32_path) as ref, FeatureCache(bf16_path) as low:
        for t, layer in cell_infos(ref):
            a = np.concatenate([ref.features(s, layer, t) for s in ref.splits])
            b = np.concatenate([low.features(s, layer, t) for s in low.splits])
            rel = np.abs(b - a) / max(float(np.abs(a).max()), np.finfo(np.float32).tiny)
            maxima.append(float(rel.max()))
            means.append(float(rel.mean()))
    return max(maxima), float(np.mean(means))


def extraction_section(
    report: Report,
    backbone: Backbone,
    dataset: ImageDataset,
    config: ExtractConfig,
    repeats: int,
    workdir: Path,
    setup: str,
) -> dict[str, Path]:
    """Sections 1 and 2 on the backbone's device; returns the fp32 and bf16 caches of the last repeat."""
    device = str(backbone.device)
    configs = {"fp32": replace(config, precision="fp32"), "bf16": replace(config, precision="bf16")}
    paths = {name: workdir / f"{device}-{name}.h5" for name in configs}
    if device.startswith("cuda"):
        # Warm-up outside the clock: CUDA context, cuDNN algorithm choice and kernels per dtype.
        small = subset(dataset, config.batch_size, config.batch_size)
        time_bare(backbone, bare_inputs(backbone, small, config)[:2])
        for name, cfg in configs.items():
            time_extract(backbone, small, workdir / f"warmup-{name}.h5", cfg)
    inputs = bare_inputs(backbone, dataset, config)
    times: dict[str, list[float]] = {"bare": [], "fp32": [], "bf16": []}
    sides = list(times)
    for repeat in range(repeats):
        # Interleaved, and the order rotated each repeat, so load drift and caching favour no side.
        for side in sides[repeat % 3 :] + sides[: repeat % 3]:
            if side == "bare":
                times[side].append(time_bare(backbone, inputs))
            else:
                times[side].append(time_extract(backbone, dataset, paths[side], configs[side]))
    matmul = matmul_flops(device)
    if not device.startswith("cuda"):  # the profiler's CPU times say nothing about GPU kernels
        forward_breakdown(
            report,
            f"1b forward FLOP/s beside a float32 matmul ({device})",
            setup,
            backbone,
            inputs[: max(1, min(len(inputs), 6))],
            matmul,
        )
    del inputs
    med = {side: statistics.median(values) for side, values in times.items()}
    n_forwards = n_images(dataset) * len(plan_extraction(backbone, config).grid) * config.draws
    timing = f"{setup}; {device}; median of {repeats} interleaved repeats"
    s1, s2 = f"1 extraction over bare forward ({device})", f"2 bf16 over fp32 extraction ({device})"
    report.add(s1, timing + "; bare side: inputs fitted and noised beforehand", "bare forward", med["bare"], "s")
    report.add(s1, timing, "extract fp32", med["fp32"], "s")
    report.add(s1, timing, "extract / bare forward", med["fp32"] / med["bare"], "x")
    report.add(s1, timing, "extraction overhead (extract / bare - 1)", 100 * (med["fp32"] / med["bare"] - 1), "%")
    report.add(s1, timing, "bare forward throughput", n_forwards / med["bare"], "image x grid-point fwd/s")
    report.add(s1, timing, "extract fp32 throughput", n_forwards / med["fp32"], "image x grid-point fwd/s")
    report.add(s2, timing, "extract bf16", med["bf16"], "s")
    report.add(s2, timing, "speed-up bf16 over fp32 (fp32 time / bf16 time)", med["fp32"] / med["bf16"], "x")
    report.add(s2, timing, "extract bf16 throughput", n_forwards / med["bf16"], "image x grid-point fwd/s")
    flops_rows(
        report,
        f"1b forward FLOP/s beside a float32 matmul ({device})",
        timing,
        paths["fp32"],
        n_forwards,
        med["bare"],
        matmul,
    )
    worst, mean = feature_change(paths["fp32"], paths["bf16"])
    change = f"{setup}; {device}; per cell |bf16 - fp32| / max |fp32| of the cell, train + test"
    report.add(s2, change, "max relative feature change (worst cell)", worst, "fraction")
    report.add(s2, change, "mean relative feature change (mean over cells)", mean, "fraction")
    return paths


def matmul_flops(device: str, size: int = 2048, repeats: int = 5) -> float:
    """FLOP/s of a ``size`` x ``size`` float32 matmul on ``device``: median of ``repeats`` after a warm-up."""
    generator = torch.Generator().manual_seed(0)
    a = torch.randn(size, size, generator=generator).to(device)
    b = torch.randn(size, size, generator=generator).to(device)
    times = []
    for _ in range(repeats + 1):
        _sync(device)
        started = time.perf_counter()
        a @ b
        _sync(device)
        times.append(time.perf_counter() - started)
    return 2.0 * size**3 / statistics.median(times[1:])


def forward_breakdown(
    report: Report,
    section: str,
    setup: str,
    backbone: Backbone,
    inputs: Sequence[tuple[torch.Tensor, GridPoint]],
    matmul: float,
) -> None:
    """Where a CPU forward's time goes: convolutions (with their FLOP rate beside the matmul's),
    attention, and the rest (normalisation, activations, copies), from torch.profiler self
    times over ``inputs``, and convolution FLOPs from the counter ``probekit extract`` uses.
    """
    from torch.profiler import ProfilerActivity, profile

    from probekit.features.flops import flop_counter

    with torch.no_grad():
        backbone.forward(*inputs[0])  # warm-up outside the profile
        with flop_counter() as counter:
            for x, point in inputs:
                backbone.forward(x, point)
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for x, point in inputs:
                backbone.forward(x, point)
    self_us = {event.key: event.self_cpu_time_total for event in prof.key_averages()}
    total = sum(self_us.values())
    conv_us = sum(v for k, v in self_us.items() if "convolution" in k)
    attention_us = sum(v for k, v in self_us.items() if "scaled_dot_product" in k or "attention" in k)
    conv_flops = sum(v for k, v in counter.get_flop_counts()["Global"].items() if "convolution" in str(k))
    note = f"{setup}; {len(inputs)} batches under torch.profiler (self CPU time); conv FLOPs by the extract counter"
    report.add(section, note, "convolution share of forward time", 100 * conv_us / total, "%")
    report.add(section, note, "attention share of forward time", 100 * attention_us / total, "%")
    report.add(
        section, note, "other ops share (norms, activations, copies)", 100 * (1 - (conv_us + attention_us) / total), "%"
    )
    if conv_us:
        report.add(section, note, "convolution rate / matmul rate", 100 * conv_flops / (conv_us / 1e6) / matmul, "%")


def flops_rows(
    report: Report, section: str, timing: str, fp32_cache: Path, n_forwards: int, bare_seconds: float, matmul: float
) -> None:
    """The forward's FLOPs as ``probekit extract`` records them, its achieved rate, and ``matmul``'s rate."""
    with FeatureCache(fp32_cache) as cache:
        per_image, achieved = cache.attrs.get("flops_per_image"), cache.attrs.get("achieved_flops")
    note = timing + "; FLOPs by torch.utils.flop_counter (one forward, per image); matmul 2048^2 float32, median of 5"
    report.add(section, note, "float32 matmul 2048^2", matmul / 1e9, "GFLOP/s")
    if per_image is None or achieved is None:
        report.add(section, note, "forward FLOPs", "not recorded by extract", "")
        return
    bare = per_image * n_forwards / bare_seconds
    report.add(section, note, "forward per image and grid point", per_image / 1e9, "GFLOP")
    report.add(section, note, "bare forward rate", bare / 1e9, "GFLOP/s")
    report.add(section, note, "extract fp32 rate (as recorded in the cache, last repeat)", achieved / 1e9, "GFLOP/s")
    report.add(section, note, "bare forward rate / matmul rate", 100 * bare / matmul, "%")
    report.add(section, note, "extract fp32 rate / matmul rate", 100 * achieved / matmul, "%")


# ---------------------------------------------------------------- 2, 3, 4: probes


def load_probe_inputs(path: Path) -> tuple[list[Cell], dict, np.ndarray, dict, np.ndarray, int]:
    with FeatureCache(path) as cache:
        cells = list(cell_infos(cache))
        train, test = load_cells(cache, "train", cells), load_cells(cache, "test", cells)
        return cells, train, cache.labels("train"), test, cache.labels("test"), len(cache.class_names)


def timed_probe(name: str, path: Path) -> tuple[float, dict[Cell, CellScore], list[Cell]]:
    """Seconds and scores of probe ``name`` on every cell of ``path`` (features read before the clock)."""
    cells, train, y_train, test, y_test, n_classes = load_probe_inputs(path)
    config = ProbeRunConfig().probe_config(name, n_classes)
    started = time.perf_counter()
    scores = run_probe(name, train, y_train, test, y_test, config, device="cpu")
    return time.perf_counter() - started, scores, cells


def top1(scores: dict[Cell, CellScore], cells: Sequence[Cell]) -> np.ndarray:
    return np.array([scores[cell].top1 for cell in cells])


def describe_cell(cell: Cell, accuracy: float) -> str:
    return f"t={cell[0]} {cell[1]} ({100 * accuracy:.1f} %)"


def probe_sections(report: Report, paths: dict[str, Path], setup: str) -> None:
    """Sections 2 (probe side), 3 and 4 on the CPU caches."""
    linear_s, linear, cells = timed_probe("linear", paths["fp32"])
    _, linear_bf16, _ = timed_probe("linear", paths["bf16"])
    logreg_s, logreg, _ = timed_probe("logreg", paths["fp32"])
    knn_s, _, _ = timed_probe("knn", paths["fp32"])
    a32, a16, alr = top1(linear, cells), top1(linear_bf16, cells), top1(logreg, cells)

    s2 = "2 bf16 over fp32 extraction (cpu)"
    note = f"{setup}; linear probe (default config) on each cache, {len(cells)} cells"
    report.add(s2, note, "best-cell top-1, fp32 cache", describe_cell(cells[a32.argmax()], a32.max()), "cell")
    report.add(s2, note, "best-cell top-1, bf16 cache", describe_cell(cells[a16.argmax()], a16.max()), "cell")
    report.add(s2, note, "best-cell top-1 change (bf16 - fp32)", 100 * (a16.max() - a32.max()), "points")
    report.add(s2, note, "mean |top-1 change| over cells", 100 * np.abs(a16 - a32).mean(), "points")
    report.add(s2, note, "max |top-1 change| over cells", 100 * np.abs(a16 - a32).max(), "points")

    s3 = "3 linear grid probe over logreg loop (cpu)"
    note = f"{setup}; fp32 cache, {len(cells)} cells, default probe configs, features loaded before the clock"
    report.add(s3, note, "cells probed", len(cells), "cells")
    report.add(s3, note, "linear grid probe", linear_s, "s")
    report.add(s3, note, "logreg loop", logreg_s, "s")
    report.add(s3, note, "speed-up linear over logreg (logreg time / linear time)", logreg_s / linear_s, "x")
    report.add(s3, note, "mean top-1 linear", 100 * a32.mean(), "%")
    report.add(s3, note, "mean top-1 logreg", 100 * alr.mean(), "%")
    report.add(s3, note, "mean |linear - logreg| top-1", 100 * np.abs(a32 - alr).mean(), "points")
    report.add(s3, note, "best cell linear", describe_cell(cells[a32.argmax()], a32.max()), "cell")
    report.add(s3, note, "best cell logreg", describe_cell(cells[alr.argmax()], alr.max()), "cell")

    s4 = "4 kNN (cpu)"
    report.add(s4, f"{setup}; fp32 cache, {len(cells)} cells, k=20", "knn, all cells", knn_s, "s")


# ---------------------------------------------------------------- 5: cache throughput


def layout_of(cache: FeatureCache) -> CacheLayout:
    """The layout of an existing cache, to write a synthetic twin of it."""
    keep = (
        "model_id",
        "model_sha256",
        "framework",
        "schedule",
        "dataset",
        "fit",
        "seed",
        "pooling",
        "precision",
        "value_range",
    )
    attrs = cache.attrs
    return CacheLayout(
        attrs={key: attrs[key] for key in keep if key in attrs},
        grid=cache.grid,
        layers=cache.layers,
        widths={layer.name: cache.width(layer.name) for layer in cache.layers},
        splits={split: SplitLabels(cache.labels(split), cache.index(split)) for split in cache.splits},
        class_names=cache.class_names,
        draws=int(attrs["draws"]),
        dtype=str(attrs["dtype"]),
    )


def time_write(layout: CacheLayout, path: Path, batch_size: int) -> tuple[float, int]:
    """(seconds, feature bytes) of writing every batch of ``layout`` through CacheWriter, as extract does."""
    rng = np.random.default_rng(0)
    # One random batch per layer, made before the clock and reused: HDF5 stores it uncompressed, so
    # the content does not change the cost.
    batch = {
        layer.name: rng.standard_normal((len(layout.grid), layout.draws, batch_size, layout.widths[layer.name])).astype(
            layout.dtype
        )
        for layer in layout.layers
    }
    n_bytes = sum(
        len(layout.grid) * layout.draws * len(split.labels) * layout.widths[name] * np.dtype(layout.dtype).itemsize
        for split in layout.splits.values()
        for name in layout.widths
    )
    path.unlink(missing_ok=True)
    started = time.perf_counter()
    writer = CacheWriter(path, layout)
    for split_name, split in layout.splits.items():
        for start in range(0, len(split.labels), batch_size):
            b = min(batch_size, len(split.labels) - start)
            writer.write_batch(split_name, start, {name: values[:, :, :b] for name, values in batch.items()})
    writer.close(complete=True)
    return time.perf_counter() - started, n_bytes


def drop_from_page_cache(path: Path) -> bool:
    """Flush ``path`` and ask the kernel to forget its pages, so the next read comes from disk."""
    if not hasattr(os, "posix_fadvise"):
        return False
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)
    return True


def time_read(path: Path) -> tuple[float, int, bool]:
    """(seconds, bytes, dropped) of FeatureCache.features over every cell of every split, file reopened."""
    dropped = drop_from_page_cache(path)
    n_bytes = 0
    started = time.perf_counter()
    with FeatureCache(path) as cache:
        for split in cache.splits:
            for t, layer in cell_infos(cache):
                n_bytes += cache.features(split, layer, t).nbytes
    return time.perf_counter() - started, n_bytes, dropped


def cache_section(report: Report, fp32_path: Path, workdir: Path, batch_size: int, repeats: int, setup: str) -> None:
    with FeatureCache(fp32_path) as cache:
        layout = layout_of(cache)
    writes = [time_write(layout, workdir / "synthetic.h5", batch_size) for _ in range(repeats)]
    (workdir / "synthetic.h5").unlink(missing_ok=True)
    reads = [time_read(fp32_path) for _ in range(repeats)]
    write_s, write_bytes = statistics.median(w[0] for w in writes), writes[0][1]
    read_s, read_bytes = statistics.median(r[0] for r in reads), reads[0][1]
    s5 = "5 cache throughput"
    size = f"{write_bytes / MB:.1f} MB of {layout.dtype} features, median of {repeats}"
    report.add(
        s5,
        f"{setup}; CacheWriter timed directly on synthetic arrays of the fp32 cache's layout, batch "
        f"{batch_size}, file creation to close, no fsync (page cache); {size}",
        "cache write",
        write_bytes / MB / write_s,
        "MB/s",
    )
    cold = "fsync + POSIX_FADV_DONTNEED before each pass (cold)" if reads[0][2] else "page cache not dropped (warm)"
    report.add(
        s5,
        f"{setup}; FeatureCache.features over every cell of both splits, file reopened, {cold}; "
        f"{read_bytes / MB:.1f} MB float32, median of {repeats}",
        "cache read",
        read_bytes / MB / read_s,
        "MB/s",
    )


# ---------------------------------------------------------------- 6: peak memory


# Runs ``python -m probekit ARGS`` and writes the process's own peak RSS (MiB) to the file named
# first. Measured from inside because a child's ru_maxrss (os.wait4, RUSAGE_CHILDREN) starts at the
# parent's RSS when forked: the kernel carries the pre-exec high-water mark across exec, so every
# child of this benchmark would read at least the benchmark's own peak. VmHWM is the high-water
# mark of the exec'd image only; ru_maxrss is the fallback where /proc is missing.
_PEAK_RSS_CHILD = """
import resource, runpy, sys

def peak_mib():
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024

report, sys.argv = sys.argv[1], ["probekit"] + sys.argv[2:]
code = 0
try:
    runpy.run_module("probekit", run_name="__main__", alter_sys=True)
except SystemExit as done:
    code = done.code
finally:
    with open(report, "w") as out:
        out.write(repr(peak_mib()))
sys.exit(code)
"""


def peak_rss_mib(probekit_args: list[str], log_path: Path) -> float:
    """Peak RSS (MiB) of a child process running ``python -m probekit *probekit_args``."""
    report = log_path.with_suffix(".rss")
    with open(log_path, "w") as log:
        done = subprocess.run(
            [sys.executable, "-c", _PEAK_RSS_CHILD, str(report), *probekit_args], stdout=log, stderr=subprocess.STDOUT
        )
    if done.returncode != 0:
        tail = "\n".join(log_path.read_text().splitlines()[-15:])
        raise RuntimeError(f"probekit {' '.join(probekit_args)} failed with exit code {done.returncode}:\n{tail}")
    return float(report.read_text())


def model_args(model: str, random_init: bool) -> list[str]:
    return ["--model", model] + (["--random-init"] if random_init else [])


def memory_section(
    report: Report,
    args: argparse.Namespace,
    fp32_path: Path,
    workdir: Path,
    setup: str,
) -> None:
    t = args.timesteps[0]
    # One grid point keeps the 4N run short; per-batch memory is what extraction holds, whatever N is.
    rss = {}
    for scale in (1, 4):
        out = workdir / f"memory-{scale}n.h5"
        rss[scale] = peak_rss_mib(
            [
                "extract",
                *model_args(args.model, args.random_init),
                "--data",
                DATASET,
                "--no-download",
                "--timesteps",
                str(t),
                "--train-limit",
                str(scale * args.train),
                "--test-limit",
                str(scale * args.test),
                "--batch-size",
                str(args.batch_size),
                "--device",
                "cpu",
                "--out",
                str(out),
                "--quiet",
                "--overwrite",
            ],
            workdir / f"memory-{scale}n.log",
        )
        out.unlink(missing_ok=True)
    n = args.train + args.test
    s6 = "6 peak memory (RSS)"
    note = (
        f"`probekit extract` subprocess, t={t} only, all layers, batch {args.batch_size}, cpu; "
        f"peak RSS (VmHWM) reported by the child"
    )
    report.add(s6, note, f"extract, N = {n} images", rss[1], "MiB")
    report.add(s6, note, f"extract, 4N = {4 * n} images", rss[4], "MiB")
    report.add(s6, note, "extract peak RSS 4N / N", rss[4] / rss[1], "x")

    with FeatureCache(fp32_path) as cache:
        cells = list(cell_infos(cache))
        n_all = sum(len(cache.labels(split)) for split in cache.splits)
        cell_bytes = [4 * cache.width(layer) * n_all for _, layer in cells]
    total = sum(cell_bytes)
    # A quarter of the features (about eight groups of cells), but never below what one cell needs.
    budget = max(total // 4, 2 * max(cell_bytes))
    base = ["probe", "--cache", str(fp32_path), "--probes", "linear", "--device", "cpu", "--quiet"]
    probe_rss = {
        "default": peak_rss_mib(base + ["--out", str(workdir / "probe-a.csv")], workdir / "probe-a.log"),
        "budget": peak_rss_mib(
            base + ["--out", str(workdir / "probe-b.csv"), "--max-memory", str(budget)], workdir / "probe-b.log"
        ),
    }
    note = (
        f"{setup}; `probekit probe --probes linear` subprocess on the fp32 cache ({total / 2**20:.1f} MiB of float32 "
        f"features, {len(cells)} cells); peak RSS (VmHWM) reported by the child"
    )
    report.add(s6, note, "probe, default --max-memory (auto: half of RAM)", probe_rss["default"], "MiB")
    report.add(s6, note, f"probe, --max-memory {budget / 2**20:.1f} MiB", probe_rss["budget"], "MiB")
    report.add(s6, note, "probe peak RSS saved by --max-memory", probe_rss["default"] - probe_rss["budget"], "MiB")


# ---------------------------------------------------------------- main


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=DEFAULT_MODEL, help=f"model folder (default {DEFAULT_MODEL})")
    parser.add_argument(
        "--random-init",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="random weights of the same architecture (for a folder holding a config only)",
    )
    parser.add_argument("--train", type=int, default=1000, help="train images (class-stratified subset)")
    parser.add_argument("--test", type=int, default=500, help="test images (class-stratified subset)")
    parser.add_argument(
        "--timesteps",
        default=DEFAULT_TIMESTEPS,
        type=lambda text: [int(item) for item in text.split(",") if item.strip()],
        help=f"comma-separated timestep indices (default {DEFAULT_TIMESTEPS})",
    )
    parser.add_argument("--batch-size", type=int, default=64)
    # Two keep the default run near 10 minutes on 2 CPU cores; a third adds about 3.
    parser.add_argument("--repeats", type=int, default=2, help="interleaved repeats of each timing (median reported)")
    parser.add_argument(
        "--device",
        default="auto",
        choices=["auto", "cpu", "cuda"],
        help="auto: also time extraction on CUDA when a GPU is visible; cpu: CPU only",
    )
    parser.add_argument(
        "--only-extraction",
        action="store_true",
        help="sections 1 and 2 only (extraction, FLOP/s, bf16), skipping probes, cache and memory",
    )
    parser.add_argument("--out", default="experiments/results/bench.csv")
    args = parser.parse_args(argv)
    if args.repeats < 1 or args.train < 1 or args.test < 1 or not args.timesteps:
        parser.error("--repeats, --train and --test must be positive and --timesteps non-empty")
    return args


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    started = time.perf_counter()
    devices = resolve_devices(args.device)
    machine = machine_description()
    dataset = subset(load_dataset(DATASET), args.train, args.test)
    config = ExtractConfig(timesteps=args.timesteps, batch_size=args.batch_size)
    report = Report()

    with tempfile.TemporaryDirectory(prefix="probekit-bench-") as tmp:
        workdir = Path(tmp)
        caches: dict[str, dict[str, Path]] = {}
        setup = ""
        for device in devices:
            backbone = load_backbone(args.model, random_init=args.random_init, device=device)
            n_layers = len(plan_extraction(backbone, config).layers)
            setup = (
                f"{args.model}{' random init' if args.random_init else ''}, {DATASET} {args.train}/{args.test}, "
                f"t={','.join(map(str, args.timesteps))}, all {n_layers} layers, batch {args.batch_size}"
            )
            print(f"extraction timings on {device} ...", flush=True)
            caches[device] = extraction_section(report, backbone, dataset, config, args.repeats, workdir, setup)
            del backbone
        cpu = caches["cpu"]
        if not args.only_extraction:
            print("probes ...", flush=True)
            probe_sections(report, cpu, setup)
            print("cache throughput ...", flush=True)
            cache_section(report, cpu["fp32"], workdir, args.batch_size, args.repeats, setup)
            print("peak memory ...", flush=True)
            memory_section(report, args, cpu["fp32"], workdir, setup)

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    report.table(machine).to_csv(out, index=False)
    report.print(machine)
    print(f"\nwrote {out} in {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
