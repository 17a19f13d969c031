"""kNN at full scale: the kNN path against the bare similarity products it cannot avoid, in one run.

1. Bare float32 products: for every cell, unit-row query blocks times the unit-row train bank
   (normalised once per cell; the same block size, batched product and threads as the kNN path).
   Nothing else. Then the same products followed by ``topk(max k + 1)`` per block.
2. ``knn_sweep`` over the same cells, k in ``--ks`` and two temperatures, float32 similarities:
   its time over the bare products alone and over products + top-k, per round and as the median
   of the per-round ratios. It also normalises rows, orders ties, votes and moves predictions to
   numpy.
3. ``knn_sweep`` with the device's native low precision (bf16/fp16 candidates + exact float32
   re-rank), when it has one, on the first cell: its time over the float32 path on that cell, how
   many predictions differ, and what ``similarity="auto"`` chose by its own measurement.
4. The sweep over three separate single-k runs (float32).
5. Selection alternatives, on one block of 1 024 queries x ``--train`` unit rows: the product in
   blocks of 1 024 and of 64 queries (a similarity block that stays in L2), ``topk(max k + 1)``,
   NumPy's ``argpartition``, and a two-level selection (strided segment maxima, a top-k over them,
   a top-k over the chosen segments' columns; exact, same values as ``topk``).
6. Centring (``centre=True``) on real features: kNN top-1 of every cell of a cache extracted from
   the shipped checkpoint (or ``--cache``), with and without centring.

Sections 1-4 use random Gaussian features (only the sizes matter for time) and interleave their
repeats (rotating the order each round), reporting medians, so drift in machine load hits every
side alike. The load average before and after the timed rounds goes into the setup column.

Usage (defaults: 6 cells of 20000 train x 5000 queries x 128, about 4 minutes on a 2-core CPU):
    python experiments/bench_knn.py --sections speed                 # 1-4
    python experiments/bench_knn.py --sections selection --train 60000   # 5 (under a minute)
    python experiments/bench_knn.py --sections centring              # 6 (about 2 minutes, mostly extraction)
    python experiments/bench_knn.py --cells 2 --train 4000 --queries 1000 --repeats 1 --sections speed   # smoke test
    python experiments/bench_knn.py --sections speed --bound-only --cells 2 --train 60000 --queries 5000 --repeats 3
        # only the kNN against its bare products (sections 1-2), about a minute on a 2-core CPU
Writes experiments/results/bench_knn_<sections>.csv (measure, value, unit, machine, setup) and prints a table;
the machine column names the CPU model and torch's CPU capability.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from probekit.core.precision import machine_description, native_precisions
from probekit.probes.knn import knn_similarity_precision, knn_sweep

TEMPERATURES = (0.07, 0.2)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.no_grad()
def bare_products(train: dict, queries: dict, k: int | None, chunk: int, device: torch.device) -> None:
    """Unit-row products of every cell (the floor under any exact cosine kNN), then ``topk(k)`` of
    each block when ``k`` is given. The product is batched over one cell, as in ``knn_sweep``.
    """
    for key, bank in train.items():
        bank_t = F.normalize(torch.from_numpy(bank).to(device), dim=1)[None].transpose(1, 2)
        q_all = F.normalize(torch.from_numpy(queries[key]).to(device), dim=1)[None]
        for start in range(0, q_all.shape[1], chunk):
            sim = torch.bmm(q_all[:, start : start + chunk], bank_t)
            if k is not None:
                sim.topk(k, dim=2)
    _sync(device)


def load_average() -> str:
    return "/".join(f"{value:.1f}" for value in os.getloadavg())


def timed(fn: Callable[[], object]) -> tuple[float, object]:
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def speed_sections(args: argparse.Namespace, rows: list[dict], device: torch.device) -> None:
    rng = np.random.default_rng(0)
    train = {i: rng.standard_normal((args.train, args.width), dtype=np.float32) for i in range(args.cells)}
    queries = {i: rng.standard_normal((args.queries, args.width), dtype=np.float32) for i in range(args.cells)}
    y_train = rng.integers(0, 10, args.train)
    ks = args.ks
    native = sorted(native_precisions(device))
    low = native[0] if native else None  # bf16 sorts before fp16, the order auto tries them
    auto = knn_similarity_precision("auto", device, max(ks))
    load_before = load_average()

    def sweep(similarity: str, which_ks: Sequence[int]) -> dict:
        return knn_sweep(
            train,
            y_train,
            {"test": queries},
            which_ks,
            TEMPERATURES,
            device=device,
            chunk_size=args.chunk,
            similarity=similarity,
        )

    top = min(max(ks) + 1, args.train)  # knn_sweep keeps one neighbour beyond k to see ties
    sides: dict[str, Callable[[], object]] = {
        "matmuls": lambda: bare_products(train, queries, None, args.chunk, device),
        "bare": lambda: bare_products(train, queries, top, args.chunk, device),
        "sweep fp32": lambda: sweep("fp32", ks),
    }
    if not args.bound_only:
        sides["separate fp32"] = lambda: [sweep("fp32", [k]) for k in ks]
    if low is not None and not args.bound_only:
        # Low precision on the first cell only, beside float32 on the same cell (it is the slow side here).
        first = {0: train[0]}, {"test": {0: queries[0]}}
        sides[f"1 cell {low}"] = lambda: knn_sweep(
            first[0], y_train, first[1], ks, TEMPERATURES, device=device, chunk_size=args.chunk, similarity=low
        )
        sides["1 cell fp32"] = lambda: knn_sweep(
            first[0], y_train, first[1], ks, TEMPERATURES, device=device, chunk_size=args.chunk, similarity="fp32"
        )
    times: dict[str, list[float]] = {name: [] for name in sides}
    outputs: dict[str, object] = {}
    for repeat in range(args.repeats):
        names = list(sides)
        names = names[repeat % len(names) :] + names[: repeat % len(names)]  # rotate the order
        for name in names:
            elapsed, outputs[name] = timed(sides[name])
            times[name].append(elapsed)
            print(f"  repeat {repeat}: {name} {elapsed:.2f} s", file=sys.stderr)
        print(
            f"  repeat {repeat}: knn / matmuls {times['sweep fp32'][-1] / times['matmuls'][-1]:.3f}, "
            f"knn / matmuls + topk {times['sweep fp32'][-1] / times['bare'][-1]:.3f}",
            file=sys.stderr,
        )
    med = {name: statistics.median(values) for name, values in times.items()}
    setup = (
        f"{args.cells} cells of {args.train} train x {args.queries} queries x {args.width}, k={ks}, "
        f"T={list(TEMPERATURES)}, blocks of {args.chunk} queries; {device.type}; "
        f"median of {args.repeats} interleaved repeats; auto similarity chose {auto or 'float32'}; "
        f"load average (1/5/15 min) {load_before} before, {load_average()} after"
    )

    def ratio(a: str, b: str) -> float:
        return statistics.median(x / y for x, y in zip(times[a], times[b]))

    def add(measure: str, value: float, unit: str) -> None:
        rows.append({"measure": measure, "value": value, "unit": unit, "setup": setup})

    flops = 2.0 * args.cells * args.train * args.queries * args.width
    add("bare fp32 products alone", med["matmuls"], "s")
    add("bare fp32 product rate", flops / med["matmuls"] / 1e9, "GFLOP/s")
    add(f"bare fp32 products + topk({top})", med["bare"], "s")
    add("knn sweep fp32", med["sweep fp32"], "s")
    add("knn sweep fp32 / bare products alone", ratio("sweep fp32", "matmuls"), "x")
    add("bare products + topk / bare products alone", ratio("bare", "matmuls"), "x")
    add("knn sweep fp32 / bare products + topk", ratio("sweep fp32", "bare"), "x")
    if args.bound_only:
        return
    if low is not None:
        add(f"one cell: {low} candidates + fp32 re-rank", med[f"1 cell {low}"], "s")
        add(f"one cell: {low} path / fp32 path", med[f"1 cell {low}"] / med["1 cell fp32"], "x")
        exact, approx = outputs["1 cell fp32"], outputs[f"1 cell {low}"]
        differ = sum(int((exact[kt][c]["test"] != approx[kt][c]["test"]).sum()) for kt in exact for c in exact[kt])
        add(f"one cell: predictions that differ, {low} vs fp32", differ, "count")
    add(f"{len(ks)} separate runs fp32", med["separate fp32"], "s")
    add(f"{len(ks)} separate runs / one sweep", med["separate fp32"] / med["sweep fp32"], "x")
    separate = {kt: cells for run in outputs["separate fp32"] for kt, cells in run.items()}
    same = all(
        np.array_equal(separate[kt][c]["test"], outputs["sweep fp32"][kt][c]["test"])
        for kt in separate
        for c in separate[kt]
    )
    add("sweep predictions equal separate runs", int(same), "bool")


@torch.no_grad()
def two_level_topk(sim: torch.Tensor, m: int) -> torch.Tensor:
    """The m largest values of each row via strided segment maxima (values only; exact)."""
    n = sim.shape[1]
    seg = max(2, round((n / m) ** 0.5))
    n_seg = n // seg
    body = n_seg * seg
    seg_max = sim[:, :body].unflatten(1, (seg, n_seg)).amax(dim=1)  # segment j: columns j, j + n_seg, ...
    best = seg_max.topk(m, dim=1).indices  # every top-m value lies in these segments or the tail
    columns = (best[..., None] + torch.arange(0, body, n_seg)).flatten(1)
    candidates = torch.cat([sim.gather(1, columns), sim[:, body:]], dim=1)
    return candidates.topk(m, dim=1).values


@torch.no_grad()
def selection_section(args: argparse.Namespace, rows: list[dict]) -> None:
    """Per-block costs of the product and of ways to select the top m, alternated over rounds."""
    gen = torch.Generator().manual_seed(0)
    bank = F.normalize(torch.randn(args.train, args.width, generator=gen), dim=1)
    q = F.normalize(torch.randn(1024, args.width, generator=gen), dim=1)
    m = min(max(args.ks) + 1, args.train)
    sim = q @ bank.T
    exact = sim.topk(m, dim=1).values
    if not torch.equal(two_level_topk(sim, m), exact):
        raise SystemExit("two-level selection disagrees with topk")
    sides: dict[str, Callable[[], object]] = {
        "product, one block of 1024 queries": lambda: q @ bank.T,
        "product, 16 blocks of 64 queries": lambda: [q[i : i + 64] @ bank.T for i in range(0, 1024, 64)],
        f"topk({m}) of the block": lambda: sim.topk(m, dim=1),
        f"two-level selection of {m}": lambda: two_level_topk(sim, m),
        f"numpy argpartition({m}) of the block": lambda: np.argpartition(sim.numpy(), -m, axis=1),
    }
    times: dict[str, list[float]] = {name: [] for name in sides}
    for _ in range(args.repeats):
        for name, fn in sides.items():
            times[name].append(timed(fn)[0])
    setup = (
        f"one block of 1024 queries x {args.train} train x {args.width}; median of {args.repeats} "
        f"alternated rounds; load average {load_average()} after"
    )
    for name, values in times.items():
        rows.append({"measure": name, "value": 1e3 * statistics.median(values), "unit": "ms", "setup": setup})


def centring_section(args: argparse.Namespace, rows: list[dict], device: torch.device) -> None:
    """KNN top-1 per cell of a real cache, centred and not."""
    from probekit.features.cache import FeatureCache

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(args.cache) if args.cache else extract_small_cache(Path(tmp) / "feats.h5")
        with FeatureCache(path) as cache:
            y_train, y_test = cache.labels("train"), cache.labels("test")
            cells = [(t, layer.name) for t in cache.timesteps for layer in cache.layers]
            train = {c: np.asarray(cache.features("train", c[1], c[0]), dtype=np.float32) for c in cells}
            test = {c: np.asarray(cache.features("test", c[1], c[0]), dtype=np.float32) for c in cells}
            what = (
                f"{path.name if args.cache else 'shipped checkpoint'}: {len(cells)} cells, "
                f"{len(y_train)}/{len(y_test)} images"
            )
    accuracy = {}
    for centre in (False, True):
        predictions = knn_sweep(train, y_train, {"test": test}, [20], [0.07], centre=centre, device=device)[(20, 0.07)]
        accuracy[centre] = np.array([np.mean(predictions[c]["test"] == y_test) for c in cells])
    change = 100 * (accuracy[True] - accuracy[False])
    setup = f"{what}; k=20, T=0.07; top-1 in points"
    best = int(np.argmax(accuracy[False]))
    for measure, value in [
        ("kNN top-1, best cell, raw cosine", 100 * accuracy[False][best]),
        ("kNN top-1, same cell, centred", 100 * accuracy[True][best]),
        ("kNN top-1, best centred cell", 100 * accuracy[True].max()),
        ("mean change over cells (centred - raw)", change.mean()),
        ("cells improved / worsened by > 0.5 point", f"{int((change > 0.5).sum())} / {int((change < -0.5).sum())}"),
    ]:
        rows.append(
            {
                "measure": measure,
                "value": value,
                "unit": "points" if not isinstance(value, str) else "cells",
                "setup": setup,
            }
        )


def extract_small_cache(out: Path) -> Path:
    from probekit.data import load_dataset, stratified_subset
    from probekit.features.extraction import ExtractConfig, extract
    from probekit.models import load_backbone

    backbone = load_backbone("checkpoints/fashion-mnist-ddpm", device=torch.device("cpu"))
    dataset = load_dataset("fashion-mnist", download=False, seed=0)
    dataset.splits["train"] = stratified_subset(dataset.splits["train"], 1000, seed=0)
    dataset.splits["test"] = stratified_subset(dataset.splits["test"], 500, seed=0)
    return extract(backbone, dataset, out, ExtractConfig(timesteps=[10, 100], precision="fp32"), progress=False)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", type=int, default=6)
    parser.add_argument("--train", type=int, default=20000)
    parser.add_argument("--queries", type=int, default=5000)
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--ks", type=lambda s: [int(v) for v in s.split(",")], default=[10, 20, 200])
    parser.add_argument("--chunk", type=int, default=1024)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument(
        "--bound-only", action="store_true", help="speed: only the kNN against its bare products (no sections 3-4)"
    )
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--cache", help="a feature cache for the centring section (default: extract a small one)")
    parser.add_argument("--sections", default="speed,centring", help="speed (1-4), selection (5), centring (6)")
    parser.add_argument("--out", help="CSV to write (default experiments/results/bench_knn_<sections>.csv)")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    machine = machine_description()
    rows: list[dict] = []
    sections = [name.strip() for name in args.sections.split(",")]
    if "speed" in sections:
        speed_sections(args, rows, device)
    if "selection" in sections:
        selection_section(args, rows)
    if "centring" in sections:
        centring_section(args, rows, device)
    args.out = args.out or f"experiments/results/bench_knn_{'_'.join(sections)}.csv"
    table = pd.DataFrame(rows)
    table.insert(3, "machine", machine)
    table.to_csv(args.out, index=False)
    print(f"\nmachine: {machine}")
    for setup, group in table.groupby("setup", sort=False):
        print(f"\n[{setup}]")
        for row in group.itertuples():
            value = f"{row.value:.4g}" if isinstance(row.value, float) else str(row.value)
            print(f"  {row.measure:<48s} {value:>10s}  {row.unit}")
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
