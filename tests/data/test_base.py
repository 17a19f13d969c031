import numpy as np
import pytest

from probekit.core.errors import ProbekitError
from probekit.data import ImageDataset, ImageSplit


def split(n=3, labels=None):
    labels = np.arange(n, dtype=np.int64) % 2 if labels is None else np.asarray(labels, np.int64)
    return ImageSplit(np.zeros((n, 2, 2, 1), np.uint8), labels, np.arange(n, dtype=np.int64))


def test_valid_dataset():
    dataset = ImageDataset("toy", {"train": split(), "test": split(2)}, ["a", "b"], "memory")
    assert dataset.num_classes == 2 and len(dataset.splits["train"]) == 3 and dataset.info == {}


@pytest.mark.parametrize(
    "images, labels, index, message",
    [
        (
            np.zeros((3, 2, 2), np.uint8),
            np.zeros(3, np.int64),
            np.arange(3),
            "images must be uint8",
        ),
        (
            np.zeros((3, 2, 2, 2), np.uint8),
            np.zeros(3, np.int64),
            np.arange(3),
            "images must be uint8",
        ),
        (
            np.zeros((3, 2, 2, 1), np.float32),
            np.zeros(3, np.int64),
            np.arange(3),
            "images must be uint8",
        ),
        (
            np.zeros((3, 2, 2, 1), np.uint8),
            np.zeros(2, np.int64),
            np.arange(3),
            "labels must be int64",
        ),
        (
            np.zeros((3, 2, 2, 1), np.uint8),
            np.zeros(3, np.int32),
            np.arange(3),
            "labels must be int64",
        ),
        (
            np.zeros((3, 2, 2, 1), np.uint8),
            np.zeros(3, np.int64),
            np.arange(4),
            "index must be int64",
        ),
    ],
)
def test_split_checks_dtypes_and_shapes(images, labels, index, message):
    with pytest.raises(ProbekitError, match=message):
        ImageSplit(images, labels, index.astype(np.int64))


def test_dataset_needs_train_and_test():
    with pytest.raises(ProbekitError, match="no 'test' split"):
        ImageDataset("toy", {"train": split()}, ["a", "b"], "memory")


def test_labels_must_fit_the_class_names():
    with pytest.raises(ProbekitError, match="labels span 0..2 but there are 2 class names"):
        ImageDataset("toy", {"train": split(labels=[0, 1, 2]), "test": split()}, ["a", "b"], "memory")


def test_empty_split():
    with pytest.raises(ProbekitError, match="'test' split is empty"):
        ImageDataset("toy", {"train": split(), "test": split(0)}, ["a", "b"], "memory")
