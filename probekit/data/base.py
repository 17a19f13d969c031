"""The in-memory form every dataset loader returns: uint8 images, int64 labels, stable sample ids."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from probekit.errors import ProbekitError


@dataclass
class ImageSplit:
    """One split (train or test) of an image dataset.

    Attributes:
        images: uint8 pixels in 0..255, shape (N, H, W, C) with C in {1, 3}.
        labels: int64 class ids in 0..num_classes-1, shape (N,).
        index: int64 position of each image in the *original* split, shape (N,). It is the stable
            sample id: the feature extractor derives each sample's noise from it, so a subset keeps
            the ids of the images it keeps instead of renumbering them.
    """

    images: np.ndarray
    labels: np.ndarray
    index: np.ndarray

    def __post_init__(self) -> None:
        images, labels, index = self.images, self.labels, self.index
        if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] not in (1, 3):
            raise ProbekitError(
                f"images must be uint8 (N, H, W, C) with C in {{1, 3}}, got {images.dtype} "
                f"{images.shape}; convert them before building an ImageSplit"
            )
        for what, array in (("labels", labels), ("index", index)):
            if array.dtype != np.int64 or array.shape != (len(images),):
                raise ProbekitError(
                    f"{what} must be int64 of shape ({len(images)},) to match the images, got "
                    f"{array.dtype} {array.shape}"
                )

    def __len__(self) -> int:
        return len(self.labels)


@dataclass
class ImageDataset:
    """A labelled image dataset with a train and a test split.

    Attributes:
        name: what the user asked for, e.g. "fashion-mnist", "cifar10", or the path they gave.
        splits: always has "train" and "test".
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
                raise ProbekitError(
                    f"dataset {self.name!r}: the {split_name!r} split is empty; add images to it"
                )
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
