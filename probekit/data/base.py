"""What every dataset loader returns: images (in memory or decoded on demand), int64 labels and
stable sample ids.

Small formats (IDX, CIFAR pickles, npz, digits) hold their pixels in one uint8 array. Image
folders, Tiny ImageNet and Hugging Face datasets hold a :class:`LazyImages` instead: where each
image is, never its pixels, so memory does not grow with the number of images. Consumers read
pixels per batch with :meth:`ImageSplit.read` and take subsets with :meth:`ImageSplit.take`;
both work the same for the two kinds. A split read :meth:`ImageSplit.at_size` brings each image to
one square size as it is decoded (:mod:`probekit.data.resize`), for datasets of mixed sizes.
"""

from __future__ import annotations

import copy
import dataclasses
from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

from probekit.core.errors import ProbekitError
from probekit.data.resize import RESAMPLE, resize_center_crop

Selection = slice | np.ndarray | Sequence[int]


class LazyImages(ABC):
    """Images decoded when read: ``rows`` locate each image in a store (file list, table).

    A subset shares the store and keeps only its rows, so subsets and shards cost O(rows).
    ``image_shape`` is the first image's; ``mixed_sizes`` says how sizes differ (e.g. "b.jpg is
    8x6 but a.jpg is 5x5") when the loader found images of several sizes, else None. Read without
    a size, an image whose shape is not ``image_shape`` is an error.
    """

    mixed_sizes: str | None = None

    def __init__(self, rows: np.ndarray, image_shape: tuple[int, int, int]) -> None:
        self.rows = np.asarray(rows, dtype=np.int64)
        self.image_shape = tuple(int(s) for s in image_shape)

    def __len__(self) -> int:
        return len(self.rows)

    def read(self, positions: np.ndarray, size: int | None = None) -> np.ndarray:
        """Decode the images at ``positions`` (into this object's rows): uint8 (k, H, W, C).

        With ``size``, each image is brought to (size, size) as it is decoded
        (:func:`probekit.data.resize.resize_center_crop`), so only one batch is ever held.
        """
        rows = self.rows[positions]
        height, width, channels = self.image_shape if size is None else (size, size, self.image_shape[2])
        out = np.empty((len(rows), height, width, channels), dtype=np.uint8)
        for i, (row, pixels) in enumerate(zip(rows, self.decode(rows), strict=True)):
            if size is not None:
                pixels = resize_center_crop(pixels, size)
            elif pixels.shape != self.image_shape:
                raise ProbekitError(
                    f"{self.describe(int(row))} is {pixels.shape[1]}x{pixels.shape[0]} but the "
                    f"dataset's images are {self.image_shape[1]}x{self.image_shape[0]}; for images of "
                    f"several sizes pass --image-size S (shorter side resized to S, centre S x S crop)"
                )
            out[i] = pixels
        return out

    def subset(self, positions: np.ndarray | slice) -> LazyImages:
        """The images at ``positions``, still lazy (the store is shared, not copied)."""
        view = copy.copy(self)
        view.rows = self.rows[positions]
        return view

    @abstractmethod
    def decode(self, rows: np.ndarray) -> Iterable[np.ndarray]:
        """uint8 (H, W, C) pixels of each store row, in order."""

    @abstractmethod
    def describe(self, row: int) -> str:
        """Where store row ``row`` comes from, for error messages (a path, a table row)."""


def _positions(selection: Selection, n: int) -> np.ndarray:
    if isinstance(selection, slice):
        return np.arange(n)[selection]
    positions = np.asarray(selection, dtype=np.int64)
    if positions.ndim != 1:
        raise ProbekitError(f"select images with a slice or a 1-d list of positions, got shape {positions.shape}")
    return positions


