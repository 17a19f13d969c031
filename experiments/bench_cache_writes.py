"""Cache write amplification: bytes passed to write() against the finished file's size, four setups.

The bytes a process hands to ``write()`` / ``pwrite()`` are read from ``/proc/self/io`` (``wchar``,
which sums every thread, so the background writer thread is counted) before and after each
extraction; the ratio to the file's size is how many times each byte of the cache was written.
A page cache absorbs rewrites on a local disk; network and cluster file systems do not.

Setups (the layouts of real extractions; only the layout and batch size decide what is written):

1. ``sd15``: Stable Diffusion 1.5's 44 UNet layers (widths 320 / 640 / 1280), 8 noise levels,
   batch 64, float32: the ImageNet-scale cache (``--sd-images`` samples here).
2. ``folder``: ``experiments/models/unet-small`` (all layers, default grid, batch 64), the small
   model of an image-folder dataset (2000 + 500 images).
3. ``fmnist``: the shipped ``checkpoints/fashion-mnist-ddpm`` UNet's 27 layers (widths from its
   layer table), the demo's 8 noise levels, batch 64, 1500 + 500 images.
4. ``cifar``: DDAE's CIFAR-10 DDPM (``experiments/models/ddpm-cifar10``, all layers), its
   default grid, batch 64.

Each setup feeds the cache writer random features of the real shapes, batch after batch, exactly
as ``extract`` does (a forward of these models would take hours here and does not change a byte
of what is written; the extraction path itself is covered by the tests). Each must stay at or
below 1.5x.

Usage (defaults about 1 minute on a 2-core CPU):
    PYTHONPATH=. python experiments/bench_cache_writes.py [--sd-images 384] [--setups sd15,folder,fmnist,cifar]
Writes experiments/results/bench_cache_writes.csv (setup, samples, bytes written, file bytes, ratio, seconds, machine).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np
import pandas as pd

from probekit.core.precision import machine_description
from probekit.core.schedule import DDPMSchedule
from probekit.core.types import LayerInfo
from probekit.features.cache import CacheLayout, CacheWriter, SplitLabels
from probekit.models import load_backbone

ROOT = Path(__file__).resolve().parent.parent
FMNIST_GRID = [0, 5, 10, 25, 50, 100, 200, 450]
SD15_GRID = [0, 25, 50, 100, 200, 400, 600, 800]


def written_bytes() -> int:
    """Bytes this process has passed to write()/pwrite() so far (all threads)."""
    for line in Path("/proc/self/io").read_text().splitlines():
        if line.startswith("wchar:"):
            return int(line.split()[1])
    raise RuntimeError("/proc/self/io has no wchar line")


def sd15_widths() -> list[int]:
    """Pooled widths of SD 1.5's 44 UNet layers in forward order, as probekit lists them: down
    blocks 0-2 (resnet, attention, resnet, attention, downsampled output) at 320 / 640 / 1280,
    down block 3 (2 resnets), the mid block (resnet, attention, resnet), up block 0 (3 resnets +
    upsampled output), up blocks 1-2 (3 x (resnet, attention) + upsampled output), up block 3
    (3 x (resnet, attention)).
    """
    return (
        [320] * 5 + [640] * 5 + [1280] * 5 + [1280] * 2 + [1280] * 3 + [1280] * 4 + [1280] * 7 + [640] * 7 + [320] * 6
    )


def layout_of(widths: list[int], grid: list[int], n: dict[str, int]) -> CacheLayout:
    schedule = DDPMSchedule()
    layers = [
        LayerInfo(name=f"layer{i:02d}", stage="down", depth=i, channels=w, resolution="1x1")
        for i, w in enumerate(widths)
    ]
    return CacheLayout(
        attrs={"model_id": "bench", "model_sha256": "0", "dataset": "bench", "seed": 0, "pooling": "gap"},
        grid=sorted(schedule.points(grid), key=lambda p: p.t),
        layers=layers,
        widths={layer.name: w for layer, w in zip(layers, widths)},
        splits={split: SplitLabels(np.arange(count) % 10, np.arange(count)) for split, count in n.items()},
        class_names=[str(i) for i in range(10)],
        draws=1,
    )


def write_layout(path: Path, layout: CacheLayout, batch: int) -> None:
    """Feed the writer (T, 1, B, D) float32 batches in order, as extraction does."""
    rng = np.random.default_rng(0)
    t = len(layout.grid)
    blocks = {w: rng.standard_normal((t, 1, batch, w), dtype=np.float32) for w in set(layout.widths.values())}
    writer = CacheWriter(path, layout)
    for split, labels in layout.splits.items():
        n = len(labels.labels)
        for start in range(0, n, batch):
            b = min(batch, n - start)
            writer.write_batch(split, start, {name: blocks[w][:, :, :b] for name, w in layout.widths.items()})
    writer.close(complete=True)


def widths_of(model: str) -> list[int]:
    backbone = load_backbone(model, random_init=True, device="cpu")
    return [layer.channels for layer in backbone.layers()]


def run_setup(name: str, args: argparse.Namespace, tmp: Path) -> dict:
    out = tmp / f"{name}.h5"
    if name == "sd15":
        samples = {"train": args.sd_images}
        action = lambda: write_layout(out, layout_of(sd15_widths(), SD15_GRID, samples), 64)
        what = f"SD 1.5 layout: 44 layers, 8 noise levels, batch 64, {args.sd_images} images"
    elif name == "fmnist":
        samples = {"train": 1500, "test": 500}
        widths = widths_of(str(ROOT / "checkpoints" / "fashion-mnist-ddpm"))
        action = lambda: write_layout(out, layout_of(widths, FMNIST_GRID, samples), 64)
        what = f"shipped Fashion-MNIST UNet layout: {len(widths)} layers, 8 noise levels, batch 64, 1500 + 500 images"
    elif name == "cifar":
        samples = {"train": args.cifar_images, "test": args.cifar_images // 5}
        model = str(ROOT / "experiments" / "models" / "ddpm-cifar10")
        widths = widths_of(model)
        grid = load_backbone(model, random_init=True, device="cpu").schedule.default_grid()
        action = lambda: write_layout(out, layout_of(widths, grid, samples), 64)
        what = (
            f"DDAE CIFAR-10 DDPM layout: {len(widths)} layers, {len(grid)} noise levels, batch 64, "
            f"{sum(samples.values())} images"
        )
    elif name == "folder":
        samples = {"train": args.folder_images, "test": args.folder_images // 4}
        model = str(ROOT / "experiments" / "models" / "unet-small")
        widths = widths_of(model)
        grid = load_backbone(model, random_init=True, device="cpu").schedule.default_grid()
        action = lambda: write_layout(out, layout_of(widths, grid, samples), 64)
        what = (
            f"unet-small on an image folder: {len(widths)} layers, {len(grid)} noise levels, batch 64, "
            f"{sum(samples.values())} images"
        )
    else:
        raise SystemExit(f"unknown setup {name!r}: choose from sd15, folder, fmnist, cifar")
    before, start = written_bytes(), time.perf_counter()
    action()
    seconds, passed = time.perf_counter() - start, written_bytes() - before
    size = out.stat().st_size
    with h5py.File(out, "r") as f:  # the features' own bytes (a last, partly filled chunk is allocated whole)
        payload = sum(d.nbytes for s in f if s not in ("grid", "layers") for d in f[s]["feats"].values())
    out.unlink()
    return {
        "setup": name,
        "what": what,
        "samples": sum(samples.values()),
        "bytes_written": passed,
        "file_bytes": size,
        "feature_bytes": payload,
        "ratio": passed / size,
        "ratio_to_features": passed / payload,
        "seconds": seconds,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--setups", default="sd15,folder,fmnist,cifar")
    parser.add_argument("--sd-images", type=int, default=384, help="images of the SD 1.5 layout (0.15 MiB x 8 each)")
    parser.add_argument("--folder-images", type=int, default=2000)
    parser.add_argument("--cifar-images", type=int, default=5000)
    parser.add_argument("--out", default=str(ROOT / "experiments" / "results" / "bench_cache_writes.csv"))
    args = parser.parse_args()
    machine = machine_description()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.setups.split(","):
            row = run_setup(name.strip(), args, Path(tmp))
            rows.append({**row, "machine": machine})
            print(
                f"{row['setup']:>7}: {row['bytes_written'] / 2**20:9.1f} MiB written / "
                f"{row['file_bytes'] / 2**20:8.1f} MiB file "
                f"= {row['ratio']:.3f}x  "
                f"({row['ratio_to_features']:.3f}x the feature bytes; {row['seconds']:.1f} s; {row['what']})",
                flush=True,
            )
    pd.DataFrame(rows).to_csv(args.out, index=False)
    print(f"machine: {machine}\nwrote {args.out}")


if __name__ == "__main__":
    main()
