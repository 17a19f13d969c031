"""Class-stratified, seeded choice of samples by label (numpy only).

Shared by dataset subsets and holdouts (:mod:`probekit.data.sampling`) and by the probes'
validation split (:mod:`probekit.evaluate.split`), so that every stratified choice in probekit
follows one rule: per class, a number of samples proportional to the class's frequency
(largest-remainder rounding, so totals are exact), chosen with ``numpy.random.default_rng(seed)``.
"""

from __future__ import annotations

import numpy as np


def stratified_mask(labels: np.ndarray, total: int, seed: int, *, keep_one_out: bool) -> np.ndarray:
    """Boolean mask choosing ``total`` samples, stratified by label.

    With ``keep_one_out`` each class leaves at least one sample unchosen (a holdout must leave
    every class in the remaining part). Callers ensure ``total`` is reachable under that cap.
    """
    labels = np.asarray(labels)
    classes, counts = np.unique(labels, return_counts=True)
    caps = counts - 1 if keep_one_out else counts
    per_class = largest_remainder(counts, total, caps)
    rng = np.random.default_rng(seed)
    chosen = np.zeros(len(labels), dtype=bool)
    for label, k in zip(classes, per_class, strict=True):
        members = np.flatnonzero(labels == label)
        chosen[rng.permutation(members)[:k]] = True
    return chosen


def largest_remainder(counts: np.ndarray, total: int, caps: np.ndarray) -> np.ndarray:
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
