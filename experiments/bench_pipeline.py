r"""Host pipeline benchmark on a folder of ImageNet-like JPEGs that the script writes.

The folder: ``--images`` JPEGs (quality 90) of mixed sizes around ImageNet's typical 500 x 375
(landscape and portrait, 400-600 x 300-450 px), smooth colour fields with texture so they decode
like photographs, in 10 class folders, train/ and test/.

1. Host rate: batches decoded, resized (shorter side to ``--size``, centre crop) and converted
   to the model's float input by :func:`probekit.features.host_pipeline.host_batches`, serially in the
   main process (``--workers 0``, one torch thread) and with 2 workers; and, as the machine's own
   ceiling, two independent processes started together, each running the serial loop over half
   the batches (no queue, no pipeline: what two cores give this work on this machine at this
   minute). The three alternate ``--repeats`` times; medians are compared, and the CPU seconds
   per image (the main process's plus its children's) show whether a
   slowdown comes from the pipeline (more CPU per image than serial with one worker) or from the
   machine (more CPU per image whenever both cores are busy, pipeline or not).
2. Overlap, with a real network (a random diffusers UNet2DModel at ``--size`` px, ``--width``
   channels): extraction wall time with 1 worker (host on one core, the forward on the other,
   one torch thread) against host alone (1 worker, no forward) and forward alone (the same
   pixels held in memory at the model's size: no decoding). Perfect overlap takes
   max(host, forward); the report gives the ratio.

    python experiments/bench_pipeline.py --images 2400 --size 64 --width 8 --repeats 7 \
        --out experiments/results/bench_pipeline.csv
"""

from __future__ import annotations

import argparse
import csv
import json
import multiprocessing
import os
import resource
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image


def write_jpegs(root: Path, count: int, seed: int = 0) -> None:
    """``count`` JPEGs in root/{train,test}/class{k}/ (5 of 6 in train), ImageNet-like sizes."""
    rng = np.random.default_rng(seed)
    for i in range(count):
        split = "test" if i % 6 == 5 else "train"
        folder = root / split / f"class{i % 10}"
        folder.mkdir(parents=True, exist_ok=True)
        long_side, short_side = int(rng.integers(400, 601)), int(rng.integers(300, 451))
        width, height = (long_side, short_side) if rng.random() < 0.75 else (short_side, long_side)
        yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
        phase = rng.uniform(0, 2 * np.pi, 3)
        field = np.stack([np.sin(xx / rng.uniform(20, 80) + yy / rng.uniform(20, 80) + p) for p in phase], axis=-1)
        pixels = 128 + 80 * field + rng.normal(0, 12, (height, width, 3))
        Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(folder / f"{i:06d}.jpg", quality=90)


