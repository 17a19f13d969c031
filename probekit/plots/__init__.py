"""Figures drawn from the results table (and, for t-SNE, from cached features).

All figures are PNG files written atomically and drawn on matplotlib's Agg canvas, so they work
on machines without a display.
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from probekit.evaluate.results import check_columns
from probekit.plots._common import sanitise
from probekit.plots.compare import comparison_lines, plot_model_comparison
from probekit.plots.curves import plot_accuracy_vs_t
from probekit.plots.heatmap import plot_heatmap
from probekit.plots.tsne import plot_tsne


def plot_all(table: pd.DataFrame, out_dir: str | os.PathLike, metric: str = "top1", *, x: str = "t") -> list[Path]:
    """One heatmap and one accuracy-vs-noise figure per (model, dataset, probe) in ``table``,
    and, when it holds several models, ``compare_acc_vs_<x>_<probe>.png`` overlaying each model's
    best layer on one noise axis.

    ``x`` is the noise axis of the curves: "t", "sigma" or "logsnr".

    Files are ``heatmap_<probe>.png`` and ``acc_vs_t_<probe>.png`` in ``out_dir``, prefixed with
    the sanitised model name (and dataset name) when the table holds several. Returns the paths.
    """
    check_columns(table)
    out_dir = Path(out_dir)
    rows = table[table["metric"] == metric]
    several_models = rows["model"].nunique() > 1
    several_datasets = rows["dataset"].nunique() > 1
    paths: list[Path] = []
    for (model, dataset, probe), _ in rows.groupby(["model", "dataset", "probe"], sort=True):
        prefix = "".join(
            f"{sanitise(name)}_" for name, several in ((model, several_models), (dataset, several_datasets)) if several
        )
        name = sanitise(probe)
        paths.append(
            plot_heatmap(table, probe, metric, out_dir / f"{prefix}heatmap_{name}.png", model=model, dataset=dataset)
        )
        paths.append(
            plot_accuracy_vs_t(
                table, probe, metric, out_dir / f"{prefix}acc_vs_{x}_{name}.png", x=x, model=model, dataset=dataset
            )
        )
    if several_models:
        for probe in sorted(rows["probe"].unique()):
            paths.append(
                plot_model_comparison(table, probe, out_dir / f"compare_acc_vs_{x}_{sanitise(probe)}.png", metric, x=x)
            )
    return paths


__all__ = ["comparison_lines", "plot_accuracy_vs_t", "plot_all", "plot_heatmap", "plot_model_comparison", "plot_tsne"]
