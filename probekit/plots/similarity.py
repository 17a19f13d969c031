"""Similarity figures from the results table: a map over noise x depth per (metric, reference),
and the cell x cell CKA matrix of one cache.

Both read the rows that ``probekit similarity`` writes (probe "similarity", extra columns
``reference``, ``ref_t``, ``ref_layer``); nothing else.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.patches import Rectangle

from probekit.core.errors import ProbekitError
from probekit.plots._common import grid_figure, new_figure, sanitise, save_figure

SIMILARITY_LABELS = {"cka": "debiased linear CKA", "cknna": "CKNNA", "mutual_knn": "mutual k-NN"}
_SELF = "self"


def _similarity_rows(table: pd.DataFrame, model: str | None) -> pd.DataFrame:
    if "reference" not in table.columns:
        raise ProbekitError("the table has no 'reference' column: it holds no `probekit similarity` rows")
    rows = table[table["probe"] == "similarity"]
    if rows.empty:
        raise ProbekitError("the table holds no similarity rows: run `probekit similarity` first")
    models = sorted(rows["model"].unique())
    if model is None and len(models) > 1:
        raise ProbekitError(f"the table holds several models {models}; pass model=...")
    return rows if model is None else rows[rows["model"] == model]


def similarity_references(table: pd.DataFrame) -> list[tuple[str, str]]:
    """(model, reference) pairs that have per-cell rows against a reference cache ("self" excluded)."""
    if "reference" not in table.columns:
        return []
    rows = table[(table["probe"] == "similarity") & (table["reference"] != _SELF)]
    return sorted(set(zip(rows["model"], rows["reference"])))


def plot_similarity_heatmap(
    table: pd.DataFrame, metric: str, reference: str, out_path: str | os.PathLike, *, model: str | None = None
) -> Path:
    """Map of ``metric`` of every (layer, t) cell against ``reference``; the highest cell outlined.

    Rows are layers in forward order, columns noise points in increasing t (labelled with sigma).
    """
    rows = _similarity_rows(table, model)
    rows = rows[(rows["metric"] == metric) & (rows["reference"] == reference)]
    if rows.empty:
        raise ProbekitError(f"no {metric!r} rows against reference {reference!r} in the table")
    layer_order = rows.groupby("layer")["depth"].min().sort_values(kind="mergesort").index
    t_order = np.sort(rows["t"].unique())
    grid = rows.pivot(index="layer", columns="t", values="value").reindex(index=layer_order, columns=t_order)
    sigma_at_t = rows.groupby("t")["sigma"].first()
    n_rows, n_cols = grid.shape
    fig = grid_figure(layer_order, n_rows, n_cols)
    ax = fig.add_subplot()
    sns.heatmap(
        grid,
        ax=ax,
        cmap="magma",
        vmin=0.0,
        vmax=1.0,
        annot=n_cols <= 20 and n_rows <= 40,
        fmt=".2f",
        annot_kws={"fontsize": 7},
        xticklabels=[f"t={t}\nσ={sigma_at_t[t]:.3g}" for t in t_order],
        yticklabels=[str(l) for l in layer_order],
        cbar_kws={"label": SIMILARITY_LABELS.get(metric, metric)},
    )
    ax.set_xlabel("noise level")
    ax.set_ylabel("layer (forward order)")
    ax.tick_params(axis="x", labelrotation=0, labelsize=7)
    ax.tick_params(axis="y", labelsize=7)
    finite = rows[np.isfinite(rows["value"])]
    if not finite.empty:
        top = finite.sort_values(["value", "t", "depth"], ascending=[False, True, True], kind="mergesort").iloc[0]
        ax.add_patch(
            Rectangle(
                (int(np.searchsorted(t_order, top["t"])), layer_order.get_loc(top["layer"])),
                1,
                1,
                fill=False,
                edgecolor="cyan",
                linewidth=2.5,
            )
        )
        first = rows.iloc[0]
        k = f", {first['params']}" if first.get("params") else ""
        ref_cell = f"t={first['ref_t']} {first['ref_layer']}"
        ax.set_title(
            f"{first['model']} vs {reference} ({ref_cell}) · {SIMILARITY_LABELS.get(metric, metric)}{k}\n"
            f"highest {top['value']:.3f} at t={top['t']}, {top['layer']} · {int(first['n_eval'])} "
            f"{first.get('split', '')} images",
            fontsize=9,
        )
    return save_figure(fig, out_path)


def plot_cka_matrix(table: pd.DataFrame, out_path: str | os.PathLike, *, model: str | None = None) -> Path:
    """The cell x cell debiased linear CKA matrix of one cache.

    Cells are ordered by noise level, then depth; lines separate noise levels and each block is
    labelled with its t. The table stores each unordered pair once; the figure mirrors it.
    """
    rows = _similarity_rows(table, model)
    rows = rows[(rows["metric"] == "cka") & (rows["reference"] == _SELF)]
    if rows.empty:
        raise ProbekitError(
            "no cell x cell CKA rows (reference 'self') in the table: run `probekit similarity` with the matrix on"
        )
    depth_of = dict(zip(rows["layer"], rows["depth"])) | dict(zip(rows["ref_layer"], rows["ref_depth"]))
    cells = sorted(
        set(zip(rows["t"], rows["layer"])) | set(zip(rows["ref_t"], rows["ref_layer"])),
        key=lambda c: (c[0], depth_of[c[1]]),
    )
    at = {cell: i for i, cell in enumerate(cells)}
    matrix = np.full((len(cells), len(cells)), np.nan)
    for a_t, a_layer, b_t, b_layer, value in zip(
        rows["t"], rows["layer"], rows["ref_t"], rows["ref_layer"], rows["value"]
    ):
        i, j = at[(a_t, a_layer)], at[(b_t, b_layer)]
        matrix[i, j] = matrix[j, i] = value
    size = float(np.clip(3.0 + 0.05 * len(cells), 5.0, 14.0))
    fig = new_figure(width=size + 1.2, height=size)
    ax = fig.add_subplot()
    image = ax.imshow(matrix, cmap="magma", vmin=0.0, vmax=1.0, interpolation="nearest")
    fig.colorbar(image, ax=ax, label="debiased linear CKA", shrink=0.8)
    ts = [c[0] for c in cells]
    starts = [i for i in range(len(ts)) if i == 0 or ts[i] != ts[i - 1]]
    for s in starts[1:]:
        ax.axhline(s - 0.5, color="white", linewidth=0.6)
        ax.axvline(s - 0.5, color="white", linewidth=0.6)
    ends = starts[1:] + [len(ts)]
    centres = [(s + e - 1) / 2 for s, e in zip(starts, ends)]
    labels = [f"t={ts[s]}" for s in starts]
    if len(starts) == 1:  # one noise level: label the layers instead
        centres, labels = list(range(len(cells))), [c[1] for c in cells]
    ax.set_xticks(centres, labels, rotation=90, fontsize=7)
    ax.set_yticks(centres, labels, fontsize=7)
    ax.set_xlabel("cell (noise level, then depth)")
    first = rows.iloc[0]
    ax.set_title(f"{first['model']} · CKA between cells · {int(first['n_eval'])} images", fontsize=9)
    return save_figure(fig, out_path)


def plot_similarity(table: pd.DataFrame, out_dir: str | os.PathLike) -> list[Path]:
    """Every similarity figure the table supports: ``similarity_<metric>_<reference>.png`` per
    reference and metric, and ``cka_matrix.png`` (prefixed by model when there are several).
    """
    out_dir = Path(out_dir)
    if "reference" not in table.columns or not (table["probe"] == "similarity").any():
        raise ProbekitError("the table holds no similarity rows: run `probekit similarity` first")
    several = table[table["probe"] == "similarity"]["model"].nunique() > 1
    paths = []
    for model, reference in similarity_references(table):
        prefix = f"{sanitise(model)}_" if several else ""
        for metric in sorted(table[(table["reference"] == reference) & (table["model"] == model)]["metric"].unique()):
            paths.append(
                plot_similarity_heatmap(
                    table[table["model"] == model],
                    metric,
                    reference,
                    out_dir / f"{prefix}similarity_{metric}_{sanitise(reference)}.png",
                )
            )
    for model in sorted(table[(table["probe"] == "similarity") & (table["reference"] == _SELF)]["model"].unique()):
        prefix = f"{sanitise(model)}_" if several else ""
        paths.append(plot_cka_matrix(table[table["model"] == model], out_dir / f"{prefix}cka_matrix.png"))
    return paths
