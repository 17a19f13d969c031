"""probekit: which layer, at which noise level, holds the most linearly separable features?

A toolkit for the DDAE probing method (Xiang et al., ICCV 2023): wrap a diffusion checkpoint in a
layer x timestep hook registry, cache pooled features to HDF5, probe every (timestep, layer) cell,
and plot accuracy over noise level and depth.

The public API is re-exported here and imported on first use, so ``import probekit`` (and the
CLI) stays fast::

    backbone = probekit.load_backbone("path/to/unet")
    data = probekit.load_dataset("fashion-mnist")
    probekit.extract(backbone, data, "feats.h5", probekit.ExtractConfig(timesteps=[10, 100]))
    table = probekit.run_probes("feats.h5")
    probekit.plot_all(table, "figures/")
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from probekit._version import __version__

if TYPE_CHECKING:  # the lazy exports below, spelled out for type checkers and the API reference
    from probekit.analyses.cell_tsne import tsne_of_cell
    from probekit.core.errors import ProbekitError
    from probekit.data import ImageDataset, load_dataset, stratified_subset
    from probekit.evaluate.compare import compare_runs
    from probekit.evaluate.results import best_cell, best_cells, format_summary, read_table, write_table
    from probekit.features.cache import FeatureCache
    from probekit.features.extraction import ExtractConfig, extract
    from probekit.models import Backbone, LayerInfo, load_backbone, select_layers
    from probekit.plots import plot_accuracy_vs_t, plot_all, plot_heatmap, plot_tsne
    from probekit.probes.run import ProbeRunConfig, probe_cache, run_probes

_EXPORTS = {
    "ProbekitError": "probekit.core.errors",
    "load_backbone": "probekit.models",
    "select_layers": "probekit.models",
    "Backbone": "probekit.models",
    "LayerInfo": "probekit.models",
    "load_dataset": "probekit.data",
    "stratified_subset": "probekit.data",
    "ImageDataset": "probekit.data",
    "extract": "probekit.features.extraction",
    "ExtractConfig": "probekit.features.extraction",
    "FeatureCache": "probekit.features.cache",
    "run_probes": "probekit.probes.run",
    "ProbeRunConfig": "probekit.probes.run",
    "tsne_of_cell": "probekit.analyses.cell_tsne",
    "probe_cache": "probekit.probes.run",
    "compare_runs": "probekit.evaluate.compare",
    "read_table": "probekit.evaluate.results",
    "write_table": "probekit.evaluate.results",
    "best_cells": "probekit.evaluate.results",
    "best_cell": "probekit.evaluate.results",
    "format_summary": "probekit.evaluate.results",
    "plot_all": "probekit.plots",
    "plot_heatmap": "probekit.plots",
    "plot_accuracy_vs_t": "probekit.plots",
    "plot_tsne": "probekit.plots",
}

__all__ = sorted(_EXPORTS) + ["__version__"]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'probekit' has no attribute {name!r}")
