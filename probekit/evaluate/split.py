"""The validation split that every probe chooses on: class-stratified, seeded, taken from train."""

from __future__ import annotations

import numpy as np

from probekit.core.errors import ProbekitError
from probekit.core.stratify import stratified_mask


def stratified_val_split(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Hold ``round(N * fraction)`` train samples out for validation, stratified by class.

    Args:
        labels: int class ids of the train split, shape (N,).
        fraction: share of train to hold out, in [0, 1). 0 returns an empty validation part.
        seed: seed of the choice; the same labels, fraction and seed give the same split.

    Returns:
        ``(fit_positions, val_positions)``: sorted int64 positions into ``labels``; together they
        cover every position once. Every class keeps at least one sample to fit on.
    """
    labels = np.asarray(labels)
    if not 0.0 <= fraction < 1.0:
        raise ProbekitError(f"--val-fraction must be in [0, 1), got {fraction}")
    everything = np.arange(len(labels), dtype=np.int64)
    num_val = int(round(len(labels) * fraction))
    if num_val == 0:
        if fraction > 0:
            raise ProbekitError(
                f"--val-fraction {fraction} of {len(labels)} train samples holds out no sample: "
                "raise it, or pass 0 to choose on test"
            )
        return everything, everything[:0]
    num_classes = len(np.unique(labels))
    if len(labels) - num_val < num_classes:
        raise ProbekitError(
            f"--val-fraction {fraction} leaves fewer train samples than the {num_classes} classes: lower it"
        )
    is_val = stratified_mask(labels, num_val, seed, keep_one_out=True)
    return everything[~is_val], everything[is_val]
