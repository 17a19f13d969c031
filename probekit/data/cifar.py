"""CIFAR-10 and CIFAR-100 from the official "python version" pickle batches.

The batches were pickled by Python 2: each is a dict whose ``data`` is a uint8 (N, 3072) array in
channel-major order (1024 red, 1024 green, 1024 blue values per image, each row-major 32x32).
Pickles can run arbitrary code, so they are read with an unpickler that resolves only the three
numpy globals those files reference; anything else is refused before it is imported.
"""

from __future__ import annotations

import os
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from probekit.core.errors import ProbekitError
from probekit.data.base import ImageDataset, ImageSplit

try:  # numpy >= 2 moved the array-pickle helper; files name the old place, numpy 2 pickles the new
    from numpy._core.multiarray import _reconstruct
except ImportError:  # pragma: no cover - numpy < 2
    from numpy.core.multiarray import _reconstruct

# Everything a genuine batch asks ``find_class`` for. Dicts, lists, ints and byte strings come from
# pickle opcodes, not globals; numpy pickles arrays via ``_reconstruct`` (never via
# ``copyreg._reconstructor``), so nothing else is needed.
_ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
}


@dataclass(frozen=True)
class CifarLayout:
    """File names and dict keys of one CIFAR variant."""

    folder: str  # conventional folder name inside the official archive
    train_files: tuple[str, ...]
    test_file: str
    meta_file: str
    labels_key: str
    names_key: str

    @property
    def files(self) -> tuple[str, ...]:
        return (*self.train_files, self.test_file, self.meta_file)


CIFAR10 = CifarLayout(
    folder="cifar-10-batches-py",
    train_files=tuple(f"data_batch_{i}" for i in range(1, 6)),
    test_file="test_batch",
    meta_file="batches.meta",
    labels_key="labels",
    names_key="label_names",
)
CIFAR100 = CifarLayout(
    folder="cifar-100-python",
    train_files=("train",),
    test_file="test",
    meta_file="meta",
    labels_key="fine_labels",
    names_key="fine_label_names",
)


def is_cifar10_folder(folder: Path) -> bool:
    return not _missing_files(folder, CIFAR10)


def is_cifar100_folder(folder: Path) -> bool:
    return not _missing_files(folder, CIFAR100)


def load_cifar10(folder: str | os.PathLike) -> ImageDataset:
    """Load a ``cifar-10-batches-py`` folder: 50000 train / 10000 test, 32x32x3 uint8, 10 classes."""
    return _load(Path(folder), CIFAR10, "cifar10")


def load_cifar100(folder: str | os.PathLike) -> ImageDataset:
    """Load a ``cifar-100-python`` folder: 50000 train / 10000 test, 32x32x3 uint8, 100 fine classes."""
    return _load(Path(folder), CIFAR100, "cifar100")


def read_batch(path: Path) -> dict[str, Any]:
    """Unpickle one batch file safely; keys are returned as str whether stored as bytes or str."""
    try:
        with open(path, "rb") as handle:
            content = _RestrictedUnpickler(handle, path).load()
    except ProbekitError:
        raise
    except Exception as exc:  # a damaged pickle fails with many exception types
        raise ProbekitError(
            f"cannot read CIFAR batch {path} ({exc}); the file is truncated or corrupt, re-extract it"
        ) from exc
    if not isinstance(content, dict):
        raise ProbekitError(f"{path} holds a {type(content).__name__}, not a CIFAR batch dict")
    return {_text(key): value for key, value in content.items()}


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, handle: Any, path: Path) -> None:
        # encoding="bytes": Python 2 str objects (keys, label names, pixel data) load as bytes
        super().__init__(handle, encoding="bytes")
        self._path = path

    def find_class(self, module: str, name: str) -> Any:
        allowed = _ALLOWED_GLOBALS.get((module, name))
        if allowed is None:
            raise ProbekitError(
                f"refusing to unpickle {module}.{name} from {self._path}: not a CIFAR batch, and "
                f"loading it could run code; replace it with the file from the official archive"
            )
        return allowed


def _load(folder: Path, layout: CifarLayout, name: str) -> ImageDataset:
    if missing := _missing_files(folder, layout):
        raise ProbekitError(f"{folder} is not a {layout.folder} folder: missing {', '.join(missing)}")
    meta = read_batch(folder / layout.meta_file)
    if layout.names_key not in meta:
        raise ProbekitError(f"{folder / layout.meta_file} has no {layout.names_key!r}; re-extract the archive")
    names = meta[layout.names_key]
    if not isinstance(names, list) or not all(isinstance(n, (bytes, str)) for n in names) or not names:
        raise ProbekitError(
            f"{folder / layout.meta_file}: {layout.names_key!r} is not a list of class names; re-extract the archive"
        )
    class_names = [_text(label_name) for label_name in names]
    train = [_read_images_and_labels(folder / f, layout, len(class_names)) for f in layout.train_files]
    test_images, test_labels = _read_images_and_labels(folder / layout.test_file, layout, len(class_names))
    train_images = np.concatenate([images for images, _ in train])
    train_labels = np.concatenate([labels for _, labels in train])
    splits = {
        "train": ImageSplit(train_images, train_labels, np.arange(len(train_labels), dtype=np.int64)),
        "test": ImageSplit(test_images, test_labels, np.arange(len(test_labels), dtype=np.int64)),
    }
    return ImageDataset(name, splits, class_names, str(folder), {"format": name, "test_split": "official"})


def _read_images_and_labels(path: Path, layout: CifarLayout, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    batch = read_batch(path)
    data, labels = batch.get("data"), batch.get(layout.labels_key)
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise ProbekitError(f"{path}: 'data' is not a uint8 (N, 3072) array; re-extract the archive")
    label_array = _label_array(labels)
    if label_array is None:
        raise ProbekitError(f"{path}: {layout.labels_key!r} is not a list of integer class ids; re-extract the archive")
    if len(label_array) != len(data):
        raise ProbekitError(
            f"{path}: {len(data)} images but {len(label_array)} {layout.labels_key!r}; re-extract the archive"
        )
    if len(label_array) and (label_array.min() < 0 or label_array.max() >= num_classes):
        bad = label_array.max() if label_array.max() >= num_classes else label_array.min()
        raise ProbekitError(
            f"{path}: label {bad} is not one of the {num_classes} classes (0..{num_classes - 1}) "
            f"named in the meta file; re-extract the archive"
        )
    # channel-major rows: (N, 3, 32, 32) then move channels last
    images = np.ascontiguousarray(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
    return images, label_array


def _label_array(labels: Any) -> np.ndarray | None:
    """int64 (N,) from a list (or array) of integer labels; None when it is anything else."""
    if not isinstance(labels, (list, tuple, np.ndarray)):
        return None
    if len(labels) == 0:
        return np.zeros(0, dtype=np.int64)
    try:
        array = np.asarray(labels)
    except ValueError:  # ragged nested lists
        return None
    if array.ndim != 1 or not np.issubdtype(array.dtype, np.integer):
        return None
    return array.astype(np.int64)


def _missing_files(folder: Path, layout: CifarLayout) -> list[str]:
    return [file_name for file_name in layout.files if not (folder / file_name).is_file()]


def _text(value: Any) -> Any:
    return value.decode("utf-8") if isinstance(value, bytes) else value
