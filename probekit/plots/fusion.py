"""The fusion mixture's weights over noise x depth, read from the results table.

Reads the rows that ``probekit fuse`` writes with metric "mixture_weight" (one per mixed cell).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import seaborn as sns

from probekit.core.errors import ProbekitError
from probekit.plots._common import grid_figure, save_figure

WEIGHT_METRIC = "mixture_weight"


def plot_mixture_weights(table: pd.DataFrame, out_path: str | os.PathLike, *, model: str | None = None) -> Path:
    """Heatmap of the learned softmax mixture weights (in %) of every mixed (layer, t) cell.

    Rows are layers in forward order, columns noise points in increasing t; cells left out of the
    mixture stay blank. The weights of one mixture sum to 100 %.
    """
    rows = table[table["metric"] == WEIGHT_METRIC]
    if rows.empty:
        raise ProbekitError("the table holds no mixture weights: run `probekit fuse` (without --no-mixture) first")
    models = sorted(rows["model"].unique())
    if model is None and len(models) > 1:
        raise ProbekitError(f"the table holds mixture weights of several models {models}; pass model=...")
    rows = rows if model is None else rows[rows["model"] == model]
    layer_order = rows.groupby("layer")["depth"].min().sort_values(kind="mergesort").index
    t_order = np.sort(rows["t"].unique())
    grid = rows.pivot(index="layer", columns="t", values="value").reindex(index=layer_order, columns=t_order).mul(100.0)
    sigma_at_t = rows.groupby("t")["sigma"].first()
    n_rows, n_cols = grid.shape
    fig = grid_figure(layer_order, n_rows, n_cols)
    ax = fig.add_subplot()
    sns.heatmap(
        grid,
        ax=ax,
        cmap="rocket_r",
        vmin=0.0,
        annot=n_cols <= 20 and n_rows <= 40,
        fmt=".1f",
        annot_kws={"fontsize": 7},
        xticklabels=[f"t={t}\nσ={sigma_at_t[t]:.3g}" for t in t_order],
        yticklabels=[str(l) for l in layer_order],
        cbar_kws={"label": "mixture weight (%)"},
    )
    ax.set_xlabel("noise level")
    ax.set_ylabel("layer (forward order)")
    ax.tick_params(axis="x", labelrotation=0, labelsize=7)
    ax.tick_params(axis="y", labelsize=7)
    first = rows.iloc[0]
    ax.set_title(
        f"{first['model']} · fusion-mixture weights ({first['params']}, {len(rows)} cells, uniform = "
        f"{100 / len(rows):.2g} %)",
        fontsize=9,
    )
    return save_figure(fig, out_path)
