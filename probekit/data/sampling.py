"""Class-stratified, seeded selection of samples: subsets of a split and train/test holdouts.

Both draw, per class, a number of samples proportional to the class's frequency (largest-remainder
rounding, so totals are exact), pick which samples with ``numpy.random.default_rng(seed)``, and
keep the chosen samples in their original order. The same inputs always give the same selection.
"""

from __future__ import annotations

import numpy as np

from probekit.data.base import ImageSplit, LazyImages
from probekit.errors import ProbekitError


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
    chosen = _stratified_choice(split.labels, limit, seed, keep_one_out=False)
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
    is_test = _stratified_choice(labels, num_test, seed, keep_one_out=True)
    everything = ImageSplit(images, labels, np.arange(len(labels), dtype=np.int64))
    return everything.take(np.flatnonzero(~is_test)), everything.take(np.flatnonzero(is_test))


def _stratified_choice(
    labels: np.ndarray, total: int, seed: int, *, keep_one_out: bool
) -> np.ndarray:
    """Boolean mask choosing ``total`` samples, stratified by label.

    With ``keep_one_out`` each class leaves at least one sample unchosen (a holdout must leave
    every class in train).
    """
    classes, counts = np.unique(labels, return_counts=True)
    caps = counts - 1 if keep_one_out else counts
    per_class = _largest_remainder(counts, total, caps)
    rng = np.random.default_rng(seed)
    chosen = np.zeros(len(labels), dtype=bool)
    for label, k in zip(classes, per_class, strict=True):
        members = np.flatnonzero(labels == label)
        chosen[rng.permutation(members)[:k]] = True
    return chosen


def _largest_remainder(counts: np.ndarray, total: int, caps: np.ndarray) -> np.ndarray:
    """Split ``total`` over classes proportionally to ``counts``, no class above its cap.

    Each class gets the floor of its exact quota; the leftover goes one at a time to the classes
    with the largest fractional parts (ties: lower class first), skipping classes at their cap.
    """
    quotas = total * counts / counts.sum()
    allocation = np.minimum(np.floor(quotas).astype(np.int64), caps)
    order = np.argsort(-(quotas - np.floor(quotas)), kind="stable")
    while allocation.sum() < total:  # terminates: callers ensure total <= caps.sum()
        for c in order:
            if allocation.sum() == total:
                break
            if allocation[c] < caps[c]:
                allocation[c] += 1
    return allocation
