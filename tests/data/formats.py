"""Writers for tiny datasets in the real on-disk formats, used by the data tests.

Independent of probekit: they follow the published format descriptions, so a loader bug is not
mirrored here.
"""

from __future__ import annotations

import gzip
import io
import pickle
import struct
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image


def write_idx(path: Path, array: np.ndarray) -> Path:
    """An IDX file of unsigned bytes; gzipped when ``path`` ends in .gz."""
    header = struct.pack(">I", 0x0800 | array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    raw = header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()
    path.write_bytes(gzip.compress(raw) if path.suffix == ".gz" else raw)
    return path


def write_idx_folder(
    folder: Path,
    rng: np.random.Generator,
    n_train: int = 7,
    n_test: int = 4,
    height: int = 6,
    width: int = 5,
    gz: bool = True,
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The four (Fashion-)MNIST files; returns {split: (images (N, H, W), labels)}."""
    folder.mkdir(parents=True, exist_ok=True)
    suffix = ".gz" if gz else ""
    written = {}
    for split, prefix, n in (("train", "train", n_train), ("test", "t10k", n_test)):
        images = rng.integers(0, 256, size=(n, height, width), dtype=np.uint8)
        labels = rng.integers(0, 10, size=n, dtype=np.uint8)
        write_idx(folder / f"{prefix}-images-idx3-ubyte{suffix}", images)
        write_idx(folder / f"{prefix}-labels-idx1-ubyte{suffix}", labels)
        written[split] = (images, labels)
    return written


class Python2Pickler(pickle._Pickler):
    """Pickles the way Python 2's cPickle did for the CIFAR batches (protocol 2).

    Python 3 pickles bytes at protocol 2 through ``_codecs.encode``; Python 2 wrote its ``str``
    objects with the BINSTRING opcodes, which ``pickle.load(encoding="bytes")`` reads as bytes.
    """

    dispatch = pickle._Pickler.dispatch.copy()

    def save_python2_str(self, obj: bytes | str) -> None:
        data = obj.encode("ascii") if isinstance(obj, str) else obj
        if len(data) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(data)]) + data)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(data)) + data)
        self.memoize(obj)

    dispatch[bytes] = save_python2_str
    dispatch[str] = save_python2_str


def python2_pickle(obj: Any) -> bytes:
    buffer = io.BytesIO()
    Python2Pickler(buffer, protocol=2).dump(obj)
    # numpy of that era lived at numpy.core; numpy 2 calls it numpy._core
    return buffer.getvalue().replace(b"cnumpy._core.multiarray\n", b"cnumpy.core.multiarray\n")


def cifar_rows(images: np.ndarray) -> np.ndarray:
    """(N, 32, 32, 3) -> the (N, 3072) rows of a CIFAR batch: all red, then green, then blue."""
    return np.stack([np.concatenate([img[:, :, c].ravel() for c in range(3)]) for img in images])


def write_cifar10(
    folder: Path, rng: np.random.Generator, per_batch: int = 3, n_test: int = 4
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """A cifar-10-batches-py folder; returns {split: (images (N, 32, 32, 3), labels)}."""
    folder.mkdir(parents=True, exist_ok=True)
    train_images, train_labels = [], []
    for i in range(1, 6):
        images = rng.integers(0, 256, size=(per_batch, 32, 32, 3), dtype=np.uint8)
        labels = [int(v) for v in rng.integers(0, 10, size=per_batch)]
        batch = {
            b"batch_label": f"training batch {i} of 5".encode(),
            b"labels": labels,
            b"data": cifar_rows(images),
            b"filenames": [b"x.png"] * per_batch,
        }
        (folder / f"data_batch_{i}").write_bytes(python2_pickle(batch))
        train_images.append(images)
        train_labels += labels
    test_images = rng.integers(0, 256, size=(n_test, 32, 32, 3), dtype=np.uint8)
    test_labels = [int(v) for v in rng.integers(0, 10, size=n_test)]
    test = {
        b"batch_label": b"testing batch 1 of 1",
        b"labels": test_labels,
        b"data": cifar_rows(test_images),
        b"filenames": [b"y.png"] * n_test,
    }
    (folder / "test_batch").write_bytes(python2_pickle(test))
    meta = {
        b"num_cases_per_batch": per_batch,
        b"label_names": [name.encode() for name in CIFAR10_NAMES],
        b"num_vis": 3072,
    }
    (folder / "batches.meta").write_bytes(python2_pickle(meta))
    return {
        "train": (np.concatenate(train_images), np.array(train_labels)),
        "test": (test_images, np.array(test_labels)),
    }


CIFAR10_NAMES = [
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
]


def write_cifar100(
    folder: Path, rng: np.random.Generator, n_train: int = 6, n_test: int = 3
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """A cifar-100-python folder; returns {split: (images, fine labels)}."""
    folder.mkdir(parents=True, exist_ok=True)
    written = {}
    for split, n in (("train", n_train), ("test", n_test)):
        images = rng.integers(0, 256, size=(n, 32, 32, 3), dtype=np.uint8)
        fine = [int(v) for v in rng.integers(0, 100, size=n)]
        batch = {
            b"filenames": [b"z.png"] * n,
            b"batch_label": split.encode(),
            b"fine_labels": fine,
            b"coarse_labels": [v // 5 for v in fine],
            b"data": cifar_rows(images),
        }
        (folder / split).write_bytes(python2_pickle(batch))
        written[split] = (images, np.array(fine))
    meta = {
        b"fine_label_names": [f"fine_{i}".encode() for i in range(100)],
        b"coarse_label_names": [f"coarse_{i}".encode() for i in range(20)],
    }
    (folder / "meta").write_bytes(python2_pickle(meta))
    return written


def write_image(path: Path, pixels: np.ndarray) -> Path:
    """Save uint8 (H, W) or (H, W, 3) pixels; the format follows the suffix."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fmt = {".jpeg": "JPEG", ".jpg": "JPEG", ".png": "PNG", ".bmp": "BMP", ".webp": "WEBP"}[path.suffix.lower()]
    options = {"quality": 95} if fmt == "JPEG" else {"lossless": True} if fmt == "WEBP" else {}
    Image.fromarray(pixels).save(path, format=fmt, **options)
    return path


# Tiny ImageNet. Deliberately not sorted: class ids follow the order of wnids.txt.
TINY_WNIDS = ["n03000000", "n01000000", "n02000000"]
TINY_WORDS = {
    "n01000000": "goldfish, Carassius auratus",
    "n02000000": "tabby, tabby cat",
    "n03000000": "school bus",
    "n09999999": "unused, other",
}
# (file, wnid, colour) of the val images, in val_annotations.txt order
TINY_VAL = [
    ("val_0.JPEG", "n02000000", (10, 200, 30)),
    ("val_1.JPEG", "n03000000", (250, 250, 5)),
    ("val_2.JPEG", "n01000000", (90, 90, 90)),
]


def tiny_colour(class_id: int, i: int) -> tuple[int, int, int]:
    """Constant colour of train image i of class class_id in the fake Tiny ImageNet."""
    return (40 * class_id + 20, 100 + 50 * i, 200 - 60 * class_id)


def write_tiny_imagenet(folder: Path) -> Path:
    """3 classes x 2 train JPEGs of constant colour (one grayscale file), 3 val JPEGs."""
    folder.mkdir(parents=True)
    (folder / "wnids.txt").write_text("\n".join(TINY_WNIDS) + "\n")
    (folder / "words.txt").write_text("".join(f"{w}\t{n}\n" for w, n in TINY_WORDS.items()))
    for class_id, wnid in enumerate(TINY_WNIDS):
        (folder / "train" / wnid).mkdir(parents=True)
        (folder / "train" / wnid / f"{wnid}_boxes.txt").write_text("")
        for i in range(2):
            pixels = np.full((64, 64, 3), tiny_colour(class_id, i), np.uint8)
            if (class_id, i) == (1, 1):
                pixels = np.full((64, 64), 77, np.uint8)  # grayscale JPEGs exist in the real set
            write_image(folder / "train" / wnid / "images" / f"{wnid}_{i}.JPEG", pixels)
    for file_name, _, colour in TINY_VAL:
        write_image(folder / "val" / "images" / file_name, np.full((64, 64, 3), colour, np.uint8))
    (folder / "val" / "val_annotations.txt").write_text("".join(f"{f}\t{w}\t0\t0\t63\t63\n" for f, w, _ in TINY_VAL))
    return folder
