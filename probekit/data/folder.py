"""A folder of class sub-folders, the layout of torchvision's ImageFolder.

Either ``root/<class>/**/*.png`` (one pool, split into train/test by a stratified seeded holdout)
or ``root/train/<class>/...`` with ``root/test/<class>/...`` (``val`` is accepted for ``test``).
Class ids follow the sorted sub-folder names; images are ordered by class, then by path. Images
are read as grayscale (C=1) when every file is grayscale, else as RGB (C=3). Loading reads file
headers only; pixels are decoded per batch when a split is read (:class:`FileImages`). Images may
differ in size: such a dataset is read at one size (:mod:`probekit.data.resize`).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from probekit.core.errors import ProbekitError
from probekit.data.base import ImageDataset, ImageSplit
from probekit.data.images import IMAGE_SUFFIXES, FileImages, is_image_file, scan_images
from probekit.data.sampling import holdout_split

_TEST_FOLDERS = ("test", "val")


def load_folder(root: str | os.PathLike, *, test_fraction: float = 0.2, seed: int = 0) -> ImageDataset:
    """Load an image folder; ``test_fraction`` and ``seed`` apply only when it has no test folder."""
    root = Path(root)
    if not root.is_dir():
        raise ProbekitError(f"{root} is not a folder of class sub-folders")
    test_dir = next((root / name for name in _TEST_FOLDERS if (root / name).is_dir()), None)
    if (root / "train").is_dir() and test_dir is not None:
        return _load_train_test(root, test_dir)
    for name in ("train", *_TEST_FOLDERS):
        # Without this, a lone train/ (or test/) of class folders would load as one class.
        if _holds_class_folders(root / name):
            raise ProbekitError(
                f"{root / name} holds class folders but its train/test partner is missing; add it, "
                f"or load {root / name} itself to split it by holdout"
            )
    return _load_pool(root, test_fraction, seed)


def _load_train_test(root: Path, test_dir: Path) -> ImageDataset:
    class_names = _class_names(root / "train")
    train_paths, train_labels = _scan(root / "train", class_names)
    unknown = sorted(set(_class_names(test_dir)) - set(class_names))
    if unknown:
        raise ProbekitError(f"{test_dir / unknown[0]} is a class with no folder in {root / 'train'}; add or remove it")
    test_paths, test_labels = _scan(test_dir, class_names)
    mode, shape, mixed = scan_images(train_paths + test_paths)
    splits = {
        "train": ImageSplit(
            FileImages(train_paths, mode, shape, mixed_sizes=mixed),
            train_labels,
            np.arange(len(train_labels), dtype=np.int64),
        ),
        "test": ImageSplit(
            FileImages(test_paths, mode, shape, mixed_sizes=mixed),
            test_labels,
            np.arange(len(test_labels), dtype=np.int64),
        ),
    }
    info: dict[str, object] = {
        "format": "folder",
        "test_split": "official",
        "test_folder": test_dir.name,
    }
    return ImageDataset(root.name, splits, class_names, str(root), info)


def _load_pool(root: Path, test_fraction: float, seed: int) -> ImageDataset:
    class_names = _class_names(root)
    paths, labels = _scan(root, class_names)
    mode, shape, mixed = scan_images(paths)
    train, test = holdout_split(FileImages(paths, mode, shape, mixed_sizes=mixed), labels, test_fraction, seed)
    info: dict[str, object] = {
        "format": "folder",
        "test_split": "holdout",
        "test_fraction": test_fraction,
        "holdout_seed": seed,
    }
    return ImageDataset(root.name, {"train": train, "test": test}, class_names, str(root), info)


def _holds_class_folders(folder: Path) -> bool:
    """A split folder has sub-folders and no images of its own; a class folder has images."""
    if not folder.is_dir():
        return False
    children = list(folder.iterdir())
    return any(c.is_dir() for c in children) and not any(is_image_file(c) for c in children)


def _class_names(folder: Path) -> list[str]:
    children = list(folder.iterdir())
    names = sorted(d.name for d in children if d.is_dir() and not d.name.startswith("."))
    loose = sorted(c.name for c in children if is_image_file(c))
    if names and loose:
        # Images beside the class folders would be silently left out of the dataset.
        raise ProbekitError(
            f"{folder} has {len(loose)} image(s) directly in it (e.g. {loose[0]}) beside its class "
            f"folders; move each into {folder}/<class>/ or out of the dataset"
        )
    if not names:
        raise ProbekitError(
            f"{folder} has no class sub-folders; expected {folder}/<class>/<image> "
            f"(image types: {', '.join(sorted(IMAGE_SUFFIXES))})"
        )
    return names


def _scan(folder: Path, class_names: list[str]) -> tuple[list[Path], np.ndarray]:
    """Image paths under ``folder/<class>`` for the classes that have a folder there, and class ids."""
    paths: list[Path] = []
    labels: list[int] = []
    for class_id, name in enumerate(class_names):
        if not (folder / name).is_dir():
            continue  # a test folder may lack a class; train folders are scanned from their own names
        files = sorted(p for p in (folder / name).rglob("*") if is_image_file(p))
        if not files:
            raise ProbekitError(f"class folder {folder / name} has no images; add some or remove the folder")
        paths += files
        labels += [class_id] * len(files)
    return paths, np.asarray(labels, dtype=np.int64)
