"""Label efficiency: the val-chosen cell's test accuracy against labels per class, per model.

Reads tables written by ``probekit probe --labels-per-class`` (columns ``labels_per_class`` and
``budget_draw``). For every (model, budget, draw) the cell is chosen on val
(:func:`probekit.evaluate.results.best_cells`) and its test value taken; the figure draws the mean over
draws with a band from the lowest to the highest draw.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from probekit.core.errors import ProbekitError
from probekit.evaluate.results import best_cells
from probekit.plots._common import METRIC_LABELS, new_figure, save_figure

BUDGET_COLUMNS = ("labels_per_class", "budget_draw")


def label_efficiency_table(table: pd.DataFrame, probe: str = "linear", metric: str = "top1") -> pd.DataFrame:
    """One row per (model, labels_per_class): the val-chosen cell's test value over draws.

    Columns: model, dataset, probe, labels_per_class ("1", ..., "all"), per_class (labels per
    class; for "all" the mean fit images per class), draws, mean, min, max, std (over draws; 0
    for a single draw), cells (the val-chosen (t, layer) of each draw, ``;``-separated).
    """
    missing = [c for c in BUDGET_COLUMNS if c not in table.columns]
    if missing:
        raise ProbekitError(
            "the results have no labels_per_class column: write them with `probekit probe --labels-per-class ...`"
        )
    rows = table[(table["probe"] == probe) & (table["metric"] == metric)]
    if rows.empty:
        raise ProbekitError(f"no {probe!r} {metric!r} rows in the label-budget results: probe with --probes {probe}")
    out = []
    for (model, budget), group in rows.groupby(["model", rows["labels_per_class"].astype(str)], sort=False):
        picks = []
        for _draw, part in group.groupby("budget_draw", sort=True):
            best = best_cells(part, metric).iloc[0]
            picks.append((float(best["value"]), f"t={int(best['t'])} {best['layer']}", int(best["n_train"])))
        values = np.array([value for value, _, _ in picks])
        per_class = float(budget) if budget != "all" else float("nan")
        out.append(
            {
                "model": model,
                "dataset": str(group["dataset"].iloc[0]),
                "probe": probe,
                "labels_per_class": budget,
                "per_class": per_class,
                "n_train": picks[0][2],
                "draws": len(picks),
                "mean": float(values.mean()),
                "min": float(values.min()),
                "max": float(values.max()),
                "std": float(values.std(ddof=1)) if len(values) > 1 else 0.0,
                "cells": "; ".join(cell for _, cell, _ in picks),
            }
        )
    summary = pd.DataFrame(out)
    # "all": placed at the mean number of fit images per class (n_train over the classes of the budgets).
    for model, group in summary.groupby("model"):
        sized = group[group["labels_per_class"] != "all"]
        classes = (sized["n_train"] / sized["per_class"]).round().max() if not sized.empty else np.nan
        mask = (summary["model"] == model) & (summary["labels_per_class"] == "all")
        summary.loc[mask, "per_class"] = summary.loc[mask, "n_train"] / classes if np.isfinite(classes) else np.nan
    return summary


def plot_label_efficiency(
    table: pd.DataFrame, out_path: str | os.PathLike, *, probe: str = "linear", metric: str = "top1"
) -> tuple[Path, pd.DataFrame]:
    """Draw the curve of every model in ``table``; returns the PNG path and the summary table."""
    summary = label_efficiency_table(table, probe, metric)
    fig = new_figure(6.0, 4.0)
    ax = fig.add_subplot(1, 1, 1)
    for model, group in summary.groupby("model", sort=False):
        group = group.dropna(subset=["per_class"]).sort_values("per_class")
        x = group["per_class"].to_numpy()
        (line,) = ax.plot(x, 100 * group["mean"], marker="o", label=model)
        ax.fill_between(x, 100 * group["min"], 100 * group["max"], color=line.get_color(), alpha=0.2, linewidth=0)
    ax.set_xscale("log")
    ticks = summary.dropna(subset=["per_class"]).drop_duplicates("labels_per_class").sort_values("per_class")
    ax.set_xticks(ticks["per_class"].to_numpy())
    ax.set_xticklabels(
        [b if b != "all" else f"\nall (~{p:.0f})" for b, p in zip(ticks["labels_per_class"], ticks["per_class"])]
    )
    ax.minorticks_off()
    ax.set_xlabel("labelled train images per class")
    ax.set_ylabel(f"test {METRIC_LABELS.get(metric, metric)} (%)")
    ax.set_title(f"{probe} probe, val-chosen cell per draw (band: min-max over draws)", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return save_figure(fig, out_path), summary
