"""Class-stratified, seeded selection of samples: subsets of a split and train/test holdouts.

Both draw, per class, a number of samples proportional to the class's frequency (largest-remainder
rounding, so totals are exact), pick which samples with ``numpy.random.default_rng(seed)``, and
keep the chosen samples in their original order. The same inputs always give the same selection.
"""

from __future__ import annotations

import numpy as np

from probekit.core.errors import ProbekitError
from probekit.core.stratify import stratified_mask
from probekit.data.base import ImageSplit, LazyImages


def stratified_subset(split: ImageSplit, limit: int | None, seed: int) -> ImageSplit:
    """Keep ``limit`` images of ``split``, each class in proportion to its frequency.

    ``limit=None`` or ``limit >= len(split)`` returns ``split`` unchanged. The kept images stay in
    their original order and keep their ``index`` (sample id). Chosen from the labels alone: a
    lazy split stays lazy and no pixels are read.
    """
    if limit is None or limit >= len(split):
        return split
    if limit < 1:
        raise ProbekitError(f"subset limit must be a positive number of images, got {limit}")
    chosen = stratified_mask(split.labels, limit, seed, keep_one_out=False)
    return split.take(np.flatnonzero(chosen))


def holdout_split(
    images: np.ndarray | LazyImages, labels: np.ndarray, test_fraction: float, seed: int
) -> tuple[ImageSplit, ImageSplit]:
    """Split one labelled pool into (train, test) for datasets that ship without a test split.

    ``round(N * test_fraction)`` images go to test, stratified by class, but every class keeps at
    least one train image. ``index`` of both splits is the position in the original arrays.
    """
    if not 0.0 < test_fraction < 1.0:
        raise ProbekitError(f"test_fraction must be strictly between 0 and 1, got {test_fraction}")
    labels = np.asarray(labels, dtype=np.int64)
    num_test = int(round(len(labels) * test_fraction))
    num_classes_present = len(np.unique(labels))
    if num_test < 1 or len(labels) - num_test < num_classes_present:
        raise ProbekitError(
            f"cannot hold out {test_fraction:.0%} of {len(labels)} images as a test split with "
            f"{num_classes_present} classes; add images or change test_fraction"
        )
    is_test = stratified_mask(labels, num_test, seed, keep_one_out=True)
    everything = ImageSplit(images, labels, np.arange(len(labels), dtype=np.int64))
    return everything.take(np.flatnonzero(~is_test)), everything.take(np.flatnonzero(is_test))
