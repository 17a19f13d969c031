"""Keypoint pair folders: image pairs with corresponding keypoints, from SPair-71k, PF-Pascal or a known warp.

Layout of a pair folder::

    ROOT/images/{val,test}/NAME.png|jpg   the images of each split (sample id = position in sorted names)
    ROOT/pairs.npz                         for each split s in val, test:
        s_source, s_target   (P,) int64     sample ids of each pair's source and target image
        s_source_kps         (P, K, 2) f64  keypoints (x = column, y = row) in source-image pixels
        s_target_kps         (P, K, 2) f64  their ground-truth positions in the target image
        s_target_bbox        (P, 4) f64     target box [x1, y1, x2, y2]; NaN: none (PCK uses the image size)
        (a keypoint missing from a pair is NaN in both)

Coordinates are pixel indices as SPair-71k stores them and DIFT reads them: x = 3 is the fourth
column, whose centre lies 3.5 pixels from the left edge. The folder loads as an image dataset
(``probekit extract --data ROOT``), every image labelled 0, whose *train* split holds the val
pairs' images (nothing is trained on them: they are where the cell is chosen; an image dataset
always has a train split) and whose test split the test pairs' images. A folder without val
pairs cannot be extracted: write some, or choose on test knowingly with a val split of test pairs.

Writers: :func:`write_warp_pairs` (a random affine warp of each image, exact ground truth),
:func:`convert_spair` and :func:`convert_pf_pascal` (the published annotation layouts).
"""

from __future__ import annotations

import csv
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from scipy.ndimage import map_coordinates

from probekit.core.errors import ProbekitError
from probekit.data.base import ImageDataset, ImageSplit
from probekit.data.images import FileImages, is_image_file, scan_images
from probekit.data.segmentation import (
    FOREGROUND,  # the same garment threshold as the mosaics
)

SPLITS = ("val", "test")
#: the image-dataset split that holds each pair split's images
DATASET_SPLIT = {"val": "train", "test": "test"}


@dataclass
class PairSet:
    """The pairs of one split (shapes as in the module docstring)."""

    source: np.ndarray
    target: np.ndarray
    source_kps: np.ndarray
    target_kps: np.ndarray
    target_bbox: np.ndarray

    def __len__(self) -> int:
        return len(self.source)


def is_pair_folder(path: Path) -> bool:
    return path.is_dir() and (path / "images").is_dir() and (path / "pairs.npz").is_file()


def image_paths(root: Path, split: str) -> list[Path]:
    folder = root / "images" / split
    return sorted(p for p in folder.iterdir() if is_image_file(p)) if folder.is_dir() else []


def load_pair_folder(root: str | os.PathLike) -> ImageDataset:
    """The images of a pair folder as an :class:`ImageDataset` with val and test splits."""
    root = Path(root)
    paths = {split: image_paths(root, split) for split in SPLITS}
    for split, split_paths in paths.items():
        if not split_paths:
            raise ProbekitError(f"{root}/images/{split} has no images: a pair folder needs val and test pairs")
    mode, shape, mixed = scan_images([p for split_paths in paths.values() for p in split_paths])
    splits = {
        DATASET_SPLIT[split]: ImageSplit(
            FileImages(split_paths, mode, shape, mixed_sizes=mixed),
            np.zeros(len(split_paths), dtype=np.int64),
            np.arange(len(split_paths), dtype=np.int64),
        )
        for split, split_paths in paths.items()
    }
    return ImageDataset(root.name, splits, ["image"], str(root), {"format": "pair-folder"})


def read_pairs(root: str | os.PathLike, split: str) -> PairSet:
    """The pairs of ``split``, checked against the folder's images."""
    root = Path(root)
    path = root / "pairs.npz"
    if not path.is_file():
        raise ProbekitError(f"{path} is missing: write a pair folder with `probekit pairs`")
    with np.load(path, allow_pickle=False) as data:
        if f"{split}_source" not in data:
            raise ProbekitError(f"{path} has no {split} pairs")
        pairs = PairSet(
            *(
                np.asarray(data[f"{split}_{field}"])
                for field in ("source", "target", "source_kps", "target_kps", "target_bbox")
            )
        )
    n_images = len(image_paths(root, split))
    for name, ids in (("source", pairs.source), ("target", pairs.target)):
        if len(ids) and (ids.min() < 0 or ids.max() >= n_images):
            raise ProbekitError(
                f"{path}: a {split} pair's {name} image is not among the {n_images} images of images/{split}"
            )
    if pairs.source_kps.shape != pairs.target_kps.shape or pairs.source_kps.shape[0] != len(pairs.source):
        raise ProbekitError(
            f"{path}: {split} keypoint arrays do not match the pairs ({pairs.source_kps.shape}, "
            f"{pairs.target_kps.shape})"
        )
    return pairs


