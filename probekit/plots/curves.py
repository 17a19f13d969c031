"""The DDAE paper's plot: probe accuracy against noise level, one line per layer."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import matplotlib as mpl
import numpy as np
import pandas as pd

from probekit.core.errors import ProbekitError
from probekit.plots._common import (
    METRIC_LABELS,
    chosen_cell,
    chosen_label,
    new_figure,
    sanitise,
    save_figure,
    select_rows,
)

X_AXES = {
    "t": "timestep t",
    "sigma": "σ (noise std / signal std, log scale)",
    "logsnr": "log SNR  (← noisier · cleaner →)",
}
# Up to this many layers the legend fits inside the axes; up to _MAX_LEGEND it goes outside;
# beyond that a depth colour bar replaces it, since a 100-entry legend helps nobody.
_INSIDE_LEGEND = 10
_MAX_LEGEND = 40


def plot_accuracy_vs_t(
    table: pd.DataFrame,
    probe: str,
    metric: str = "top1",
    out_path: str | os.PathLike | None = None,
    *,
    x: str = "t",
    layers: Sequence[str] | None = None,
    model: str | None = None,
    dataset: str | None = None,
) -> Path:
    """Plot ``metric`` (in %) against the noise level for each layer and mark the best point.

    Args:
        x: the noise axis: "t" (timestep index), "sigma" (log axis; sigma = 0, the clean
            input, and sigma = inf, a zero-terminal-SNR point, cannot sit on it and are dropped with a note) or
            "logsnr" (non-finite values,
            +inf for clean input, are dropped with a note).
        layers: layer names to draw (default: all), coloured by depth on a sequential colormap.
        model: pick one when the table holds several models.
        dataset: pick one when the table holds several datasets.
        out_path: PNG path; defaults to ``acc_vs_t_<probe>.png`` in the working folder.
    """
    if x not in X_AXES:
        raise ProbekitError(f"x must be one of {', '.join(X_AXES)}, got {x!r}")
    out_path = f"acc_vs_t_{sanitise(probe)}.png" if out_path is None else out_path
    rows = select_rows(table, probe, metric, model=model, dataset=dataset)
    if layers is not None:
        unknown = sorted(set(layers) - set(rows["layer"]))
        if unknown:
            raise ProbekitError(f"layers {unknown} are not in the table for probe {probe!r}")
        rows = rows[rows["layer"].isin(layers)]

    note = ""
    if x == "sigma":
        plottable = (rows["sigma"] > 0) & np.isfinite(rows["sigma"])
        notes = ["σ = 0 (clean input)"] if (rows["sigma"] == 0).any() else []
        notes += ["σ = ∞ (zero terminal SNR, pure noise)"] if np.isposinf(rows["sigma"]).any() else []
        if notes:
            note = f"{' and '.join(notes)} not shown on the log axis"
    elif x == "logsnr":
        plottable = np.isfinite(rows[x])
        notes = ["+∞ (clean input)"] if np.isposinf(rows[x]).any() else []
        notes += ["−∞ (zero terminal SNR, pure noise)"] if np.isneginf(rows[x]).any() else []
        if notes:
            note = f"logSNR {' and '.join(notes)} not shown"
    else:
        plottable = np.isfinite(rows[x])
    rows = rows[plottable]
    if rows.empty:
        raise ProbekitError(f"no rows with a finite, plottable {x}; try x='t'")

    layer_depth = rows.groupby("layer")["depth"].min().sort_values(kind="mergesort")
    # viridis without its pale yellow end, which vanishes on a white background.
    cmap = mpl.colors.ListedColormap(mpl.colormaps["viridis"](np.linspace(0.0, 0.9, 256)))
    norm = mpl.colors.Normalize(layer_depth.min(), layer_depth.max())
    colours = cmap(norm(layer_depth.to_numpy()))

    n_layers = len(layer_depth)
    legend_outside = _INSIDE_LEGEND < n_layers <= _MAX_LEGEND
    fig = new_figure(width=9.0 if legend_outside else 7.0, height=4.5)
    ax = fig.add_subplot()
    for colour, layer in zip(colours, layer_depth.index):
        line = rows[rows["layer"] == layer].sort_values(x)
        ax.plot(line[x], 100 * line["value"], marker="o", markersize=3, color=colour, label=layer)

    best = chosen_cell(table, probe, metric, model=model, dataset=dataset)
    ax.plot(
        best[x],
        100 * best["value"],
        marker="*",
        markersize=16,
        color="red",
        markeredgecolor="black",
        linestyle="none",
        zorder=5,
    )
    # Put the label on the side of the star that faces the middle of the plot, so it stays inside.
    xs = np.sort(rows[x].unique())
    on_right = np.searchsorted(xs, best[x]) > (len(xs) - 1) / 2
    ax.annotate(
        f"{chosen_label(best)} {100 * best['value']:.1f} %\n{best['layer']}, t={best['t']}",
        (best[x], 100 * best["value"]),
        xytext=(-10 if on_right else 10, -26),
        textcoords="offset points",
        ha="right" if on_right else "left",
        fontsize=8,
        bbox={"boxstyle": "round", "facecolor": "white", "alpha": 0.8, "linewidth": 0},
    )

    if x == "sigma":
        ax.set_xscale("log")
        plain = mpl.ticker.FuncFormatter(lambda value, _: f"{value:g}")  # 0.3, not 3x10^-1
        ax.xaxis.set_major_formatter(plain)
        ax.xaxis.set_minor_formatter(plain)
    ax.set_xlabel(X_AXES[x])
    ax.set_ylabel(f"{METRIC_LABELS.get(metric, metric)} (%)")
    ax.set_title(f"{best['model']} · {best['dataset']} · {probe} probe", fontsize=10)
    ax.grid(alpha=0.3)
    if n_layers <= _INSIDE_LEGEND:
        ax.legend(fontsize=7, title="layer", title_fontsize=8)
    elif legend_outside:
        ax.legend(
            fontsize=6,
            title="layer",
            title_fontsize=7,
            loc="upper left",
            bbox_to_anchor=(1.01, 1.0),
            ncols=1 if n_layers <= 20 else 2,
        )
    else:
        fig.colorbar(mpl.cm.ScalarMappable(norm=norm, cmap=cmap), ax=ax, label="layer depth")
    if note:
        ax.text(0.99, 0.01, note, transform=ax.transAxes, ha="right", va="bottom", fontsize=7, color="dimgray")
    return save_figure(fig, out_path)
