"""Cost of counting NaN / inf in the pooled features, against writing the same batch to a cache.

The count runs on the cache writer's thread (beside the HDF5 write, off the forward's path); this
measures it per batch against the write itself. Default: 12 grid points x 64 images x D channels
for D in 256, 1280 (a DDPM / SD UNet block's width), 20 repeats each.

    PYTHONPATH=. python experiments/bench_nonfinite_count.py [--batch 64] [--repeats 20]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np

from probekit.core.precision import machine_description


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--grid", type=int, default=12)
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    print(machine_description())
    rng = np.random.default_rng(0)
    for width in (256, 1280):
        values = rng.normal(size=(args.grid, 1, args.batch, width)).astype(np.float32)
        with tempfile.TemporaryDirectory() as folder, h5py.File(Path(folder) / "b.h5", "w") as f:
            data = f.create_dataset(
                "x",
                shape=(args.grid, 1, args.batch * args.repeats, width),
                dtype="float32",
                chunks=(1, 1, args.batch, width),
            )
            write = count = 0.0
            for i in range(args.repeats):
                start = time.perf_counter()
                data[:, :, i * args.batch : (i + 1) * args.batch, :] = values
                f.flush()
                write += time.perf_counter() - start
                start = time.perf_counter()
                np.count_nonzero(~np.isfinite(values), axis=(1, 3))
                count += time.perf_counter() - start
        print(
            f"D={width}: write {1e3 * write / args.repeats:.2f} ms/batch, count {1e3 * count / args.repeats:.2f} "
            "ms/batch "
            f"({100 * count / write:.0f} % of the write)"
        )


if __name__ == "__main__":
    main()
