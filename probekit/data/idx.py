"""MNIST and Fashion-MNIST from the original IDX files (gzipped or not).

IDX layout: a 4-byte big-endian magic ``0x000008NN`` (0x08 = unsigned bytes, NN = number of
dimensions), NN big-endian uint32 dimension sizes, then the row-major uint8 payload. Local files
are validated structurally only, because Debian recompressed its copies (their .gz MD5s differ from
upstream's); downloaded files are also checked against the upstream MD5s below.
"""

from __future__ import annotations

import gzip
import math
import os
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from probekit.core.errors import ProbekitError
from probekit.data.base import ImageDataset, ImageSplit
from probekit.data.download import download_verified
from probekit.data.locations import candidate_dirs, download_dir, find_dataset_dir


@dataclass(frozen=True)
class IdxSource:
    """An upstream mirror: ``base_url + file name`` for each file, and each .gz's MD5."""

    base_url: str
    md5: dict[str, str]
    class_names: tuple[str, ...]


SOURCES: dict[str, IdxSource] = {
    "fashion-mnist": IdxSource(
        base_url="http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
        md5={
            "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
            "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
            "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
            "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
        },
        class_names=(
            "T-shirt/top",
            "Trouser",
            "Pullover",
            "Dress",
            "Coat",
            "Sandal",
            "Shirt",
            "Sneaker",
            "Bag",
            "Ankle boot",
        ),
    ),
    "mnist": IdxSource(
        base_url="https://ossci-datasets.s3.amazonaws.com/mnist/",
        md5={
            "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
            "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
            "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
            "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
        },
        class_names=tuple(str(digit) for digit in range(10)),
    ),
}

# split -> (images file, labels file), without the optional ".gz"
SPLIT_FILES: dict[str, tuple[str, str]] = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
_ALL_FILES = [stem for pair in SPLIT_FILES.values() for stem in pair]
_REDOWNLOAD = "delete it and run again to re-download it (or put a good copy in its place)"


def load_idx(name: str, *, root: str | os.PathLike | None = None, download: bool = True) -> ImageDataset:
    """Load ``"mnist"`` or ``"fashion-mnist"`` (60000 train / 10000 test, 28x28x1 uint8).

    Looks for the four IDX files as described in :mod:`probekit.data.locations`; if they are
    nowhere and ``download`` is set, fetches them into ``download_dir(name, root)``.
    """
    source = SOURCES[name]
    folder = find_dataset_dir(name, root, is_idx_folder)
    if folder is None and download:
        folder = _download(name, source, root)
    if folder is None:
        tried = ", ".join(str(d) for d in candidate_dirs(name, root))
        raise ProbekitError(
            f"{name} not found (looked in {tried}); put {', '.join(f + '.gz' for f in _ALL_FILES)} "
            f"in one of them, or allow download=True"
        )
    splits = {split: _read_split(folder, *stems) for split, stems in SPLIT_FILES.items()}
    for split_name, split in splits.items():
        if len(split) and split.labels.max() >= len(source.class_names):
            labels_file = _find_file(folder, SPLIT_FILES[split_name][1])
            raise ProbekitError(
                f"{labels_file}: label {split.labels.max()} is not a {name} class "
                f"(0..{len(source.class_names) - 1}); the file is not {name}'s, {_REDOWNLOAD}"
            )
    return ImageDataset(
        name,
        splits,
        list(source.class_names),
        str(folder),
        {"format": "idx", "test_split": "official"},
    )


def is_idx_folder(folder: Path) -> bool:
    """True when ``folder`` has all four IDX files (each gzipped or not)."""
    return all(_find_file(folder, stem) is not None for stem in _ALL_FILES)


def read_idx(path: Path, ndim: int) -> np.ndarray:
    """Read an unsigned-byte IDX file with ``ndim`` dimensions into a uint8 array of that shape."""
    raw = _read_bytes(path)
    header_bytes = 4 + 4 * ndim
    if len(raw) < header_bytes:
        raise ProbekitError(
            f"{path} is truncated: {len(raw)} bytes, not even the {header_bytes}-byte IDX header; {_REDOWNLOAD}"
        )
    magic = int.from_bytes(raw[:4], "big")
    expected_magic = 0x0800 | ndim
    if magic != expected_magic:
        raise ProbekitError(
            f"{path} is not an IDX file of {ndim}-d unsigned bytes (magic 0x{magic:08x}, expected "
            f"0x{expected_magic:08x}); check that it is the right file"
        )
    dims = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    if 0 in dims[1:]:
        raise ProbekitError(
            f"{path} has header dimensions {dims}, with an empty item size; the file is corrupt, {_REDOWNLOAD}"
        )
    expected = header_bytes + math.prod(dims)
    if len(raw) < expected:
        raise ProbekitError(
            f"{path} is truncated: its header ({dims}) promises {expected} bytes, found {len(raw)}; {_REDOWNLOAD}"
        )
    if len(raw) > expected:
        raise ProbekitError(
            f"{path} has {len(raw) - expected} bytes more than its header ({dims}) promises; "
            f"the file is corrupt, {_REDOWNLOAD}"
        )
    # copy(): frombuffer over bytes is read-only, and callers may want to modify the pixels
    return np.frombuffer(raw, dtype=np.uint8, offset=header_bytes).reshape(dims).copy()


def _read_split(folder: Path, images_stem: str, labels_stem: str) -> ImageSplit:
    images_path, labels_path = _find_file(folder, images_stem), _find_file(folder, labels_stem)
    images, labels = read_idx(images_path, ndim=3), read_idx(labels_path, ndim=1)
    if len(images) != len(labels):
        raise ProbekitError(
            f"{images_path} has {len(images)} images but {labels_path} has {len(labels)} labels; "
            f"the two files do not belong together, delete both and run again to re-download them"
        )
    return ImageSplit(images[..., np.newaxis], labels.astype(np.int64), np.arange(len(labels), dtype=np.int64))


def _find_file(folder: Path, stem: str) -> Path | None:
    for candidate in (folder / f"{stem}.gz", folder / stem):
        if candidate.is_file():
            return candidate
    return None


def _read_bytes(path: Path) -> bytes:
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as handle:
                return handle.read()
        return path.read_bytes()
    except PermissionError as exc:
        raise ProbekitError(f"cannot read {path}: permission denied; make it readable") from exc
    except (OSError, EOFError, zlib.error) as exc:  # BadGzipFile is an OSError
        raise ProbekitError(f"cannot read {path} ({exc}); the file is truncated or corrupt, {_REDOWNLOAD}") from exc


def _download(name: str, source: IdxSource, root: str | os.PathLike | None) -> Path:
    folder = download_dir(name, root)
    for file_name, md5 in source.md5.items():
        target = folder / file_name
        if _find_file(folder, file_name.removesuffix(".gz")) is None:
            try:
                download_verified(source.base_url + file_name, target, md5)
            except ProbekitError as exc:
                raise ProbekitError(f"{exc}; or put the four {name} .gz files in {folder} by hand") from exc
    return folder
