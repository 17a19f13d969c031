"""Heatmap of a probe's score over layer depth x noise level, best cell outlined."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.patches import Rectangle

from probekit.plots._common import (
    METRIC_LABELS,
    PERCENT_METRICS,
    chosen_cell,
    chosen_label,
    grid_figure,
    sanitise,
    save_figure,
    select_rows,
)

# Annotating every cell stays readable only on small grids.
_MAX_ANNOTATED_COLUMNS = 20
_MAX_ANNOTATED_ROWS = 40


def plot_heatmap(
    table: pd.DataFrame,
    probe: str,
    metric: str = "top1",
    out_path: str | os.PathLike | None = None,
    *,
    model: str | None = None,
    dataset: str | None = None,
) -> Path:
    """Draw ``probe``'s ``metric`` (in %) for every (layer, t) cell of the results table.

    Rows are layers in forward order (shallowest on top); columns are noise points in increasing
    t, labelled with t and sigma. Missing cells stay blank. ``model`` / ``dataset`` pick one when
    the table holds several. ``out_path`` defaults to ``heatmap_<probe>.png`` in the working
    folder. Returns the PNG path.
    """
    out_path = f"heatmap_{sanitise(probe)}.png" if out_path is None else out_path
    rows = select_rows(table, probe, metric, model=model, dataset=dataset)
    # Accuracies are fractions shown in %; other metrics (alignment, uniformity) in their own units.
    percent = metric in PERCENT_METRICS
    layer_order = rows.groupby("layer")["depth"].min().sort_values(kind="mergesort").index
    t_order = np.sort(rows["t"].unique())
    grid = (
        rows.pivot(index="layer", columns="t", values="value")
        .reindex(index=layer_order, columns=t_order)
        .mul(100.0 if percent else 1.0)
    )
    sigma_at_t = rows.groupby("t")["sigma"].first()
    column_labels = [f"t={t}\nσ={sigma_at_t[t]:.3g}" for t in t_order]

    n_rows, n_cols = grid.shape
    annotate = n_cols <= _MAX_ANNOTATED_COLUMNS and n_rows <= _MAX_ANNOTATED_ROWS
    fig = grid_figure(layer_order, n_rows, n_cols)
    ax = fig.add_subplot()
    sns.heatmap(
        grid,
        ax=ax,
        cmap="viridis",
        annot=annotate,
        fmt=".1f" if percent else ".3f",
        annot_kws={"fontsize": 7},
        xticklabels=column_labels,
        yticklabels=[str(layer) for layer in layer_order],
        cbar_kws={"label": METRIC_LABELS.get(metric, metric) + (" (%)" if percent else "")},
    )
    ax.set_xlabel("noise level")
    ax.set_ylabel("layer (forward order)")
    ax.tick_params(axis="x", labelrotation=0, labelsize=7)
    ax.tick_params(axis="y", labelsize=7)

    if not percent:  # no "best" cell to outline: lower is not uniformly better for these
        first = rows.iloc[0]
        ax.set_title(f"{first['model']} · {first['dataset']} · {METRIC_LABELS.get(metric, metric)}", fontsize=9)
        return save_figure(fig, out_path)
    best = chosen_cell(table, probe, metric, model=model, dataset=dataset)
    # seaborn puts cell (row i, column j) on the unit square with corner (j, i).
    row_pos = layer_order.get_loc(best["layer"])
    col_pos = int(np.searchsorted(t_order, best["t"]))
    ax.add_patch(Rectangle((col_pos, row_pos), 1, 1, fill=False, edgecolor="red", linewidth=2.5))
    ax.set_title(
        f"{best['model']} · {best['dataset']} · {probe} probe\n"
        f"{chosen_label(best)} {METRIC_LABELS.get(metric, metric)} {100 * best['value']:.1f} % at "
        f"t={best['t']} (σ={best['sigma']:.3g}), {best['layer']}",
        fontsize=9,
    )
    return save_figure(fig, out_path)
