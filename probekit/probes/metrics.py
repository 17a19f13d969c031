"""Per-cell scores, re-exported from :mod:`probekit.evaluate.metrics` (torch-free) for the probes."""

from probekit.evaluate.metrics import (
    CellScore,
    mean_class_recall,
    score_predictions,
    top1_accuracy,
    wilson_interval,
)

__all__ = ["CellScore", "mean_class_recall", "score_predictions", "top1_accuracy", "wilson_interval"]
