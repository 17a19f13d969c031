"""Streamed probing against in-memory probing of the same cell, in one process, alternating.

Writes one cell of ``--rows`` x ``--width`` float32 train features (plus ``--rows // 10`` test rows)
and probes it with the linear probe through :func:`probekit.probes.run.probe_cache` twice per round:
in memory (no budget) and with ``max_memory`` set to the train features' bytes / ``--ratio`` (so
the cell goes to the streamed path, :mod:`probekit.probes.streamed`). The two alternate, ``--rounds``
times, so that both see the same load on a shared machine; the ratio streamed / in-memory is taken
per round. Prints the CPU model, torch's CPU capability and the load average, and how many test
predictions differ between the two.

Usage (defaults: 60 000 x 512, 10 classes, ratio 1.6; about 1 minute per round on a loaded 2-core CPU):
    PYTHONPATH=. python experiments/bench_streaming.py [--rows 60000] [--width 512] [--rounds 2]
Writes experiments/results/bench_streaming.csv (round, mode, seconds, differing test predictions, machine).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from probekit.core.precision import machine_description
from probekit.probes.run import ProbeRunConfig, probe_cache

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=60_000)
    parser.add_argument("--width", type=int, default=512)
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--ratio", type=float, default=1.6, help="train features' bytes / --max-memory")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--probes", default="linear", help="comma-separated, e.g. linear,knn")
    parser.add_argument("--out", default=str(ROOT / "experiments" / "results" / "bench_streaming.csv"))
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    from tests.probes.test_probe_memory import synthetic_cache

    machine = machine_description()
    header = (
        f"CPU: {machine}\ncapability: {torch.backends.cpu.get_cpu_capability()}\n"
        f"load average at start: {os.getloadavg()}"
    )
    print(header, flush=True)
    budget = int(4 * args.rows * args.width / args.ratio)
    config = ProbeRunConfig(probes=tuple(args.probes.split(",")))
    records = []
    with tempfile.TemporaryDirectory() as tmp:
        path = synthetic_cache(
            Path(tmp) / "cell.h5", args.rows, args.rows // 10, [args.width], timesteps=(0,), classes=args.classes
        )
        for round_ in range(args.rounds):
            predictions = {}
            for mode, max_memory in (("in memory", None), (f"streamed, --max-memory {budget >> 20} MiB", budget)):
                start = time.perf_counter()
                results = probe_cache(path, config, progress=False, max_memory=max_memory)
                seconds = time.perf_counter() - start
                predictions[mode] = results.predictions.predictions
                records.append({"round": round_, "mode": mode, "seconds": seconds, "load": os.getloadavg()[0]})
                print(f"round {round_}: {mode:>32}: {seconds:7.2f} s (load {os.getloadavg()[0]:.2f})", flush=True)
            memory, streamed = predictions.values()
            differ = int((np.asarray(memory) != np.asarray(streamed)).sum())
            ratio = records[-1]["seconds"] / records[-2]["seconds"]
            for record in records[-2:]:
                record.update(differing_test_predictions=differ, ratio=ratio)
            print(
                f"round {round_}: streamed / in memory {ratio:.2f}x; {differ} of {memory.size} test predictions differ"
            )
    frame = pd.DataFrame(records)
    frame["setup"] = (
        f"{args.rows} x {args.width} float32, {args.classes} classes, budget {budget} B (cell / {args.ratio}), "
        f"probes {args.probes}"
    )
    frame["machine"] = machine
    frame.to_csv(args.out, index=False)
    print(f"load average at end: {os.getloadavg()}\nwrote {args.out}")


if __name__ == "__main__":
    main()