def write_pair_folder(root: str | os.PathLike, images: dict[str, list], pairs: dict[str, PairSet]) -> Path:
    """Write images (uint8 (H, W) / (H, W, 3) arrays, or paths of image files to copy) and pairs."""
    root = Path(root)
    if root.exists() and any(root.iterdir()):
        raise ProbekitError(f"{root} exists and is not empty: choose another --out or remove it")
    for split, split_images in images.items():
        folder = root / "images" / split
        folder.mkdir(parents=True, exist_ok=True)
        for i, image in enumerate(split_images):
            if isinstance(image, (str, Path)):
                shutil.copyfile(image, folder / f"{i:06d}{Path(image).suffix.lower()}")
            else:
                Image.fromarray(np.asarray(image, dtype=np.uint8)).save(folder / f"{i:06d}.png")
    arrays = {
        f"{split}_{field}": getattr(split_pairs, field)
        for split, split_pairs in pairs.items()
        for field in ("source", "target", "source_kps", "target_kps", "target_bbox")
    }
    np.savez_compressed(root / "pairs.npz", **arrays)
    return root


# ---------------------------------------------------------------------------------------- warps


def random_affine(
    rng: np.random.Generator, side: tuple[int, int], rotation: float, scale: float, shift: float
) -> tuple[np.ndarray, np.ndarray]:
    """(A (2, 2), b (2,)) of a random affine map p_t = A p_s + b on pixel-index (x, y) coordinates, about the centre.

    Rotation uniform in +-``rotation`` degrees, isotropic scale in [1 - scale, 1 + scale],
    translation uniform in +-``shift`` x side pixels.
    """
    angle = np.deg2rad(rng.uniform(-rotation, rotation))
    factor = rng.uniform(1 - scale, 1 + scale)
    matrix = factor * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    height, width = side
    centre = np.array([(width - 1) / 2, (height - 1) / 2])
    offset = rng.uniform(-shift, shift, size=2) * np.array([width, height])
    return matrix, centre - matrix @ centre + offset


def warp_image(image: np.ndarray, matrix: np.ndarray, offset: np.ndarray) -> np.ndarray:
    """uint8 (H, W) image warped by p_t = A p_s + b: target pixel p_t takes the source's bilinear value
    at A^-1 (p_t - b) (0 outside the source), rounded to uint8.
    """
    height, width = image.shape
    rows, cols = np.meshgrid(np.arange(height), np.arange(width), indexing="ij")
    target = np.stack([cols.reshape(-1), rows.reshape(-1)]).astype(np.float64)  # (2, HW) as (x, y)
    source = np.linalg.solve(matrix, target - offset[:, None])
    values = map_coordinates(image.astype(np.float64), [source[1], source[0]], order=1, mode="constant", cval=0.0)
    return np.clip(np.rint(values), 0, 255).astype(np.uint8).reshape(height, width)


def foreground_box(image: np.ndarray) -> np.ndarray:
    """[x1, y1, x2, y2] of the pixels >= FOREGROUND (x2, y2 one past the last), NaN when there are none."""
    rows, cols = np.nonzero(image >= FOREGROUND)
    if len(rows) == 0:
        return np.full(4, np.nan)
    return np.array([cols.min(), rows.min(), cols.max() + 1, rows.max() + 1], dtype=np.float64)


