"""What the per-vector Fletcher-32 checksums of a cache cost: write and read time, with and without.

The shipped UNet's layer widths (``checkpoints/fashion-mnist-ddpm``: 27 layers) at the main job's 8
noise levels, random float32 features for ``--samples`` train samples written batch by batch through
:class:`probekit.features.cache.CacheWriter` exactly as extraction does, then every cell read back
with :meth:`FeatureCache.features`. Rounds alternate checksum on / off, and the medians are
compared; the file is in the page cache, so this is the CPU cost of the checksum, the part a
faster disk cannot hide.

Usage (about 1 minute on a 2-core CPU):
    PYTHONPATH=. python experiments/bench_checksum.py [--samples 4000] [--rounds 5]
Writes experiments/results/bench_checksum.csv (checksum, round, write s, read s, file MiB, machine).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from probekit.core.precision import machine_description
from probekit.core.schedule import DDPMSchedule
from probekit.core.types import LayerInfo
from probekit.features.cache import CacheLayout, CacheWriter, FeatureCache, SplitLabels
from probekit.features.cache import writer as cache_module

# The shipped UNet's 27 readable layers, by width (probekit layers --model checkpoints/fashion-mnist-ddpm).
WIDTHS = [32] * 4 + [64] * 4 + [128] * 3 + [128] * 3 + [128] * 4 + [64] * 4 + [32] * 5
TIMESTEPS = [0, 5, 10, 25, 50, 100, 200, 450]
BATCH = 64


def _layout(samples: int) -> CacheLayout:
    layers = [LayerInfo(f"layer{i}", "block", i, w, "1x1") for i, w in enumerate(WIDTHS)]
    labels = np.arange(samples) % 10
    return CacheLayout(
        attrs={"model_id": "bench", "model_sha256": "0", "dataset": "bench", "seed": 0, "pooling": "gap"},
        grid=DDPMSchedule().points(TIMESTEPS),
        layers=layers,
        widths={layer.name: layer.channels for layer in layers},
        splits={"train": SplitLabels(labels, np.arange(samples))},
        class_names=[str(c) for c in range(10)],
        draws=1,
    )


def _round(folder: Path, samples: int, checksum: bool, rng: np.random.Generator) -> tuple[float, float, float]:
    cache_module.FEATURE_CHECKSUM = checksum
    path = folder / f"bench-{checksum}.h5"
    path.unlink(missing_ok=True)
    layout = _layout(samples)
    batches = [
        {
            f"layer{i}": rng.standard_normal((len(TIMESTEPS), 1, BATCH, w), dtype=np.float32)
            for i, w in enumerate(WIDTHS)
        }
        for _ in range(4)
    ]
    started = time.perf_counter()
    writer = CacheWriter(path, layout)
    for number, start in enumerate(range(0, samples, BATCH)):
        stop = min(start + BATCH, samples)
        writer.write_batch("train", start, {k: v[:, :, : stop - start] for k, v in batches[number % 4].items()})
    writer.close(complete=True)
    write = time.perf_counter() - started
    started = time.perf_counter()
    with FeatureCache(path) as cache:
        for layer in cache.layers:
            for t in TIMESTEPS:
                cache.features("train", layer.name, t)
    read = time.perf_counter() - started
    return write, read, path.stat().st_size / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=4000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--out", default="experiments/results/bench_checksum.csv")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    machine = machine_description()
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for number in range(args.rounds):
            for checksum in (False, True) if number % 2 == 0 else (True, False):
                write, read, size = _round(Path(folder), args.samples, checksum, rng)
                rows.append({"checksum": checksum, "round": number, "write_s": write, "read_s": read, "file_mib": size})
    table = pd.DataFrame(rows).assign(machine=machine)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(args.out, index=False)
    medians = table.groupby("checksum")[["write_s", "read_s", "file_mib"]].median()
    print(machine)
    print(medians.to_string())
    print(
        f"checksum / none: write {medians.write_s[True] / medians.write_s[False]:.3f}x, "
        f"read {medians.read_s[True] / medians.read_s[False]:.3f}x, "
        f"size {medians.file_mib[True] / medians.file_mib[False]:.4f}x"
    )


if __name__ == "__main__":
    main()
