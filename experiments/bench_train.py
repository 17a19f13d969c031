"""Training step time, fp32 against bf16 autocast, on this machine (one run, interleaved).

Usage: python experiments/bench_train.py [--steps 20] [--out experiments/results/bench_train.csv]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import pandas as pd

from probekit.core.precision import machine_description
from probekit.train import TrainConfig, train


def seconds_per_step(config: TrainConfig, steps: int) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        # a short warm-up run, then the timed continuation of the same run (no checkpoint inside)
        warm = replace(config, total_steps=2 + steps, checkpoint_every=10**9, log_every=10**9)
        train(warm, tmp, stop_at=2, progress=False)
        started = time.perf_counter()
        train(warm, tmp, progress=False)
        return (time.perf_counter() - started) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="experiments/train/fashion-mnist.yaml")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--out", default="experiments/results/bench_train.csv")
    args = parser.parse_args()
    base = TrainConfig.from_yaml(args.config, sample_count=4, sample_steps=2, train_limit=2000)
    rows = []
    for precision in ("fp32", "bf16", "fp32", "bf16"):
        rows.append(
            {
                "precision": precision,
                "seconds_per_step": seconds_per_step(replace(base, precision=precision), args.steps),
            }
        )
    table = pd.DataFrame(rows).groupby("precision", as_index=False)["seconds_per_step"].min()
    table["images_per_second"] = base.batch_size / table["seconds_per_step"]
    table["machine"] = machine_description()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(args.out, index=False)
    print(table.to_string(index=False))


if __name__ == "__main__":
    main()