def warp_pairs(
    images: np.ndarray,
    *,
    keypoints: int = 8,
    rotation: float = 15.0,
    scale: float = 0.1,
    shift: float = 0.1,
    seed: int = 0,
) -> tuple[list[np.ndarray], PairSet]:
    """One pair per (H, W) uint8 image: (image, its warp); keypoints on the image's foreground pixels.

    Keypoint k of pair i is a distinct foreground pixel index (x, y) of the source; its ground
    truth is A (x, y) + b exactly. Keypoints whose ground truth falls outside the target image are
    NaN. Returns the images in pair order (source 2i, target 2i + 1) and the pairs.
    """
    rng = np.random.default_rng(seed)
    out_images, source_kps, target_kps, boxes = [], [], [], []
    for image in images:
        matrix, offset = random_affine(rng, image.shape, rotation, scale, shift)
        warped = warp_image(image, matrix, offset)
        rows, cols = np.nonzero(image >= FOREGROUND)
        chosen = (
            rng.choice(len(rows), size=min(keypoints, len(rows)), replace=False) if len(rows) else np.array([], int)
        )
        src = np.full((keypoints, 2), np.nan)
        src[: len(chosen)] = np.stack([cols[chosen], rows[chosen]], axis=1) if len(chosen) else np.empty((0, 2))
        trg = src @ matrix.T + offset
        height, width = image.shape
        outside = ~((trg[:, 0] >= 0) & (trg[:, 0] <= width - 1) & (trg[:, 1] >= 0) & (trg[:, 1] <= height - 1))
        src[outside], trg[outside] = np.nan, np.nan
        out_images += [image, warped]
        source_kps.append(src)
        target_kps.append(trg)
        boxes.append(foreground_box(warped))
    n = len(images)
    pairs = PairSet(
        np.arange(n, dtype=np.int64) * 2,
        np.arange(n, dtype=np.int64) * 2 + 1,
        np.stack(source_kps),
        np.stack(target_kps),
        np.stack(boxes),
    )
    return out_images, pairs


def write_warp_pairs(
    dataset: ImageDataset,
    out: str | os.PathLike,
    *,
    counts: dict[str, int],
    keypoints: int = 8,
    rotation: float = 15.0,
    scale: float = 0.1,
    shift: float = 0.1,
    seed: int = 0,
) -> Path:
    """A pair folder of warps of grayscale images: val pairs from the train split's first images, test
    pairs from the test split's (so no image is in both).
    """
    images, pairs = {}, {}
    for split, count in counts.items():
        source = dataset.splits["train" if split == "val" else "test"]
        if count < 1 or count > len(source.labels):
            raise ProbekitError(f"--{split} {count}: give 1..{len(source.labels)} pairs")
        pixels = source.read(slice(0, count))
        if pixels.shape[-1] != 1:
            raise ProbekitError(
                f"warp pairs are built from grayscale images; {dataset.name} has {pixels.shape[-1]} channels"
            )
        images[split], pairs[split] = warp_pairs(
            pixels[..., 0],
            keypoints=keypoints,
            rotation=rotation,
            scale=scale,
            shift=shift,
            seed=seed + SPLITS.index(split),
        )
    return write_pair_folder(out, images, pairs)


# ---------------------------------------------------------------------------- published datasets


def _pack(records: list[tuple[int, int, list, list, list | None]]) -> PairSet:
    """(source id, target id, source kps, target kps, target box or None) -> PairSet, NaN-padded."""
    width = max((len(r[2]) for r in records), default=0)
    src = np.full((len(records), width, 2), np.nan)
    trg = np.full((len(records), width, 2), np.nan)
    boxes = np.full((len(records), 4), np.nan)
    for i, (_, _, source_kps, target_kps, box) in enumerate(records):
        src[i, : len(source_kps)] = np.asarray(source_kps, dtype=np.float64).reshape(-1, 2)
        trg[i, : len(target_kps)] = np.asarray(target_kps, dtype=np.float64).reshape(-1, 2)
        if box is not None:
            boxes[i] = np.asarray(box, dtype=np.float64)
    return PairSet(
        np.array([r[0] for r in records], dtype=np.int64),
        np.array([r[1] for r in records], dtype=np.int64),
        src,
        trg,
        boxes,
    )


def _index_images(files: list[Path]) -> tuple[list[Path], dict[Path, int]]:
    unique = sorted(set(files))
    return unique, {path: i for i, path in enumerate(unique)}


