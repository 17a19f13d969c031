"""The report's interactive figures: plotly figure specs (JSON) drawn from the results tables.

plotly.js renders them in the page (its bundle is inlined once, so the page needs no network).
Every number a hover shows is formatted here, in Python, from the table's rows, so that the page
and a test reading the same CSV agree to the printed digit. ``probekit plot`` keeps writing the
static PNG figures for papers from the same tables.

A heatmap cell carries a key ``model|probe|t|layer`` (:func:`cell_key`); a click on it opens that
cell's panel (:mod:`probekit.plots.report_cells`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from probekit.evaluate.results import best_cells
from probekit.plots._common import METRIC_LABELS, PERCENT_METRICS
from probekit.plots.curves import X_AXES

# Pixel sizes: a heatmap row tall enough for its printed value, a margin wide enough for layer names.
_ROW_PX = 22
_HEADER_PX = 120


def cell_key(model: object, probe: object, t: int, layer: object) -> str:
    """The key of one cell in the page's data: ``model|probe|t|layer``."""
    return f"{model}|{probe}|{int(t)}|{layer}"


def noise_text(t: int, sigma: float, logsnr: float) -> str:
    """The noise point as the hover and the panel show it: "t=T, σ=S, log-SNR L" (+inf for a clean input)."""
    snr = f"{logsnr:.2f}" if math.isfinite(logsnr) else ("+inf" if logsnr > 0 else "-inf")
    return f"t={int(t)}, σ={sigma:.3g}, log-SNR {snr}"


def value_text(value: float, percent: bool) -> str:
    """A value as the figures print it: one decimal in % for fractions, three decimals otherwise."""
    if value is None or not math.isfinite(value):
        return "–"
    return f"{100 * value:.1f}" if percent else f"{value:.3f}"


def _layer_order(rows: pd.DataFrame) -> list[str]:
    return list(rows.groupby("layer")["depth"].min().sort_values(kind="mergesort").index)


def _to_json(fig: go.Figure) -> str:
    return fig.to_json(validate=True, engine="json")


def grid_heatmap(
    table: pd.DataFrame,
    *,
    model: str,
    probe: str,
    metric: str,
    title: str,
    second: str | None = None,
    clickable: bool = True,
) -> str:
    """Test ``metric`` over layers (rows, forward order) x noise levels (columns), the val-chosen cell
    outlined. Hover: t, σ, log-SNR, layer, val and test value, the Wilson interval (when the table
    has one) and ``second`` (a dense task's other metric). Returns the plotly JSON.
    """
    own = table[(table["model"] == model) & (table["probe"] == probe)]
    rows = own[own["metric"] == metric]
    test = rows[rows["split"] == "test"].set_index(["t", "layer"])
    val = rows[rows["split"] == "val"].set_index(["t", "layer"])["value"]
    other = own[(own["metric"] == second) & (own["split"] == "test")].set_index(["t", "layer"])["value"]
    percent = metric in PERCENT_METRICS
    layers = _layer_order(rows)
    ts = sorted(test.index.get_level_values("t").unique())
    sigma = test.reset_index().groupby("t")["sigma"].first()
    logsnr = test.reset_index().groupby("t")["logsnr"].first()
    columns = [f"t={t}<br>σ={sigma[t]:.3g}" for t in ts]
    z = np.full((len(layers), len(ts)), np.nan)
    custom: list[list[list[str]]] = []
    for i, layer in enumerate(layers):
        line = []
        for j, t in enumerate(ts):
            if (t, layer) not in test.index:
                line.append(["", "", "", "", "", ""])
                continue
            r = test.loc[(t, layer)]
            z[i, j] = 100 * r["value"] if percent else r["value"]
            interval = ""
            if math.isfinite(r.get("ci_low", math.nan)) and math.isfinite(r.get("ci_high", math.nan)):
                interval = f"<br>Wilson 95 % [{value_text(r['ci_low'], percent)}, {value_text(r['ci_high'], percent)}]"
            extra = f"<br>test {second} {value_text(other[(t, layer)], percent)}" if (t, layer) in other.index else ""
            line.append(
                [
                    cell_key(model, probe, t, layer) if clickable else "",
                    noise_text(t, sigma[t], logsnr[t]),
                    value_text(val.get((t, layer), math.nan), percent),
                    value_text(r["value"], percent),
                    interval,
                    extra,
                ]
            )
        custom.append(line)
    unit = " (%)" if percent else ""
    fig = go.Figure(
        go.Heatmap(
            z=z,
            x=columns,
            y=layers,
            customdata=custom,
            colorscale="Viridis",
            colorbar={"title": {"text": f"test {METRIC_LABELS.get(metric, metric)}{unit}", "side": "right"}},
            texttemplate="%{z:.1f}" if percent else "%{z:.3f}",
            textfont={"size": 9},
            hovertemplate=(
                "<b>%{y}</b><br>%{customdata[1]}<br>val %{customdata[2]}, test %{customdata[3]}"
                + ("" if not percent else " (%)")
                + "%{customdata[4]}%{customdata[5]}<extra></extra>"
            ),
            xgap=1,
            ygap=1,
        )
    )
    shapes = []
    if percent and not val.empty:
        best = best_cells(rows, metric).iloc[0]
        i, j = layers.index(best["layer"]), ts.index(int(best["t"]))
        shapes.append(
            {
                "type": "rect",
                "x0": j - 0.5,
                "x1": j + 0.5,
                "y0": i - 0.5,
                "y1": i + 0.5,
                "line": {"color": "red", "width": 3},
                "xref": "x",
                "yref": "y",
            }
        )
    fig.update_layout(
        title={"text": title, "font": {"size": 13}},
        shapes=shapes,
        height=_HEADER_PX + _ROW_PX * len(layers),
        margin={"l": 10, "r": 10, "t": 90, "b": 10},
        xaxis={"side": "top", "type": "category"},
        yaxis={"title": {"text": "layer (forward order)"}, "autorange": "reversed", "type": "category"},
        meta={"clickable": clickable},
    )
    return _to_json(fig)


