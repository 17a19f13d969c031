"""Datasets as uint8 images (in memory, or decoded per batch) with labels and stable sample ids.

``load_dataset("cifar10")`` (or a path, ``hf:NAME``, ``hf-disk:PATH``) returns an
:class:`ImageDataset`; ``split.read(slice)`` gives a batch of pixels and ``split.take`` a subset
(lazy splits stay lazy); ``stratified_subset`` takes a seeded, class-balanced subset that keeps
sample ids; ``fit_images`` turns a batch into the float tensor a network expects.
"""

from probekit.data.base import ImageDataset, ImageSplit, LazyImages
from probekit.data.registry import list_datasets, load_dataset
from probekit.data.sampling import holdout_split, stratified_subset
from probekit.data.transforms import fit_images, fit_tensor

__all__ = [
    "ImageDataset",
    "ImageSplit",
    "LazyImages",
    "fit_images",
    "fit_tensor",
    "holdout_split",
    "list_datasets",
    "load_dataset",
    "stratified_subset",
]