def convert_spair(root: str | os.PathLike, out: str | os.PathLike, *, limit: int | None = None) -> Path:
    """SPair-71k (``PairAnnotation/{val,test}/*.json``, ``JPEGImages/<category>/<name>``) -> a pair folder.

    Each JSON gives ``src_imname``, ``trg_imname``, ``category``, ``src_kps`` / ``trg_kps``
    (lists of [x, y]) and ``trg_bndbox`` [x1, y1, x2, y2], the fields DIFT's evaluation reads.
    ``limit``: the first pairs of each split (by file name).
    """
    root = Path(root)
    images, pairs = {}, {}
    for split in SPLITS:
        folder = root / "PairAnnotation" / split
        files = sorted(folder.glob("*.json")) if folder.is_dir() else []
        if not files:
            if split == "test":
                raise ProbekitError(f"{folder} has no pair annotations: is {root} the SPair-71k folder?")
            continue
        entries = []
        for path in files[:limit]:
            try:
                data = json.loads(path.read_text())
                category = data["category"]
                source = root / "JPEGImages" / category / data["src_imname"]
                target = root / "JPEGImages" / category / data["trg_imname"]
                entries.append((source, target, data["src_kps"], data["trg_kps"], data["trg_bndbox"]))
            except (KeyError, json.JSONDecodeError) as err:
                raise ProbekitError(f"{path} is not an SPair-71k pair annotation ({err})") from err
        for source, target, *_ in entries:
            for image in (source, target):
                if not image.is_file():
                    raise ProbekitError(f"{image} is missing: the SPair-71k images go in JPEGImages/<category>/")
        unique, ids = _index_images([e[0] for e in entries] + [e[1] for e in entries])
        images[split] = unique
        pairs[split] = _pack([(ids[s], ids[t], sk, tk, box) for s, t, sk, tk, box in entries])
    return write_pair_folder(out, images, pairs)


def _coordinates(text: str) -> list[float]:
    return [float(v) for v in str(text).split(";") if v.strip()]


def convert_pf_pascal(root: str | os.PathLike, out: str | os.PathLike, *, limit: int | None = None) -> Path:
    """PF-Pascal (``{val,test}_pairs_pf_pascal.csv`` + ``JPEGImages/``) -> a pair folder.

    Each CSV row: ``source_image, target_image, class, XA, YA, XB, YB`` with the keypoints' x and y
    as ``;``-separated lists (A: source, B: target), as the published pair lists store them. The
    lists give no box, so PCK uses the target image's size.
    """
    root = Path(root)
    images, pairs = {}, {}
    for split in SPLITS:
        path = root / f"{split}_pairs_pf_pascal.csv"
        if not path.is_file():
            if split == "test":
                raise ProbekitError(f"{path} is missing: is {root} the PF-dataset-PASCAL folder with its pair lists?")
            continue
        with path.open(newline="") as f:
            rows = list(csv.DictReader(f))[:limit]
        entries = []
        for row in rows:
            try:
                xa, ya, xb, yb = (_coordinates(row[key]) for key in ("XA", "YA", "XB", "YB"))
                source, target = (_pf_image(root, row[key]) for key in ("source_image", "target_image"))
            except KeyError as err:
                raise ProbekitError(
                    f"{path} lacks column {err}: expected source_image,target_image,class,XA,YA,XB,YB"
                ) from err
            if not len(xa) == len(ya) == len(xb) == len(yb):
                raise ProbekitError(f"{path}: a row's XA, YA, XB, YB lists differ in length")
            entries.append((source, target, list(zip(xa, ya)), list(zip(xb, yb))))
        unique, ids = _index_images([e[0] for e in entries] + [e[1] for e in entries])
        images[split] = unique
        pairs[split] = _pack([(ids[s], ids[t], sk, tk, None) for s, t, sk, tk in entries])
    return write_pair_folder(out, images, pairs)


def _pf_image(root: Path, name: str) -> Path:
    """An image named in a pair list: relative to the dataset folder or its parent, or by file name in JPEGImages/."""
    for candidate in (root / name, root.parent / name, root / "JPEGImages" / Path(name).name):
        if candidate.is_file():
            return candidate
    raise ProbekitError(f"image {name} of the pair list is not in {root} (looked in JPEGImages/ too)")
