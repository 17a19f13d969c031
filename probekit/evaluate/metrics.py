"""Per-cell scores: top-1 accuracy, mean per-class recall and a Wilson interval.

Every probe returns one :class:`CellScore` per cell. Scores are fractions in [0, 1], never percent;
plots and summaries convert at the last moment.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True, eq=False)
class CellScore:
    """The score of one probe on one (timestep, layer) cell.

    Attributes:
        top1: fraction of test samples predicted correctly, in [0, 1].
        mean_class_recall: balanced accuracy: the mean over the classes present in ``y_test`` of
            each class's recall, in [0, 1]. Equals ``top1`` on a class-balanced test set.
        n_test: number of test samples scored.
        predictions: predicted class per test sample, int64, shape (n_test,); kept so callers can
            compute confidence intervals, confusion matrices or paired tests without re-probing.
        converged: False when an iterative solver stopped at its iteration limit (only the
            scikit-learn reference probe can report this; the others always say True).
    """

    top1: float
    mean_class_recall: float
    n_test: int
    predictions: np.ndarray = field(repr=False)
    converged: bool = True


def top1_accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Fraction of positions where ``y_pred`` equals ``y_true`` (in [0, 1])."""
    y_true, y_pred = _check_pair(y_true, y_pred)
    return float(np.mean(y_true == y_pred))


def mean_class_recall(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Balanced accuracy: mean over the classes present in ``y_true`` of the per-class recall.

    Classes that are predicted but never occur in ``y_true`` do not enter the mean (their recall
    is undefined); their false positives still lower the recall of the true classes they took.
    """
    y_true, y_pred = _check_pair(y_true, y_pred)
    classes, inverse = np.unique(y_true, return_inverse=True)
    correct_per_class = np.bincount(inverse, weights=(y_true == y_pred), minlength=len(classes))
    count_per_class = np.bincount(inverse, minlength=len(classes))
    return float(np.mean(correct_per_class / count_per_class))


def wilson_interval(correct: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion ``correct / n``; z=1.96 gives 95 %.

    Preferred over the normal ("Wald") interval because it stays inside [0, 1] and keeps its
    coverage near 0 % and 100 % accuracy, where probes on easy cells live.
    Returns ``(nan, nan)`` when ``n == 0``.
    """
    if n < 0 or not 0 <= correct <= max(n, 0):
        raise ValueError(f"wilson_interval needs 0 <= correct <= n, got correct={correct}, n={n}")
    if n == 0:
        return (math.nan, math.nan)
    p = correct / n
    z2 = z * z
    denom = 1.0 + z2 / n
    centre = (p + z2 / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / denom
    # Clip rounding noise only: mathematically the interval is already inside [0, 1].
    return (max(0.0, centre - half), min(1.0, centre + half))


def score_predictions(y_true: np.ndarray, y_pred: np.ndarray, *, converged: bool = True) -> CellScore:
    """Build a :class:`CellScore` from test labels and a probe's predictions."""
    y_true, y_pred = _check_pair(y_true, y_pred)
    return CellScore(
        top1=top1_accuracy(y_true, y_pred),
        mean_class_recall=mean_class_recall(y_true, y_pred),
        n_test=int(len(y_true)),
        predictions=y_pred.astype(np.int64, copy=False),
        converged=converged,
    )


def _check_pair(y_true: np.ndarray, y_pred: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    y_true = np.asarray(y_true)
    y_pred = np.asarray(y_pred)
    if y_true.ndim != 1 or y_true.shape != y_pred.shape:
        raise ValueError(f"labels and predictions must be 1-D of equal length, got {y_true.shape} and {y_pred.shape}")
    if len(y_true) == 0:
        raise ValueError("cannot score an empty test set")
    return y_true, y_pred
