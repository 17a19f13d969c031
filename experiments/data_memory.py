"""Peak memory of loading a dataset and extracting pixel features from it, lazy folder vs in-memory npz.

    PYTHONPATH=. python experiments/data_memory.py [--sizes 500,2000,8000] [--side 32]

For each N it writes N random RGB images twice, as a class-folder dataset (decoded per batch) and
as an .npz (held in memory), then measures with tracemalloc the peak bytes allocated while
``load_dataset`` + ``extract`` (the ``pixels`` backbone, batch 64) run. numpy and Pillow buffers
are traced; torch's and HDF5's own C allocations are not, so the numbers are the Python-visible
data, not the process RSS.
"""

from __future__ import annotations

import argparse
import tempfile
import tracemalloc
from pathlib import Path

import numpy as np
from PIL import Image

from probekit.data import load_dataset
from probekit.features.extraction import ExtractConfig, extract
from probekit.models import load_backbone


def write(root: Path, n: int, side: int) -> tuple[Path, Path]:
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, size=(n, side, side, 3), dtype=np.uint8)
    labels = np.arange(n) % 10
    n_test = n // 5
    for i, (image, label) in enumerate(zip(pixels, labels)):
        split = "test" if i >= n - n_test else "train"
        path = root / f"folder{n}" / split / f"c{label}" / f"{i:06d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(path)
    npz = root / f"data{n}.npz"
    np.savez(
        npz, x=pixels[: n - n_test], y=labels[: n - n_test], x_test=pixels[n - n_test :], y_test=labels[n - n_test :]
    )
    return root / f"folder{n}", npz


def peak(spec: Path, out: Path) -> int:
    backbone = load_backbone("pixels")
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        dataset = load_dataset(str(spec))
        extract(backbone, dataset, out, ExtractConfig(batch_size=64), progress=False, overwrite=True)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="500,2000,8000")
    parser.add_argument("--side", type=int, default=32)
    args = parser.parse_args()
    print(f"{'N':>6} {'pixels MB':>10} {'folder peak MB':>15} {'npz peak MB':>12}")
    with tempfile.TemporaryDirectory() as tmp:
        for n in (int(s) for s in args.sizes.split(",")):
            folder, npz = write(Path(tmp), n, args.side)
            lazy, in_memory = peak(folder, Path(tmp) / "f.h5"), peak(npz, Path(tmp) / "n.h5")
            print(f"{n:>6} {n * args.side**2 * 3 / 1e6:>10.1f} {lazy / 1e6:>15.2f} {in_memory / 1e6:>12.2f}")


if __name__ == "__main__":
    main()
