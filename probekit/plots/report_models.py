"""The report's comparison of several models: leaderboard, one log-SNR axis, heatmaps side by side.

Drawn when ``probekit report`` is given a leaderboard (``probekit leaderboard``, written by a run
of several models). Families index noise differently (a DDPM's t in 0..999, EDM's Karras step, a
flow model's time), so every curve is placed by the log-SNR its results rows record, never by t.
"""

from __future__ import annotations

import html
import math
from collections.abc import Callable, Mapping

import pandas as pd
import plotly.graph_objects as go

from probekit.evaluate.leaderboard import best_per_level
from probekit.plots import report_figures as rf
from probekit.plots.report_tables import percent, table_html

_PRIMARY = ("linear", "logreg", "sgd", "mlp", "knn")
AddFigure = Callable[..., str]  # the report's figure registry: add(spec, caption, in_section=...) -> HTML


def is_baseline(model: str) -> bool:
    """Pixels and random-init twins: drawn as references, not as models of the comparison."""
    return model == "pixels" or "(random init" in model


def _points(value: float) -> str:
    return "" if value is None or not math.isfinite(value) else f"{100 * value:+.1f}"


def leaderboard_rows(board: pd.DataFrame) -> list[list[object]]:
    """The leaderboard table's rows, as the page prints them."""
    rows: list[list[object]] = []
    for r in board.itertuples():
        best = r.name == r.best
        noise = rf.noise_text(int(r.t), float(r.sigma), float(r.logsnr)).split(", ", 1)[1]
        rows.append(
            [
                r.probe,
                int(r.rank),
                r.name,
                f"t={int(r.t)} {r.layer} ({noise})",
                percent(r.val_top1),
                percent(r.test_top1),
                f"[{percent(r.ci_low)}, {percent(r.ci_high)}]",
                "best on val" if best else _points(r.diff),
                "" if best else f"[{_points(r.diff_low)}, {_points(r.diff_high)}]",
                "" if best else f"{r.p_value:.3g}",
                "" if best else f"{r.p_holm:.3g}",
            ]
        )
    return rows


def logsnr_figure(tables: Mapping[str, pd.DataFrame], probe: str, references: Mapping[str, float]) -> str:
    """Test top-1 against log-SNR: per model, the val-chosen layer at each noise level (solid), and
    every layer's own curve (hidden until ticked in the legend); ``references`` as dashed lines.
    """
    fig = go.Figure()
    for name, table in tables.items():
        rows = table[(table["probe"] == probe) & (table["metric"] == "top1")]
        if rows.empty:
            continue
        best = best_per_level(rows, probe)
        finite = best[best["logsnr"].map(math.isfinite)]
        fig.add_trace(
            go.Scatter(
                x=finite["logsnr"].tolist(),
                y=(100 * finite["value"]).tolist(),
                customdata=[[layer, percent(v)] for layer, v in zip(finite["layer"], finite["val_value"])],
                name=f"{name} (best layer per level)",
                legendgroup=name,
                mode="lines+markers",
                hovertemplate=f"<b>{html.escape(name)}</b> %{{customdata[0]}}<br>log-SNR %{{x:.2f}}<br>"
                "test %{y:.1f} (val %{customdata[1]})<extra></extra>",
            )
        )
        test = rows[rows["split"] == "test"]
        for layer, own in test.groupby("layer", sort=False):
            own = own[own["logsnr"].map(math.isfinite)].sort_values("logsnr")
            fig.add_trace(
                go.Scatter(
                    x=own["logsnr"].tolist(),
                    y=(100 * own["value"]).tolist(),
                    name=f"{name} · {layer}",
                    legendgroup=name,
                    mode="lines",
                    line={"width": 1},
                    visible="legendonly",
                    hovertemplate=f"{html.escape(name)} · {html.escape(str(layer))}<br>log-SNR %{{x:.2f}}<br>"
                    "test %{y:.1f}<extra></extra>",
                )
            )
    for label, value in references.items():
        fig.add_hline(y=100 * value, line={"dash": "dash", "width": 1}, annotation_text=f"{label} {100 * value:.1f}")
    fig.update_layout(
        title={"text": f"{probe} probe · test top-1 against log-SNR (more noise to the right)", "font": {"size": 13}},
        height=460,
        margin={"l": 10, "r": 10, "t": 50, "b": 10},
        xaxis={"title": {"text": "log-SNR = log(alpha_bar / (1 - alpha_bar))"}, "autorange": "reversed"},
        yaxis={"title": {"text": "test top-1 (%)"}},
        hovermode="closest",
        legend={"font": {"size": 10}},
    )
    return fig.to_json(validate=True, engine="json")


def models_section(board: pd.DataFrame, tables: Mapping[str, pd.DataFrame], add: AddFigure) -> str:
    """The section's HTML: the leaderboard, the log-SNR curves and the heatmaps side by side.

    ``tables``: each results table of the leaderboard by its model (the table's ``model`` column);
    ``add``: registers a figure and returns its HTML block.
    """
    order = {probe: i for i, probe in enumerate(_PRIMARY)}  # the linear probe first: the answer
    probes = sorted(set(board["probe"]), key=lambda p: (order.get(p, len(order)), p))
    board = pd.concat([board[board["probe"] == p] for p in probes], ignore_index=True)
    names = dict(zip(board["model"], board["name"]))
    models = {names[m]: t for m, t in tables.items() if m in names and not is_baseline(m)}
    parts = [
        "<h2>Models compared</h2>",
        "<p class=note>Per probe, each run's cell is chosen on its validation split and scored on the same test "
        "images: test top-1 with a bootstrap 95 % interval; the best run on val is compared with every other by a "
        "paired bootstrap interval of the difference and an exact McNemar test, whose p-values are adjusted "
        "together by Holm's method (<code>probekit leaderboard</code>).</p>",
        table_html(
            ["probe", "rank", "run", "val-chosen cell", "val %", "test %", "95 % interval", "− best", "95 % interval"]
            + ["McNemar p", "Holm p"],
            leaderboard_rows(board),
            numeric=(4, 5, 7),
        ),
    ]
    for probe in probes:
        references = {
            str(r.name): float(r.test_top1)
            for r in board[board["probe"] == probe].itertuples()
            if is_baseline(str(r.model))
        }
        parts.append(
            add(
                logsnr_figure(models, probe, references),
                f"{probe}: every model on one log-SNR axis (its recorded value, not its t); tick a layer in the "
                "legend to draw its own curve; dashed: the baselines' val-chosen cells",
                in_section=False,
            )
        )
        heatmaps = [
            add(
                rf.grid_heatmap(
                    table, model=str(table["model"].iloc[0]), probe=probe, metric="top1", title=f"{name} · {probe}"
                ),
                f"{name}: test top-1 over noise x depth (red: val-chosen cell)",
                in_section=False,
            )
            for name, table in models.items()
            if ((table["probe"] == probe) & (table["t"].nunique() > 1)).any()
        ]
        grid = "display:grid;grid-template-columns:repeat(auto-fit,minmax(420px,1fr));gap:8px"
        parts.append(f'<div class=side-by-side style="{grid}">{"".join(heatmaps)}</div>')
    return "\n".join(parts)
