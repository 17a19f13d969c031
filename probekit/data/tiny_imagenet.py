"""Tiny ImageNet (200 classes, 64x64 RGB) from the official ``tiny-imagenet-200`` folder.

Layout::

    wnids.txt                     one WordNet id per line; this order defines class ids
    words.txt                     wnid <TAB> "name, synonym, ..."  (optional here; names fall back to wnids)
    train/<wnid>/images/*.JPEG    500 per class
    val/images/*.JPEG             50 per class, labelled by
    val/val_annotations.txt       file name <TAB> wnid <TAB> bounding box ...

The train folder is the train split and val is the test split (the official test set has no
labels). Train images are ordered by class, then by file name; val images follow
``val_annotations.txt``. Some JPEGs are grayscale, so everything is converted to RGB. Pixels are
decoded per batch when a split is read; every image must have the size of the first train image
(64x64 in the official archive) unless the data are read at one size (``--image-size``).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from probekit.core.errors import ProbekitError
from probekit.data.base import ImageDataset, ImageSplit
from probekit.data.images import FileImages, image_header

FOLDER = "tiny-imagenet-200"
_JPEG_SUFFIXES = (".jpeg", ".jpg")


def is_tiny_imagenet_folder(folder: Path) -> bool:
    return (folder / "wnids.txt").is_file() and (folder / "train").is_dir()


def load_tiny_imagenet(folder: str | os.PathLike) -> ImageDataset:
    """Load a ``tiny-imagenet-200`` folder: 100000 train / 10000 val-as-test, 64x64x3 uint8."""
    folder = Path(folder)
    wnids = _read_wnids(folder)
    class_ids = {wnid: i for i, wnid in enumerate(wnids)}
    train_paths, train_labels = _train_files(folder, class_ids)
    val_paths, val_labels = _val_files(folder, class_ids)
    width, height = image_header(train_paths[0])[1]
    splits = {
        "train": _split(train_paths, train_labels, (height, width, 3)),
        "test": _split(val_paths, val_labels, (height, width, 3)),
    }
    return ImageDataset(
        "tiny-imagenet",
        splits,
        _class_names(folder, wnids),
        str(folder),
        {"format": "tiny-imagenet", "test_split": "official", "test_folder": "val"},
    )


def _read_wnids(folder: Path) -> list[str]:
    path = folder / "wnids.txt"
    if not path.is_file():
        raise ProbekitError(f"{folder} has no wnids.txt; point at the extracted {FOLDER} folder")
    wnids = [line.strip() for line in _read_text(path).splitlines() if line.strip()]
    if not wnids or len(set(wnids)) != len(wnids):
        raise ProbekitError(f"{path} must list each class wnid once; re-extract the archive")
    return wnids


def _class_names(folder: Path, wnids: list[str]) -> list[str]:
    """First comma-separated name of each wnid in words.txt (the wnid itself where not listed)."""
    names: dict[str, str] = {}
    words = folder / "words.txt"
    if words.is_file():
        for line in _read_text(words).splitlines():
            wnid, _, text = line.partition("\t")
            names[wnid.strip()] = text.split(",")[0].strip()
    return [names.get(wnid) or wnid for wnid in wnids]


def _train_files(folder: Path, class_ids: dict[str, int]) -> tuple[list[Path], list[int]]:
    train = folder / "train"
    unknown = sorted(d.name for d in train.iterdir() if d.is_dir() and d.name not in class_ids)
    if unknown:
        raise ProbekitError(f"{train} has folder {unknown[0]} whose wnid is not in wnids.txt; the archive is mixed up")
    paths: list[Path] = []
    labels: list[int] = []
    for wnid, class_id in class_ids.items():
        image_dir = train / wnid / "images"
        files = (
            sorted(p for p in image_dir.glob("*") if p.suffix.lower() in _JPEG_SUFFIXES) if image_dir.is_dir() else []
        )
        if not files:
            raise ProbekitError(f"no JPEGs in {image_dir} for class {wnid}; re-extract the archive")
        paths += files
        labels += [class_id] * len(files)
    return paths, labels


def _val_files(folder: Path, class_ids: dict[str, int]) -> tuple[list[Path], list[int]]:
    annotations = folder / "val" / "val_annotations.txt"
    image_dir = folder / "val" / "images"
    if not annotations.is_file():
        raise ProbekitError(
            f"{annotations} is missing, so the val (test) images have no labels; re-extract the archive"
        )
    paths: list[Path] = []
    labels: list[int] = []
    for line_number, line in enumerate(_read_text(annotations).splitlines(), start=1):
        if not line.strip():
            continue
        file_name, _, rest = line.partition("\t")
        wnid = rest.split("\t")[0].strip()
        if wnid not in class_ids:
            raise ProbekitError(f"{annotations} line {line_number}: wnid {wnid!r} is not in wnids.txt")
        paths.append(image_dir / file_name.strip())
        labels.append(class_ids[wnid])
    if not paths:
        raise ProbekitError(f"{annotations} lists no images; re-extract the archive")
    listed = {p.name for p in paths}
    on_disk = (
        {p.name for p in image_dir.glob("*") if p.suffix.lower() in _JPEG_SUFFIXES} if image_dir.is_dir() else set()
    )
    if missing := sorted(listed - on_disk):
        raise ProbekitError(
            f"{annotations} labels {missing[0]} but {image_dir} has no such image; re-extract the archive"
        )
    if unlabelled := sorted(on_disk - listed):
        raise ProbekitError(f"{image_dir / unlabelled[0]} has no line in {annotations}; labels and images do not match")
    return paths, labels


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ProbekitError(
            f"cannot read {path} as text ({exc}); the file is corrupt or unreadable, re-extract the archive"
        ) from exc


def _split(paths: list[Path], labels: list[int], shape: tuple[int, int, int]) -> ImageSplit:
    return ImageSplit(
        FileImages(paths, "RGB", shape),
        np.asarray(labels, dtype=np.int64),
        np.arange(len(labels), dtype=np.int64),
    )
