"""Probes: per-cell classifiers over cached features.

Each implementation has the call shape ``probe(train, y_train, test, y_test, config) ->
{cell key: CellScore}`` (``train[key]`` an (N_train, C_key) float array). The protocol layer
(:mod:`.protocol`, :mod:`.registry`) runs them by name on a :class:`ProbeTask` that holds a
validation split, and chooses every setting on it.
"""

from __future__ import annotations

from probekit.evaluate.metrics import (
    CellScore,
    mean_class_recall,
    score_predictions,
    top1_accuracy,
    wilson_interval,
)
from probekit.probes.knn import KnnConfig, knn_probe
from probekit.probes.linear import (
    LinearHead,
    LinearProbeConfig,
    fit_linear_grid,
    fit_linear_path,
    linear_probe_grid,
    linear_probe_path,
    predict_linear_grid,
)
from probekit.probes.logreg import LogRegConfig, logreg_probe
from probekit.probes.minibatch import MinibatchConfig, train_minibatch_heads
from probekit.probes.protocol import ProbeOutcome, ProbeTask, choose_per_cell
from probekit.probes.registry import PROBES, ProbeSettings, run_probe

__all__ = [
    "PROBES",
    "CellScore",
    "KnnConfig",
    "LinearHead",
    "LinearProbeConfig",
    "LogRegConfig",
    "MinibatchConfig",
    "ProbeOutcome",
    "ProbeSettings",
    "ProbeTask",
    "choose_per_cell",
    "train_minibatch_heads",
    "fit_linear_grid",
    "fit_linear_path",
    "knn_probe",
    "linear_probe_grid",
    "linear_probe_path",
    "logreg_probe",
    "mean_class_recall",
    "predict_linear_grid",
    "run_probe",
    "score_predictions",
    "top1_accuracy",
    "wilson_interval",
]
