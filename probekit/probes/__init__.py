"""Probes: per-cell classifiers over cached features, all with one call shape.

``probe(train, y_train, test, y_test, config, *, progress) -> {cell key: CellScore}`` where
``train[key]`` is an (N_train, C_key) float array. :data:`PROBES` maps the CLI names
(``--probes linear,logreg,knn``) to the function and its config class; :func:`run_probe` calls
one by name and passes ``device`` only to the probes that run on an accelerator.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Hashable, Mapping
from typing import Any, NamedTuple

import numpy as np
import torch

from probekit.errors import ProbekitError
from probekit.probes.knn import KnnConfig, knn_probe
from probekit.probes.linear import (
    LinearHead,
    LinearProbeConfig,
    fit_linear_grid,
    linear_probe_grid,
    predict_linear_grid,
)
from probekit.probes.logreg import LogRegConfig, logreg_probe
from probekit.probes.sgd import SgdProbeConfig, fit_sgd_grid, sgd_probe_grid
from probekit.probes.metrics import (
    CellScore,
    mean_class_recall,
    score_predictions,
    top1_accuracy,
    wilson_interval,
)


class ProbeEntry(NamedTuple):
    """A registered probe: the function and the dataclass holding its settings."""

    run: Callable[..., dict[Any, CellScore]]
    config_type: type


PROBES: dict[str, ProbeEntry] = {
    "linear": ProbeEntry(linear_probe_grid, LinearProbeConfig),
    "logreg": ProbeEntry(logreg_probe, LogRegConfig),
    "knn": ProbeEntry(knn_probe, KnnConfig),
}


def run_probe(
    name: str,
    train: Mapping[Hashable, np.ndarray],
    y_train: np.ndarray,
    test: Mapping[Hashable, np.ndarray],
    y_test: np.ndarray,
    config: Any = None,
    *,
    device: str | torch.device = "cpu",
    progress: bool = False,
) -> dict[Hashable, CellScore]:
    """Run the probe registered as ``name`` (default config when ``config`` is None)."""
    if name not in PROBES:
        raise ProbekitError(f"unknown probe {name!r}; choose from {', '.join(PROBES)}")
    entry = PROBES[name]
    config = entry.config_type() if config is None else config
    kwargs: dict[str, Any] = {"progress": progress}
    if "device" in inspect.signature(entry.run).parameters:
        kwargs["device"] = device  # scikit-learn's logreg is CPU-only and takes no device
    return entry.run(train, y_train, test, y_test, config, **kwargs)


__all__ = [
    "PROBES",
    "CellScore",
    "KnnConfig",
    "LinearHead",
    "LinearProbeConfig",
    "LogRegConfig",
    "ProbeEntry",
    "SgdProbeConfig",
    "fit_linear_grid",
    "fit_sgd_grid",
    "knn_probe",
    "linear_probe_grid",
    "logreg_probe",
    "mean_class_recall",
    "predict_linear_grid",
    "run_probe",
    "score_predictions",
    "sgd_probe_grid",
    "top1_accuracy",
    "wilson_interval",
]