def _cpu_seconds() -> tuple[float, float]:
    """(this process, its reaped children): user + system CPU seconds so far."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime, children.ru_utime + children.ru_stime


def _run_batches(split, convert, bounds, workers: int) -> None:
    from probekit.features.host_pipeline import host_batches

    for _ in host_batches(
        split, bounds, 1, seed=0, split_name="train", convert=convert, device=torch.device("cpu"), workers=workers
    ):
        pass


def _bounds(count: int, batch: int) -> list[tuple[int, int]]:
    return [(start, min(start + batch, count)) for start in range(0, count, batch)]


def host_rate(split, convert, batch: int, workers: int) -> tuple[float, float]:
    """(images per second, CPU ms per image) through the host pipeline alone (decode, resize, convert)."""
    cpu_before = sum(_cpu_seconds())
    started = time.perf_counter()
    _run_batches(split, convert, _bounds(len(split), batch), workers)
    elapsed = time.perf_counter() - started
    return len(split) / elapsed, 1000 * (sum(_cpu_seconds()) - cpu_before) / len(split)


def _half_worker(split, convert, bounds, barrier, results) -> None:
    barrier.wait()
    started = time.perf_counter()
    _run_batches(split, convert, bounds, 0)
    results.put(time.perf_counter() - started)


def pair_rate(split, convert, batch: int) -> tuple[float, float]:
    """(images per second, CPU ms per image) of two independent forked processes, each running
    the serial loop over alternate batches, timed from a common start to the slower one's end.
    """
    context = multiprocessing.get_context("fork")  # as the loader's workers start
    barrier, results = context.Barrier(2), context.SimpleQueue()
    bounds = _bounds(len(split), batch)
    cpu_before = sum(_cpu_seconds())
    processes = [
        context.Process(target=_half_worker, args=(split, convert, bounds[half::2], barrier, results))
        for half in (0, 1)
    ]
    for process in processes:
        process.start()
    elapsed = max(results.get() for _ in processes)
    for process in processes:
        process.join()
    return len(split) / elapsed, 1000 * (sum(_cpu_seconds()) - cpu_before) / len(split)


def worker_costs(split, convert, batch: int, repeats: int = 5) -> tuple[float, float]:
    """(ms to start and stop 2 workers, main-process CPU seconds over one whole 2-worker run).

    Start and stop: a 2-worker run over two one-image batches minus the serial run of the same
    (medians over ``repeats``): what a split pays once, whatever its size.
    """

    def tiny_run(workers: int) -> float:
        started = time.perf_counter()
        _run_batches(split, convert, [(0, 1), (1, 2)], workers)
        return time.perf_counter() - started

    start_stop = float(np.median([tiny_run(2) - tiny_run(0) for _ in range(repeats)]))
    main_before = _cpu_seconds()[0]
    _run_batches(split, convert, _bounds(len(split), batch), 2)
    return 1000 * start_stop, _cpu_seconds()[0] - main_before


def build_model(folder: Path, size: int, width: int) -> Path:
    from diffusers import UNet2DModel

    torch.manual_seed(0)
    UNet2DModel(
        sample_size=size,
        in_channels=3,
        out_channels=3,
        block_out_channels=(width, 2 * width),
        layers_per_block=1,
        down_block_types=("DownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "UpBlock2D"),
        norm_num_groups=8,
    ).save_pretrained(folder)
    (folder / "scheduler_config.json").write_text(
        json.dumps({"_class_name": "DDPMScheduler", "num_train_timesteps": 1000})
    )
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=300)
    parser.add_argument(
        "--size", type=int, default=64, help="side the images are brought to (and the model's input side)"
    )
    parser.add_argument("--width", type=int, default=32, help="channels of the benchmark UNet's first stage")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--folder", type=Path, help="where to write (or find) the JPEGs (default: a temporary folder)")
    parser.add_argument("--out", type=Path, help="CSV of the measurements")
    parser.add_argument("--skip-overlap", action="store_true", help="only the host rate")
    parser.add_argument("--repeats", type=int, default=5, help="alternating serial / 2-worker runs; medians compared")
    args = parser.parse_args()

    from probekit.core.precision import machine_description
    from probekit.data import load_dataset
    from probekit.data.base import ImageDataset, ImageSplit
    from probekit.features.extraction import ExtractConfig, extract
    from probekit.features.host_pipeline import Converter
    from probekit.models import load_backbone

    torch.set_num_threads(1)  # per-core numbers: one torch thread in the main process (workers use one each)
    with tempfile.TemporaryDirectory() as work:
        work = Path(work)
        folder = args.folder or work / "jpegs"
        if not (folder / "train").is_dir():
            write_jpegs(folder, args.images)
        dataset = load_dataset(str(folder))
        split = dataset.splits["train"].at_size(args.size)
        convert = Converter((args.size, args.size), 3, (-1.0, 1.0), "auto")
        print(machine_description())
        print(f"load average before: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
        host_rate(split, convert, args.batch_size, 0)  # warm the page cache and the decoder
        # The three run in turn and medians are compared: a shared machine's speed drifts between
        # runs by more than the effect measured.
        runs: dict[str, list[tuple[float, float]]] = {"serial": [], "2 workers": [], "2 processes": []}
        for _ in range(args.repeats):
            runs["serial"].append(host_rate(split, convert, args.batch_size, 0))
            runs["2 workers"].append(host_rate(split, convert, args.batch_size, 2))
            runs["2 processes"].append(pair_rate(split, convert, args.batch_size))
        rate = {name: float(np.median([r for r, _ in measured])) for name, measured in runs.items()}
        cpu = {name: float(np.median([c for _, c in measured])) for name, measured in runs.items()}
        for name, measured in runs.items():
            print(
                f"{name:>11}: "
                + ", ".join(f"{r:.0f}" for r, _ in measured)
                + " images/s; CPU "
                + ", ".join(f"{c:.2f}" for _, c in measured)
                + " ms per image"
            )
        start_stop_ms, main_cpu_s = worker_costs(split, convert, args.batch_size)
        serial, parallel, ceiling = rate["serial"], rate["2 workers"], rate["2 processes"]
        paired = [w / s for (s, _), (w, _) in zip(runs["serial"], runs["2 workers"], strict=True)]
        rows = [
            {"measure": "host_serial_images_per_s", "value": serial},
            {"measure": "host_2_workers_images_per_s", "value": parallel},
            {"measure": "host_2_processes_images_per_s", "value": ceiling},
            {"measure": "host_speedup_2_workers", "value": parallel / serial},
            {"measure": "host_speedup_2_workers_paired_median", "value": float(np.median(paired))},
            {"measure": "host_speedup_2_processes", "value": ceiling / serial},
            {"measure": "host_2_workers_over_2_processes", "value": parallel / ceiling},
            {"measure": "host_ms_per_image_per_core", "value": 1000 / serial},
            {"measure": "cpu_ms_per_image_serial", "value": cpu["serial"]},
            {"measure": "cpu_ms_per_image_2_workers", "value": cpu["2 workers"]},
            {"measure": "cpu_ms_per_image_2_processes", "value": cpu["2 processes"]},
            {"measure": "workers_start_stop_ms", "value": start_stop_ms},
            {"measure": "main_process_cpu_s_per_2_worker_run", "value": main_cpu_s},
        ]
        print(
            f"host, {len(split)} JPEGs to {args.size} px (medians of {args.repeats}): serial {serial:.1f} images/s, "
            f"2 workers {parallel:.1f} ({parallel / serial:.2f}x; per run {', '.join(f'{r:.2f}' for r in paired)}), "
            f"2 independent processes {ceiling:.1f} ({ceiling / serial:.2f}x): the pipeline gives "
            f"{parallel / ceiling:.0%} of what this machine gives two processes; host cost {1000 / serial:.2f} ms "
            "per image per core"
        )
        print(
            f"2 workers start and stop in {start_stop_ms:.0f} ms; the main process used {main_cpu_s:.2f} s of CPU "
            "in a whole 2-worker run"
        )
        if not args.skip_overlap:
            backbone = load_backbone(str(build_model(work / "model", args.size, args.width)))
            config = {"timesteps": [100], "batch_size": args.batch_size, "image_size": args.size, "splits": ("train",)}
            one_worker_rate, one_worker_cpu = host_rate(split, convert, args.batch_size, 1)
            host_alone = len(split) / one_worker_rate
            pixels = split.read(slice(None))
            in_memory = ImageDataset(
                "memory",
                {
                    "train": ImageSplit(pixels, split.labels, split.index),
                    "test": dataset.splits["test"].at_size(args.size),
                },
                dataset.class_names,
                "memory",
            )
            started = time.perf_counter()
            extract(backbone, in_memory, work / "forward.h5", ExtractConfig(**config, workers=0), progress=False)
            forward_alone = time.perf_counter() - started
            started = time.perf_counter()
            extract(backbone, dataset, work / "both.h5", ExtractConfig(**config, workers=1), progress=False)
            both = time.perf_counter() - started
            bound = max(host_alone, forward_alone)
            rows += [
                {"measure": "host_alone_s", "value": host_alone},
                {"measure": "cpu_ms_per_image_1_worker", "value": one_worker_cpu},
                {"measure": "forward_alone_s", "value": forward_alone},
                {"measure": "extraction_s", "value": both},
                {"measure": "extraction_over_max", "value": both / bound},
            ]
            print(
                f"overlap, 1 worker: host alone {host_alone:.2f} s, forward alone {forward_alone:.2f} s, extraction "
                f"{both:.2f} s "
                f"= {both / bound:.2f}x max(host, forward) (serial would be "
                f"{(host_alone + forward_alone) / bound:.2f}x); 1 worker's CPU {one_worker_cpu:.2f} ms per image"
            )
        print(f"load average after: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
        if args.out:
            with open(args.out, "w", newline="") as handle:
                writer = csv.DictWriter(handle, fieldnames=["measure", "value"])
                writer.writeheader()
                writer.writerows(rows)


if __name__ == "__main__":
    main()
