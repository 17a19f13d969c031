"""A cell larger than memory: time per pass over its train rows read from the cache, and the projection
for ImageNet's 1.28 M x 1280 cell.

Writes one cell of ``--rows`` x ``--width`` float32 features (plus a test split of ``--rows // 10``)
and times, over the train rows read block by block from the file (as ``probekit probe`` reads a
cell that exceeds ``--max-memory``):

1. a read pass (HDF5 -> float32 blocks);
2. one evaluation of the linear probe's objective and gradient (read + standardise + the two
   products), what each L-BFGS step costs, beside the same evaluation on the cell held in memory;
3. the kNN pass (top-20 of every val / test query against the train blocks).

Each is scaled linearly in rows to 1.28 M x 1280 (a pass is linear in N; the products are linear in
the width, reads too). The page cache may hold the file here; on a cluster file system, reads run at
its bandwidth instead, which the read pass shows separately.

Usage (defaults: 40 000 x 1280, about 2 minutes on a 2-core CPU):
    PYTHONPATH=. python experiments/bench_streaming.py [--rows 40000] [--width 1280] [--repeats 2]
Writes experiments/results/bench_streaming.csv (measure, seconds, projected seconds at 1.28 M x 1280, machine).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch

from probekit.core.precision import machine_description
from probekit.features.cache import FeatureCache
from probekit.probes.linear import LinearProbeConfig, _Problem
from probekit.probes.streamed import TrainRows, _StreamedProblem, knn_streamed

ROOT = Path(__file__).resolve().parent.parent
IMAGENET_ROWS, IMAGENET_WIDTH = 1_281_167, 1280


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=40_000)
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--classes", type=int, default=1000)
    parser.add_argument("--block", default="64M", help="bytes of train rows per block (default 64M)")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--out", default=str(ROOT / "experiments" / "results" / "bench_streaming.csv"))
    args = parser.parse_args()
    import sys

    sys.path.insert(0, str(ROOT))
    from tests.test_probe_memory import synthetic_cache

    block_bytes = int(args.block.rstrip("M")) << 20
    machine = machine_description()
    scale = IMAGENET_ROWS / args.rows * IMAGENET_WIDTH / args.width
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        path = synthetic_cache(
            Path(tmp) / "cell.h5", args.rows, args.rows // 10, [args.width], timesteps=(0,), classes=args.classes
        )
        with FeatureCache(path) as cache:
            layer = cache.layers[0].name
            y = cache.labels("train")

            def blocks():
                for _, block in cache.row_chunks("train", layer, 0, block_bytes=block_bytes):
                    yield block

            source = TrainRows(args.rows, args.width, blocks)
            queries = {"test": cache.features("test", layer, 0)}
            problem = _StreamedProblem.stream(
                "cell", source, torch.from_numpy(y), args.classes, torch.device("cpu"), LinearProbeConfig().precondition
            )
            problem.set_C(1.0)
            theta = torch.zeros((1, problem.n_params))
            active = torch.ones(1, dtype=torch.bool)
            in_memory = _Problem.build(
                ["cell"],
                {"cell": cache.features("train", layer, 0)},
                torch.from_numpy(y),
                args.classes,
                torch.device("cpu"),
                LinearProbeConfig().precondition,
            )
            in_memory.set_C(1.0)
            measures = {
                "read pass": lambda: sum(len(b) for b in source.blocks()),
                "linear evaluation, in memory (reference)": lambda: in_memory.evaluate(theta, active),
                "linear evaluation, streamed (one L-BFGS step)": lambda: problem.evaluate(theta, active),
                "knn pass (top-20 of every query)": lambda: knn_streamed(source, y, queries, [20], [0.07]),
            }
            for name, fn in measures.items():
                times = []
                for _ in range(args.repeats):
                    start = time.perf_counter()
                    fn()
                    times.append(time.perf_counter() - start)
                seconds = min(times)
                # kNN also scales with the queries: ImageNet's 10 % validation split of train + 50 000 test
                # images, against rows // 10 here
                queries_ratio = (IMAGENET_ROWS // 10 + 50_000) / (args.rows // 10)
                projected = seconds * scale * (queries_ratio if name.startswith("knn") else 1.0)
                rows.append(
                    {
                        "measure": name,
                        "seconds": seconds,
                        "projected_imagenet_seconds": projected,
                        "setup": f"{args.rows} x {args.width} float32, {args.classes} classes, blocks of {args.block}",
                        "machine": machine,
                    }
                )
                print(
                    f"{name:>40}: {seconds:7.2f} s here; projected {projected / 60:7.1f} min at 1.28 M x 1280",
                    flush=True,
                )
    pd.DataFrame(rows).to_csv(args.out, index=False)
    print(f"machine: {machine}\nwrote {args.out}")


if __name__ == "__main__":
    main()
