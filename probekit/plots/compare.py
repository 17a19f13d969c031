"""Several models on one accuracy-vs-noise axis: each model's best layer, across noise levels.

A DDPM indexed by t in 0..999, an EDM indexed by Karras step and a DiT in latent space share no
timestep axis, but every results row carries sigma and logSNR, so ``x="sigma"`` or ``x="logsnr"``
puts them on one comparable axis. ``x="t"`` is refused for models whose ``t`` means different
noise levels (told apart by the sigma each row records).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from probekit.core.errors import ProbekitError
from probekit.evaluate.results import best_cells
from probekit.plots._common import METRIC_LABELS, new_figure, save_figure
from probekit.plots.curves import X_AXES


def comparison_lines(table: pd.DataFrame, probe: str, metric: str = "top1", *, x: str = "t") -> dict[str, pd.DataFrame]:
    """``{"model (layer)": test rows sorted by x}``: for each (model, dataset), its val-chosen cell's layer at every
    noise level.

    Rows whose ``x`` cannot be drawn (sigma 0 or infinite on a log axis, infinite logSNR) are left out.
    """
    if x not in X_AXES:
        raise ProbekitError(f"x must be one of {', '.join(X_AXES)}, got {x!r}")
    rows = table[(table["probe"] == probe) & (table["metric"] == metric)]
    if rows.empty:
        raise ProbekitError(f"no {metric} rows for probe {probe!r} in the results")
    if x == "t":
        _require_one_meaning_of_t(rows)
    lines = {}
    for (model, dataset), own in rows.groupby(["model", "dataset"], sort=False):
        layer = best_cells(own, metric).iloc[0]["layer"]  # val-chosen
        line = own[(own["layer"] == layer) & (own["split"] == "test")]
        drawable = (line["sigma"] > 0) & np.isfinite(line["sigma"]) if x == "sigma" else np.isfinite(line[x])
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


def _require_one_meaning_of_t(rows: pd.DataFrame) -> None:
    """Refuse a shared ``t`` axis unless every model maps ``t`` to the same noise level.

    Two models agree when each ``t`` they share has the same sigma and the sigmas of all their ``t``
    together still grow with ``t`` (one schedule seen on two grids). A DDPM index 0..999 and an EDM
    step 1..18, or a linear and a cosine DDPM, fail one of the two.
    """
    per_model = rows.groupby("model")[["t", "sigma"]].apply(lambda g: g.groupby("t")["sigma"].first())
    if isinstance(per_model, pd.DataFrame):  # one grid shared by every model comes back wide
        per_model = per_model.stack()
    models = list(dict.fromkeys(rows["model"]))
    if len(models) < 2:
        return
    first = per_model.loc[models[0]]
    for other in models[1:]:
        mine = per_model.loc[other]
        shared = first.index.intersection(mine.index)
        differ = [t for t in shared if not np.isclose(first[t], mine[t], rtol=1e-6, atol=0.0)]
        merged = pd.concat([first, mine[~mine.index.isin(shared)]]).sort_index()
        if differ or not merged.is_monotonic_increasing:
            where = (
                f"at t = {differ[0]} sigma is {first[differ[0]]:.4g} for {models[0]} but {mine[differ[0]]:.4g} for "
                f"{other}"
                if differ
                else "their sigmas do not grow together with t"
            )
            raise ProbekitError(
                f"t means different noise levels for {models[0]} and {other} ({where}): compare them with --x sigma or "
                "--x logsnr"
            )
