"""Representation quality over training: best-cell accuracy, alignment and uniformity against images seen."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from probekit.core.errors import ProbekitError
from probekit.plots._common import new_figure, save_figure


def plot_sweep(summary: pd.DataFrame, out_path: str | os.PathLike) -> Path:
    """Three panels from ``sweep.csv`` rows (images_seen, test_top1 + CI, alignment, uniformity, t, layer,
    chosen_on).
    """
    needed = {
        "images_seen",
        "test_top1",
        "test_ci_low",
        "test_ci_high",
        "alignment",
        "uniformity",
        "t",
        "layer",
        "chosen_on",
    }
    if summary.empty or not needed <= set(summary.columns):
        raise ProbekitError(f"a sweep summary needs the columns {', '.join(sorted(needed))} and at least one row")
    rows = summary.sort_values("images_seen")
    x = rows["images_seen"].to_numpy() / 1000.0
    fig = new_figure(width=11.0, height=3.8)
    acc_ax, align_ax, unif_ax = fig.subplots(1, 3)
    top1 = 100 * rows["test_top1"].to_numpy()
    errors = np.vstack([top1 - 100 * rows["test_ci_low"].to_numpy(), 100 * rows["test_ci_high"].to_numpy() - top1])
    acc_ax.errorbar(x, top1, yerr=errors, marker="o", capsize=3)
    for xi, yi, t, layer in zip(x, top1, rows["t"], rows["layer"]):
        acc_ax.annotate(f"t={t}\n{layer}", (xi, yi), textcoords="offset points", xytext=(4, -18), fontsize=6)
    chosen_on = "validation" if set(rows["chosen_on"]) == {"val"} else "test"
    acc_ax.set_ylabel("test top-1 of the best cell (%)")
    acc_ax.set_title(f"best cell chosen on {chosen_on}", fontsize=9)
    align_ax.plot(x, rows["alignment"], marker="o")
    align_ax.set_ylabel("alignment at that cell (lower = more noise-invariant)")
    unif_ax.plot(x, rows["uniformity"], marker="o")
    unif_ax.set_ylabel("uniformity at that cell (lower = more uniform)")
    for ax in (acc_ax, align_ax, unif_ax):
        ax.set_xlabel("training images seen (thousands)")
        ax.grid(alpha=0.3)
    return save_figure(fig, out_path)
