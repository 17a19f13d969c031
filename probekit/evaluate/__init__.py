"""Scores, the validation split and paired comparisons (numpy only: no torch, no probes).

Probes produce predictions; everything that turns predictions into numbers a reviewer accepts
lives here: per-cell scores and Wilson intervals (:mod:`.metrics`), the stratified validation
split that every choice is made on (:mod:`.split`), and paired tests of two classifiers on the
same test images (:mod:`.paired`).
"""

from probekit.evaluate.metrics import (
    CellScore,
    mean_class_recall,
    score_predictions,
    top1_accuracy,
    wilson_interval,
)
from probekit.evaluate.paired import PairedComparison, compare_correct, mcnemar_exact, paired_bootstrap
from probekit.evaluate.split import stratified_val_split

__all__ = [
    "CellScore",
    "PairedComparison",
    "compare_correct",
    "mcnemar_exact",
    "mean_class_recall",
    "paired_bootstrap",
    "score_predictions",
    "stratified_val_split",
    "top1_accuracy",
    "wilson_interval",
]
