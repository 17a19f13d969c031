"""Segmentation folders (images + VOC-style palette masks) and the Fashion-MNIST mosaic dataset.

Layout of a segmentation folder::

    ROOT/classes.txt                     one class name per line; line k names mask value k
    ROOT/images/{train,val,test}/NAME.png|jpg
    ROOT/masks/{train,val,test}/NAME.png  PNG whose pixel values are class ids (a palette "P"
                                          image as PASCAL VOC ships, or 8-bit gray); 255 = ignore

``val`` is optional. Images and masks pair by file stem; sample ids are positions in the sorted
stems of a split. Loaded as an image dataset (every image labelled 0, class "image": the classes
live in the masks), so ``probekit extract --data ROOT`` extracts it like any other folder.

The mosaic dataset (:func:`write_fashion_mosaic`) is such a folder built from real Fashion-MNIST
images: each image is a 2 x 2 mosaic of garments shrunk to ``tile`` x ``tile`` pixels; a pixel's
label is its tile's garment class + 1 where the garment covers it (shrunk intensity >= 26 / 255,
about 10 %), and 0 (background) elsewhere.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image

from probekit.core.errors import ProbekitError
from probekit.data.base import ImageDataset, ImageSplit
from probekit.data.images import FileImages, is_image_file, scan_images

SPLITS = ("train", "val", "test")
IGNORE_INDEX = 255
#: shrunk Fashion-MNIST intensity (0..255) from which a mosaic pixel counts as garment
FOREGROUND = 26


def is_segmentation_folder(path: Path) -> bool:
    return path.is_dir() and (path / "images").is_dir() and (path / "masks").is_dir()


def _stems(folder: Path) -> dict[str, Path]:
    return {p.stem: p for p in sorted(folder.iterdir()) if is_image_file(p)} if folder.is_dir() else {}


def load_segmentation_folder(root: str | os.PathLike) -> ImageDataset:
    """The images of a segmentation folder as an :class:`ImageDataset` (labels 0; masks via :func:`read_masks`)."""
    root = Path(root)
    class_names = segmentation_classes(root)
    splits: dict[str, ImageSplit] = {}
    paths_by_split = {}
    for split in SPLITS:
        images = _stems(root / "images" / split)
        if not images:
            continue
        masks = _stems(root / "masks" / split)
        missing = sorted(set(images) - set(masks))
        if missing:
            raise ProbekitError(
                f"{root / 'images' / split / missing[0]}.* has no mask in {root / 'masks' / split}: add it"
            )
        paths_by_split[split] = [images[stem] for stem in sorted(images)]
    if "train" not in paths_by_split or "test" not in paths_by_split:
        raise ProbekitError(f"{root} needs images/train and images/test (and masks/ beside them)")
    mode, shape, mixed = scan_images([p for paths in paths_by_split.values() for p in paths])
    for split, paths in paths_by_split.items():
        n = len(paths)
        splits[split] = ImageSplit(
            FileImages(paths, mode, shape, mixed_sizes=mixed), np.zeros(n, dtype=np.int64), np.arange(n, dtype=np.int64)
        )
    info = {"format": "segmentation-folder", "mask_classes": class_names}
    return ImageDataset(root.name, splits, ["image"], str(root), info)


def segmentation_classes(root: str | os.PathLike) -> list[str]:
    path = Path(root) / "classes.txt"
    if not path.is_file():
        raise ProbekitError(f"{path} is missing: write one class name per line (line k names mask value k)")
    names = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    if not 2 <= len(names) < IGNORE_INDEX:
        raise ProbekitError(f"{path} names {len(names)} classes: give 2..254 (mask value 255 is the ignore index)")
    return names


def read_masks(root: str | os.PathLike, split: str, index: np.ndarray) -> list[np.ndarray]:
    """uint8 (H, W) masks of the samples ``index`` (positions in the split's sorted stems)."""
    root = Path(root)
    images = _stems(root / "images" / split)
    masks = _stems(root / "masks" / split)
    stems = sorted(images)
    out = []
    for i in np.asarray(index):
        if not 0 <= int(i) < len(stems):
            raise ProbekitError(
                f"sample {int(i)} of split {split} is not in {root}: give the folder the cache was extracted from"
            )
        stem = stems[int(i)]
        with Image.open(masks[stem]) as mask:
            if mask.mode not in ("P", "L"):
                raise ProbekitError(
                    f"{masks[stem]} is a {mask.mode} image: masks must be palette (P) or 8-bit gray (L) PNGs of class "
                    "ids"
                )
            values = np.asarray(mask)  # a palette image's array holds the indices, not the colours
        with Image.open(images[stem]) as image:
            if image.size != (values.shape[1], values.shape[0]):
                raise ProbekitError(
                    f"{masks[stem]} is {values.shape[1]}x{values.shape[0]} but its image is "
                    f"{image.size[0]}x{image.size[1]}: masks must match their images"
                )
        out.append(values.astype(np.uint8))
    return out


def voc_palette() -> list[int]:
    """The PASCAL VOC colour map (256 RGB triples, flattened): class k's colour from the bits of k."""
    palette = []
    for k in range(256):
        red = green = blue = 0
        value = k
        for shift in range(7, -1, -1):
            red |= (value & 1) << shift
            green |= ((value >> 1) & 1) << shift
            blue |= ((value >> 2) & 1) << shift
            value >>= 3
        palette += [red, green, blue]
    return palette


def write_mask(path: Path, mask: np.ndarray) -> None:
    """A palette PNG of class ids with the VOC colour map."""
    image = Image.fromarray(np.asarray(mask, dtype=np.uint8), mode="P")
    image.putpalette(voc_palette())
    image.save(path)


def fashion_mosaic(
    images: np.ndarray, labels: np.ndarray, count: int, *, tile: int = 16, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """``count`` 2 x 2 mosaics from (N, H, W, 1) uint8 garments: images (count, 2t, 2t) uint8, masks (count, 2t, 2t)
    uint8.

    Tile k of mosaic m (k = 0 top-left, 1 top-right, 2 bottom-left, 3 bottom-right) is garment
    ``numpy.random.default_rng(seed).choice(N, (count, 4))[m, k]`` shrunk with Pillow's box filter.
    """
    if tile < 2:
        raise ProbekitError(f"--tile must be at least 2 pixels, got {tile}")
    if len(images) < 4:
        raise ProbekitError(f"a mosaic needs at least 4 source images, got {len(images)}")
    choice = np.random.default_rng(seed).choice(len(images), size=(count, 4), replace=True)
    out_images = np.zeros((count, 2 * tile, 2 * tile), dtype=np.uint8)
    out_masks = np.zeros((count, 2 * tile, 2 * tile), dtype=np.uint8)
    for m in range(count):
        for k in range(4):
            source = images[choice[m, k], ..., 0]
            small = np.asarray(Image.fromarray(source).resize((tile, tile), Image.Resampling.BOX))
            rows, cols = slice((k // 2) * tile, (k // 2 + 1) * tile), slice((k % 2) * tile, (k % 2 + 1) * tile)
            out_images[m, rows, cols] = small
            out_masks[m, rows, cols] = np.where(small >= FOREGROUND, int(labels[choice[m, k]]) + 1, 0)
    return out_images, out_masks


def write_fashion_mosaic(
    dataset: ImageDataset, out: str | os.PathLike, *, counts: dict[str, int], tile: int = 16, seed: int = 0
) -> Path:
    """Write a segmentation folder of Fashion-MNIST mosaics: ``counts[split]`` mosaics per split.

    Train mosaics are built from the even positions of the train split's garments, val mosaics
    from its odd positions, test mosaics from the test split's garments: no garment image is
    shared between the three splits.
    """
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise ProbekitError(f"{out} exists and is not empty: choose another --out or remove it")
    for split, count in counts.items():
        if split not in SPLITS:
            raise ProbekitError(f"unknown split {split!r}: use train, val or test")
        if count < 1:
            raise ProbekitError(f"--{split} must be at least 1 mosaic, got {count}")
        source = dataset.splits["test" if split == "test" else "train"]
        pixels, labels = source.read(slice(0, len(source.labels))), source.labels
        if split != "test":
            part = slice(0, None, 2) if split == "train" else slice(1, None, 2)
            pixels, labels = pixels[part], labels[part]
        if pixels.shape[-1] != 1:
            raise ProbekitError(
                f"mosaics are built from grayscale images; {dataset.name} has {pixels.shape[-1]} channels"
            )
        images, masks = fashion_mosaic(pixels, labels, count, tile=tile, seed=seed + SPLITS.index(split))
        (out / "images" / split).mkdir(parents=True, exist_ok=True)
        (out / "masks" / split).mkdir(parents=True, exist_ok=True)
        for m in range(count):
            Image.fromarray(images[m], mode="L").save(out / "images" / split / f"{m:06d}.png")
            write_mask(out / "masks" / split / f"{m:06d}.png", masks[m])
    (out / "classes.txt").write_text("\n".join(["background", *dataset.class_names]) + "\n")
    return out
