"""Benchmark of the two speed claims, measured in one run on one machine.

1. Extraction overhead: ``probekit.extract`` (noise, hooks, pooling, HDF5 writes) over the bare
   model forward on the same images and grid points (goal: <= 10 % overhead).
2. Probing: the batched ``linear`` grid probe over the scikit-learn ``logreg`` loop on the same
   cells of that cache (goal: >= 20x faster, mean top-1 within 1 point).

Usage: python experiments/bench_core.py [--train 1000 --test 500 --out experiments/results/bench_core.csv]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from probekit.data import fit_images, load_dataset, stratified_subset
from probekit.extraction import ExtractConfig, extract, plan_extraction
from probekit.models import load_backbone
from probekit.noise import sample_noise
from probekit.probes import run_probe
from probekit.probes.run import ProbeRunConfig, cell_infos, load_cells
from probekit.cache import FeatureCache

MODEL = "experiments/models/unet-small"
TIMESTEPS = [10, 50, 100, 200, 400, 700]


def bare_forward_seconds(backbone, dataset, config) -> float:
    """Model forward alone: inputs are fitted and noised beforehand, outside the clock."""
    plan = plan_extraction(backbone, config)
    inputs = []
    for split in dataset.splits.values():
        for start in range(0, len(split.labels), config.batch_size):
            x0, _ = fit_images(split.images[start : start + config.batch_size], size=backbone.input_size,
                               channels=backbone.input_channels, value_range=backbone.value_range)
            ids = split.index[start : start + config.batch_size]
            for point in plan.grid:
                noise = sample_noise(x0.shape[1:], ids, seed=0, t=point.t, draw=0)
                inputs.append((backbone.schedule.add_noise(x0, noise, point), point))
    started = time.perf_counter()
    for x, point in inputs:
        backbone.forward(x, point)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", type=int, default=1000)
    parser.add_argument("--test", type=int, default=500)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default="experiments/results/bench_core.csv")
    args = parser.parse_args()

    backbone = load_backbone(MODEL, random_init=True)
    dataset = load_dataset("fashion-mnist")
    dataset.splits["train"] = stratified_subset(dataset.splits["train"], args.train, seed=0)
    dataset.splits["test"] = stratified_subset(dataset.splits["test"], args.test, seed=0)
    config = ExtractConfig(timesteps=TIMESTEPS, batch_size=64)
    n_forwards = (args.train + args.test) * len(TIMESTEPS)

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        bare, full = [], []
        for repeat in range(args.repeats):  # interleaved, so drift in machine load hits both alike
            bare.append(bare_forward_seconds(backbone, dataset, config))
            cache_path = Path(tmp) / f"bench{repeat}.h5"
            started = time.perf_counter()
            extract(backbone, dataset, cache_path, config, progress=False)
            full.append(time.perf_counter() - started)
        bare_s, full_s = statistics.median(bare), statistics.median(full)
        rows += [
            {"measure": "bare forward (s)", "value": bare_s},
            {"measure": "extract (s)", "value": full_s},
            {"measure": "extraction overhead (extract / bare - 1)", "value": full_s / bare_s - 1},
            {"measure": "extract throughput (image x grid-point forwards / s)", "value": n_forwards / full_s},
        ]

        with FeatureCache(cache_path) as cache:
            cells = list(cell_infos(cache))
            train, test = load_cells(cache, "train", cells), load_cells(cache, "test", cells)
            y_train, y_test = cache.labels("train"), cache.labels("test")
            n_classes = len(cache.class_names)
        run_config = ProbeRunConfig()
        timings, scores = {}, {}
        for name in ("linear", "logreg", "knn"):
            started = time.perf_counter()
            scores[name] = run_probe(name, train, y_train, test, y_test, run_config.probe_config(name, n_classes))
            timings[name] = time.perf_counter() - started
        linear_acc = np.array([scores["linear"][c].top1 for c in cells])
        logreg_acc = np.array([scores["logreg"][c].top1 for c in cells])
        rows += [
            {"measure": "cells probed", "value": len(cells)},
            {"measure": "linear grid probe (s)", "value": timings["linear"]},
            {"measure": "logreg loop (s)", "value": timings["logreg"]},
            {"measure": "knn (s)", "value": timings["knn"]},
            {"measure": "logreg / linear time ratio", "value": timings["logreg"] / timings["linear"]},
            {"measure": "mean top-1 linear (%)", "value": 100 * linear_acc.mean()},
            {"measure": "mean top-1 logreg (%)", "value": 100 * logreg_acc.mean()},
            {"measure": "mean |linear - logreg| top-1 (points)", "value": 100 * np.abs(linear_acc - logreg_acc).mean()},
            {"measure": "best cell top-1 linear / logreg (%)", "value": f"{100 * linear_acc.max():.1f} / {100 * logreg_acc.max():.1f}"},
        ]

    machine = f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPU threads, torch {torch.__version__} ({torch.get_num_threads()} threads)"
    table = pd.DataFrame(rows)
    table["machine"] = machine
    table["setup"] = f"{MODEL} random init, fashion-mnist {args.train}/{args.test}, t={TIMESTEPS}, all layers, batch 64"
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(args.out, index=False)
    print(f"machine: {machine}")
    for row in rows:
        value = row["value"]
        print(f"  {row['measure']:<58s} {value:.3f}" if isinstance(value, float) else f"  {row['measure']:<58s} {value}")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