def _x_values(rows: pd.DataFrame, x: str) -> pd.Series:
    values = rows[x].astype(float)
    # A log axis cannot hold sigma = 0 (a clean input) or sigma = inf; log-SNR of a clean input is +inf.
    keep = np.isfinite(values) & ((values > 0) if x == "sigma" else True)
    return values.where(keep)


def curves(
    table: pd.DataFrame, *, model: str, probe: str, metric: str, x: str, title: str, shown: int = 4
) -> tuple[str, list[str]]:
    """Test ``metric`` against the noise axis ``x``, one trace per layer (forward order). Only the
    val-chosen cell's layer and the best-on-val layer of each stage start visible (``shown`` at most);
    the page's layer selector shows the others. Returns the plotly JSON and the trace names.
    """
    rows = table[
        (table["model"] == model) & (table["probe"] == probe) & (table["metric"] == metric) & (table["split"] == "test")
    ]
    percent = metric in PERCENT_METRICS
    layers = _layer_order(rows)
    val = table[
        (table["model"] == model) & (table["probe"] == probe) & (table["metric"] == metric) & (table["split"] == "val")
    ]
    visible: list[str] = []
    if not val.empty:
        ranked = val.sort_values(["value", "t", "depth"], ascending=[False, True, True], kind="mergesort")
        visible.append(
            str(best_cells(table[(table["model"] == model) & (table["probe"] == probe)], metric)["layer"].iloc[0])
        )
        for _, stage in ranked.groupby("stage", sort=False):
            visible.append(str(stage["layer"].iloc[0]))
    visible = list(dict.fromkeys(visible))[:shown] or layers[:shown]
    fig = go.Figure()
    for layer in layers:
        own = rows[rows["layer"] == layer].sort_values("t")
        xs = _x_values(own, x)
        keep = xs.notna()
        fig.add_trace(
            go.Scatter(
                x=xs[keep].tolist(),
                y=(own["value"][keep] * (100 if percent else 1)).tolist(),
                customdata=[[noise_text(t, s, l)] for t, s, l in zip(own["t"], own["sigma"], own["logsnr"])],
                name=layer,
                mode="lines+markers",
                visible=layer in visible,
                hovertemplate=f"<b>{layer}</b><br>%{{customdata[0]}}<br>test %{{y:.1f}}<extra></extra>",
            )
        )
    fig.update_layout(
        title={"text": title, "font": {"size": 13}},
        height=420,
        margin={"l": 10, "r": 10, "t": 50, "b": 10},
        xaxis={"title": {"text": X_AXES[x]}, "type": "log" if x == "sigma" else "linear"},
        yaxis={"title": {"text": f"test {METRIC_LABELS.get(metric, metric)}{' (%)' if percent else ''}"}},
        hovermode="closest",
        showlegend=True,  # also with one layer shown, so that the legend always names what is drawn
        legend={"font": {"size": 10}},
    )
    return _to_json(fig), layers


