"""Training throughput of every family's shipped recipe on this machine (one run, rounds interleaved).

Each round times ``--steps`` training steps of each recipe in bf16 autocast (batch 64, no checkpoint
inside the timed steps) on one thread, by the process's CPU time as well as the wall clock: on a
shared, loaded machine the wall clock measures the other work, while the CPU seconds of a
single-threaded step hardly depend on it. The table keeps each recipe's fastest round and records
the load average before and after.

Usage: python experiments/bench_train_families.py [--steps 10] [--rounds 2]
       [--out experiments/results/bench_train_families.csv]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import pandas as pd
import torch

from probekit.core.precision import machine_description
from probekit.train import TrainConfig, train
from probekit.train.loop import cpu_model

RECIPES = {
    "ddpm": "experiments/train/fashion-mnist.yaml",
    "dit": "experiments/train/fashion-mnist-dit.yaml",
    "edm": "experiments/train/fashion-mnist-edm.yaml",
    "flow": "experiments/train/fashion-mnist-flow.yaml",
}


def seconds_per_step(config: TrainConfig, steps: int) -> tuple[float, float]:
    """(wall, CPU) seconds per step."""
    with tempfile.TemporaryDirectory() as tmp:
        # a short warm-up run, then the timed continuation of the same run (no checkpoint inside)
        warm = replace(config, total_steps=2 + steps, checkpoint_every=10**9, log_every=10**9)
        train(warm, tmp, stop_at=2, progress=False)
        wall, cpu = time.perf_counter(), time.process_time()
        train(warm, tmp, progress=False)
        return (time.perf_counter() - wall) / steps, (time.process_time() - cpu) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--out", default="experiments/results/bench_train_families.csv")
    args = parser.parse_args()
    # The DDPM recipe says fp32 but the shipped DDPM ran bf16 (--precision bf16): time what was run.
    configs = {
        name: TrainConfig.from_yaml(path, sample_count=4, sample_steps=2, train_limit=2000, precision="bf16")
        for name, path in RECIPES.items()
    }
    torch.set_num_threads(1)
    load_before = os.getloadavg()[0]
    rows = []
    for _ in range(args.rounds):
        for name, config in configs.items():
            wall, cpu = seconds_per_step(config, args.steps)
            rows.append({"family": name, "wall_seconds_per_step": wall, "cpu_seconds_per_step": cpu})
    table = pd.DataFrame(rows).groupby("family", as_index=False)[["wall_seconds_per_step", "cpu_seconds_per_step"]]
    table = table.min()
    table["images_per_cpu_second"] = 64 / table["cpu_seconds_per_step"]
    table["images_per_wall_second"] = 64 / table["wall_seconds_per_step"]
    table["precision"] = "bf16"
    table["threads"] = torch.get_num_threads()
    table["cpu"] = cpu_model()
    table["machine"] = machine_description()
    table["load_average_before"], table["load_average_after"] = load_before, os.getloadavg()[0]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(args.out, index=False)
    print(table.to_string(index=False))


if __name__ == "__main__":
    main()