@dataclass
class ImageSplit:
    """One split (train, test, val) of an image dataset.

    Attributes:
        images: uint8 pixels in 0..255, shape (N, H, W, C) with C in {1, 3}; or a
            :class:`LazyImages` of N such images, decoded when read.
        labels: int64 class ids in 0..num_classes-1, shape (N,).
        index: int64 position of each image in the *original* split, shape (N,). It is the stable
            sample id: the feature extractor derives each sample's noise from it, so a subset keeps
            the ids of the images it keeps instead of renumbering them.
        size: when set, every image is read as (size, size): its shorter side resized to ``size``
            and its centre cropped (:mod:`probekit.data.resize`); an image already that size is
            read unchanged. Set it with :meth:`at_size`.
    """

    images: np.ndarray | LazyImages
    labels: np.ndarray
    index: np.ndarray
    size: int | None = None

    def __post_init__(self) -> None:
        images, labels, index = self.images, self.labels, self.index
        if isinstance(images, LazyImages):
            shape = (len(images), *images.image_shape)
        elif images.dtype != np.uint8 or images.ndim != 4:
            shape = None
        else:
            shape = images.shape
        if shape is None or len(shape) != 4 or shape[-1] not in (1, 3):
            raise ProbekitError(
                f"images must be uint8 (N, H, W, C) with C in {{1, 3}}, got "
                f"{getattr(images, 'dtype', type(images).__name__)} {shape or images.shape}; convert "
                f"them before building an ImageSplit"
            )
        for what, array in (("labels", labels), ("index", index)):
            if array.dtype != np.int64 or array.shape != (shape[0],):
                raise ProbekitError(
                    f"{what} must be int64 of shape ({shape[0]},) to match the images, got {array.dtype} {array.shape}"
                )

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def lazy(self) -> bool:
        """True when pixels are decoded on read rather than held in memory."""
        return isinstance(self.images, LazyImages)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(H, W, C) of every image as read, in pixels."""
        shape = self.images.image_shape if self.lazy else tuple(self.images.shape[1:])
        return shape if self.size is None else (self.size, self.size, shape[2])

    @property
    def mixed_sizes(self) -> str | None:
        """How the images' sizes differ when they do not share one and no ``size`` is set, else None."""
        return self.images.mixed_sizes if self.lazy and self.size is None else None

    def at_size(self, size: int) -> ImageSplit:
        """This split read at (size, size), each image resized and centre-cropped as it is read."""
        return dataclasses.replace(self, size=size)

    def read(self, selection: Selection) -> np.ndarray:
        """uint8 (k, H, W, C) pixels of the selected images (a slice or positions in this split).

        The one way to get pixels: in-memory splits index their array, lazy ones decode just
        these images. Read per batch; never select a whole large split at once.
        """
        if self.lazy:
            return self.images.read(_positions(selection, len(self)), self.size)
        pixels = self.images[selection]
        if self.size is None or pixels.shape[1:3] == (self.size, self.size):
            return pixels
        out = np.empty((len(pixels), self.size, self.size, pixels.shape[3]), dtype=np.uint8)
        for i, image in enumerate(pixels):
            out[i] = resize_center_crop(image, self.size)
        return out

    def take(self, selection: Selection) -> ImageSplit:
        """The selected images as a split that keeps their labels and sample ids (lazy stays lazy)."""
        if isinstance(selection, slice):
            positions: slice | np.ndarray = selection
        else:
            positions = _positions(selection, len(self))
        images = self.images.subset(positions) if self.lazy else self.images[positions]
        return ImageSplit(images, self.labels[positions], self.index[positions], self.size)


@dataclass
class ImageDataset:
    """A labelled image dataset with a train and a test split (and optionally a val split).

    Attributes:
        name: what the user asked for, e.g. "fashion-mnist", "cifar10", or the path they gave.
        splits: always has "train" and "test"; "val" where the source ships its own validation
            split besides a test split.
        class_names: the name of class id ``i`` is ``class_names[i]``.
        source: where the data was read from (a path, or the library that bundled it).
        info: provenance that feature caches record, e.g. ``{"test_split": "official"}`` or
            ``{"test_split": "holdout", "test_fraction": 0.2, "holdout_seed": 0}``.
    """

    name: str
    splits: dict[str, ImageSplit]
    class_names: list[str]
    source: str
    info: dict[str, object] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for required in ("train", "test"):
            if required not in self.splits:
                raise ProbekitError(f"dataset {self.name!r} has no {required!r} split")
        for split_name, split in self.splits.items():
            if len(split) == 0:
                raise ProbekitError(f"dataset {self.name!r}: the {split_name!r} split is empty; add images to it")
            low, high = int(split.labels.min()), int(split.labels.max())
            if low < 0 or high >= len(self.class_names):
                raise ProbekitError(
                    f"dataset {self.name!r}: {split_name!r} labels span {low}..{high} but there are "
                    f"{len(self.class_names)} class names; the labels do not match the classes, fix "
                    f"one or the other"
                )

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


def sized_dataset(
    dataset: ImageDataset, image_size: int | None, model_size: int | None
) -> tuple[ImageDataset, dict | None]:
    """``dataset`` as it must be read at one image size, and a record of the resize (None: none).

    S is ``image_size`` when given (it then applies to every dataset), else the model's own input
    side, and only for datasets whose images do not share one size.

    Args:
        image_size: ``--image-size`` S in pixels: every image is decoded to S x S.
        model_size: the square input side the model declares (None where it has none); used
            only when ``image_size`` is None and the dataset's images do not share one size.
    """
    if image_size is not None and image_size < 1:
        raise ProbekitError(f"--image-size must be a positive number of pixels, got {image_size}")
    chosen_by = "--image-size"
    if image_size is None:
        mixed = next((split.mixed_sizes for split in dataset.splits.values() if split.mixed_sizes), None)
        if mixed is None:
            return dataset, None
        if model_size is None:
            raise ProbekitError(
                f"the images of {dataset.name} do not share one size ({mixed}) and the model declares no input "
                f"size; pass --image-size S to resize each image's shorter side to S and centre-crop S x S"
            )
        image_size, chosen_by = model_size, "model input size"
    splits = {name: split.at_size(image_size) for name, split in dataset.splits.items()}
    record = {
        "size": image_size,
        "resize": f"shorter side to {image_size}, {RESAMPLE} (Pillow, antialiased)",
        "crop": "centre",
        "chosen_by": chosen_by,
    }
    return dataclasses.replace(dataset, splits=splits), record
