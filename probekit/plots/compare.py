"""Several models on one accuracy-vs-noise axis: each model's best layer, across noise levels.

A DDPM indexed by t in 0..999, an EDM indexed by Karras step and a DiT in latent space share no
timestep axis, but every results row carries sigma and logSNR, so ``x="sigma"`` or ``x="logsnr"``
puts them on one comparable axis.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from probekit.errors import ProbekitError
from probekit.plots._common import METRIC_LABELS, new_figure, save_figure
from probekit.plots.curves import X_AXES
from probekit.results import best_cells


def comparison_lines(table: pd.DataFrame, probe: str, metric: str = "top1", *, x: str = "t") -> dict[str, pd.DataFrame]:
    """``{"model (layer)": test rows sorted by x}``: for each (model, dataset), its val-chosen cell's layer at every noise level.

    Rows whose ``x`` cannot be drawn (sigma 0 on a log axis, infinite logSNR) are left out.
    """
    if x not in X_AXES:
        raise ProbekitError(f"x must be one of {', '.join(X_AXES)}, got {x!r}")
    rows = table[(table["probe"] == probe) & (table["metric"] == metric)]
    if rows.empty:
        raise ProbekitError(f"no {metric} rows for probe {probe!r} in the results")
    lines = {}
    for (model, dataset), own in rows.groupby(["model", "dataset"], sort=False):
        layer = best_cells(own, metric).iloc[0]["layer"]  # val-chosen
        line = own[(own["layer"] == layer) & (own["split"] == "test")]
        drawable = line["sigma"] > 0 if x == "sigma" else np.isfinite(line[x])
        several_datasets = rows["dataset"].nunique() > 1
        label = f"{model}{f' · {dataset}' if several_datasets else ''} ({layer})"
        lines[label] = line[drawable].sort_values(x)
    return lines


def plot_model_comparison(
    table: pd.DataFrame, probe: str, out_path: str | os.PathLike, metric: str = "top1", *, x: str = "sigma"
) -> Path:
    """One line per model (its best layer) of ``metric`` in % against the noise axis ``x``."""
    lines = comparison_lines(table, probe, metric, x=x)
    fig = new_figure(width=7.5, height=4.5)
    ax = fig.add_subplot()
    for label, line in lines.items():
        ax.plot(line[x], 100 * line["value"], marker="o", markersize=3, label=label)
    if x == "sigma":
        ax.set_xscale("log")
    ax.set_xlabel(X_AXES[x])
    ax.set_ylabel(f"{METRIC_LABELS.get(metric, metric)} (%)")
    ax.set_title(f"{probe} probe, best layer of each model", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return save_figure(fig, out_path)