def label_efficiency(summary: pd.DataFrame, metric: str = "top1") -> str:
    """The label-efficiency summary (``label_efficiency_table``): mean over draws per budget, with
    bars from the lowest to the highest draw; hover names the budget, draws and chosen cells.
    """
    fig = go.Figure()
    for model, group in summary.groupby("model", sort=False):
        group = group.dropna(subset=["per_class"]).sort_values("per_class")
        fig.add_trace(
            go.Scatter(
                x=group["per_class"].tolist(),
                y=(100 * group["mean"]).tolist(),
                error_y={
                    "type": "data",
                    "array": (100 * (group["max"] - group["mean"])).tolist(),
                    "arrayminus": (100 * (group["mean"] - group["min"])).tolist(),
                },
                customdata=[
                    [b, d, f"{100 * lo:.1f}", f"{100 * hi:.1f}", c]
                    for b, d, lo, hi, c in zip(
                        group["labels_per_class"], group["draws"], group["min"], group["max"], group["cells"]
                    )
                ],
                name=str(model),
                mode="lines+markers",
                hovertemplate=(
                    f"<b>{model}</b><br>%{{customdata[0]}} labels per class, %{{customdata[1]}} draws<br>"
                    "test %{y:.1f} (min %{customdata[2]}, max %{customdata[3]})<br>%{customdata[4]}<extra></extra>"
                ),
            )
        )
    fig.update_layout(
        title={"text": "label efficiency: val-chosen cell's test top-1 per budget", "font": {"size": 13}},
        height=420,
        margin={"l": 10, "r": 10, "t": 50, "b": 10},
        xaxis={"title": {"text": "labelled train images per class"}, "type": "log"},
        yaxis={"title": {"text": f"test {METRIC_LABELS.get(metric, metric)} (%)"}},
    )
    return _to_json(fig)


def similarity_heatmap(rows: pd.DataFrame, title: str, label: str) -> str:
    """One similarity metric against one reference over layers x noise levels; hover gives the value."""
    layers = _layer_order(rows)
    ts = sorted(rows["t"].unique())
    first = rows.groupby("t")[["sigma", "logsnr"]].first()
    cells = rows.set_index(["t", "layer"])["value"]
    z = [[cells.get((t, layer), math.nan) for t in ts] for layer in layers]
    custom = [[[noise_text(t, first.loc[t, "sigma"], first.loc[t, "logsnr"])] for t in ts] for _ in layers]
    fig = go.Figure(
        go.Heatmap(
            z=z,
            x=[f"t={t}<br>σ={first.loc[t, 'sigma']:.3g}" for t in ts],
            y=layers,
            customdata=custom,
            colorscale="Magma",
            zmin=0.0,
            zmax=1.0,
            colorbar={"title": {"text": label, "side": "right"}},
            texttemplate="%{z:.2f}",
            textfont={"size": 9},
            hovertemplate="<b>%{y}</b><br>%{customdata[0]}<br>" + label + " %{z:.3f}<extra></extra>",
            xgap=1,
            ygap=1,
        )
    )
    fig.update_layout(
        title={"text": title, "font": {"size": 13}},
        height=_HEADER_PX + _ROW_PX * len(layers),
        margin={"l": 10, "r": 10, "t": 90, "b": 10},
        xaxis={"side": "top", "type": "category"},
        yaxis={"title": {"text": "layer (forward order)"}, "autorange": "reversed", "type": "category"},
    )
    return _to_json(fig)


def gridded_models(table: pd.DataFrame) -> Sequence[str]:
    """Models of ``table`` probed at more than one noise level (those a heatmap or curve can show)."""
    return [str(m) for m, own in table.groupby("model", sort=False) if own["t"].nunique() > 1]
