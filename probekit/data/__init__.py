"""Datasets as uint8 image arrays with labels and stable sample ids, and per-batch model fitting.

``load_dataset("cifar10")`` (or a path) returns an :class:`ImageDataset`; ``stratified_subset``
takes a seeded, class-balanced subset that keeps sample ids; ``fit_images`` turns a batch into the
float tensor a network expects.
"""

from probekit.data.base import ImageDataset, ImageSplit
from probekit.data.registry import list_datasets, load_dataset
from probekit.data.sampling import holdout_split, stratified_subset
from probekit.data.transforms import fit_images

__all__ = [
    "ImageDataset",
    "ImageSplit",
    "fit_images",
    "holdout_split",
    "list_datasets",
    "load_dataset",
    "stratified_subset",
]
