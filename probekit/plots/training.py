"""Training curves of a fine-tuning run: loss and top-1 accuracy against epochs, train and val."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from probekit.core.errors import ProbekitError
from probekit.plots._common import new_figure, save_figure


def plot_training_curves(curves: pd.DataFrame, out_path: str | os.PathLike, *, title: str = "") -> Path:
    """Two panels from a curves table (columns epoch, train_loss, val_loss, train_top1, val_top1)."""
    needed = {"epoch", "train_loss", "val_loss", "train_top1", "val_top1"}
    if curves.empty or not needed <= set(curves.columns):
        raise ProbekitError(f"training curves need the columns {', '.join(sorted(needed))} and at least one row")
    fig = new_figure(width=9.0, height=3.6)
    loss_ax, acc_ax = fig.subplots(1, 2)
    for split, style in (("train", "-"), ("val", "--")):
        loss_ax.plot(curves["epoch"], curves[f"{split}_loss"], style, marker="o", markersize=3, label=split)
        acc_ax.plot(curves["epoch"], 100 * curves[f"{split}_top1"], style, marker="o", markersize=3, label=split)
    best = curves.loc[curves["val_top1"].idxmax()]
    acc_ax.plot(
        [best["epoch"]],
        [100 * best["val_top1"]],
        marker="*",
        markersize=12,
        color="red",
        linestyle="",
        label=f"val-chosen (epoch {int(best['epoch'])})",
    )
    loss_ax.set_xlabel("epoch")
    loss_ax.set_ylabel("cross-entropy")
    acc_ax.set_xlabel("epoch")
    acc_ax.set_ylabel("top-1 accuracy (%)")
    for ax in (loss_ax, acc_ax):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    if title:
        fig.suptitle(title, fontsize=9)
    return save_figure(fig, out_path)
