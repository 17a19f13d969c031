"""``probekit report``: one self-contained HTML page from results tables (no network needed to view).

The page opens with the answer: per model, the val-chosen cell with its test top-1 and Wilson 95 %
interval, the paired differences of the first model to every baseline (interval, McNemar p), and
the first model's heatmap beside it. Then:

1. every val-chosen best cell (fusion probes included), the paired comparisons (``probekit compare``),
   the dense probes and their comparisons (``probekit dense-compare``) and label efficiency;
2. interactive figures (plotly, its JavaScript inlined): heatmaps over noise x depth whose hover
   gives t, σ, log-SNR, layer, val and test value and interval, and whose click opens the cell's
   panel; accuracy against noise with a layer selector; dense heatmaps; label efficiency;
   similarity maps;
3. static figures (the CKA matrix, fusion-mixture weights, the PNGs given with ``images``);
4. collapsed: what was run (results files, protocol, caches) and the commands.

A cell's panel (:mod:`probekit.plots.report_cells`) holds its numbers and, from the predictions
sidecar, its test confusion matrix and per-class recall. Tables: :mod:`probekit.plots.report_tables`;
figures: :mod:`probekit.plots.report_figures`. Orchestration only (it imports no models and no probes).
"""

from __future__ import annotations

import base64
import html
import json
import os
import tempfile
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

from probekit._version import __version__
from probekit.core.atomic import publish
from probekit.core.errors import ProbekitError
from probekit.core.specs import probe_order
from probekit.evaluate.results import best_cells, read_table
from probekit.plots import report_figures as rf
from probekit.plots.curves import X_AXES
from probekit.plots.report_cells import cell_panels
from probekit.plots.report_dense_cells import dense_panels
from probekit.plots.report_feature_maps import feature_map_panels
from probekit.plots.report_neighbours import neighbour_panels
from probekit.plots.report_script import SCRIPT, STYLE
from probekit.plots.report_sections import dense_section, label_section
from probekit.plots.report_tables import (
    DENSE,
    Paired,
    best_rows,
    cache_rows,
    chosen_name,
    comparison_rows,
    paired_comparisons,
    percent,
    protocol_rows,
    table_html,
    table_kind,
)


def _image_html(path: Path, caption: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return (
        f'<figure><img alt="{html.escape(caption)}" src="data:image/png;base64,{data}">'
        f"<figcaption>{html.escape(caption)}</figcaption></figure>"
    )


def _preferred(probes: Sequence[str]) -> str:
    return probe_order(probes)[0]


class _Figures:
    """The interactive figures of the page, in order, each with a unique div id."""

    def __init__(self) -> None:
        self.specs: dict[str, str] = {}
        self.html: list[str] = []

    def add(self, spec: str, caption: str, selector: bool = False, *, in_section: bool = True) -> str:
        """Register a figure and return its HTML block; ``in_section``: also list it in the figures section."""
        name = f"fig-{len(self.specs)}"
        self.specs[name] = spec
        extra = f'<div class=layer-selector data-for="{name}"></div>' if selector else ""
        block = (
            f'<figure class=plot><div id="{name}" class=plotly-fig></div>{extra}'
            f"<figcaption>{html.escape(caption)}</figcaption></figure>"
        )
        if in_section:
            self.html.append(block)
        return block


def _probe_figures(figures: _Figures, tables: dict[Path, pd.DataFrame], x: str) -> None:
    for table in (t for t in tables.values() if table_kind(t) == "probe"):
        for model in rf.gridded_models(table):
            own = table[table["model"] == model]
            for probe in probe_order(own["probe"]):
                title = f"{model} · {probe} probe · test top-1 (red: val-chosen cell; click a cell)"
                figures.add(
                    rf.grid_heatmap(own, model=model, probe=probe, metric="top1", title=title),
                    f"heatmap {probe}, {model}: hover for val and test top-1 and interval, click for the cell's panel",
                )
                spec, _ = rf.curves(
                    own, model=model, probe=probe, metric="top1", x=x, title=f"{model} · {probe} probe · test top-1"
                )
                figures.add(spec, f"accuracy vs {x}, {probe}, {model}: tick layers to show their curves", True)
    for table in (t for t in tables.values() if table_kind(t) in DENSE):
        kind = table_kind(table)
        metric, second = DENSE[kind].metric, DENSE[kind].second
        for model in rf.gridded_models(table[table["metric"] == metric]):
            for probe in sorted(set(table.loc[table["model"] == model, "probe"])):
                title = f"{kind}: {model} · {probe} · test {metric} (red: val-chosen cell; click a cell)"
                figures.add(
                    rf.grid_heatmap(table, model=model, probe=probe, metric=metric, second=second, title=title),
                    f"{kind}: heatmap {probe} ({metric}), {model}: click a cell for its confusion or worst pairs",
                )
    labelled = [t for t in tables.values() if table_kind(t) == "labels"]
    if labelled:
        from probekit.plots.label_efficiency import label_efficiency_table

        summary = label_efficiency_table(pd.concat(labelled, ignore_index=True))
        figures.add(rf.label_efficiency(summary), "label efficiency: val-chosen cell's test top-1 vs labels per class")
    for table in (t for t in tables.values() if table_kind(t) == "similarity"):
        from probekit.plots.similarity import SIMILARITY_LABELS, similarity_references

        for model, reference in similarity_references(table):
            rows = table[(table["model"] == model) & (table["reference"] == reference)]
            for metric in sorted(set(rows["metric"])):
                label = SIMILARITY_LABELS.get(metric, metric)
                figures.add(
                    rf.similarity_heatmap(rows[rows["metric"] == metric], f"{model} vs {reference} · {label}", label),
                    f"similarity {metric} {reference}, {model}",
                )


def _static_figures(tables: dict[Path, pd.DataFrame], folder: Path, x: str) -> list[tuple[Path, str]]:
    """PNG figures without an interactive twin: the CKA matrix, mixture weights, several models' curves."""
    from probekit.plots.compare import plot_model_comparison
    from probekit.plots.fusion import plot_mixture_weights
    from probekit.plots.similarity import plot_cka_matrix

    out: list[tuple[Path, str]] = []
    probes = [t for t in tables.values() if table_kind(t) == "probe"]
    if probes:
        combined = pd.concat(probes, ignore_index=True)
        gridded = rf.gridded_models(combined)
        if len(gridded) > 1:
            shown = combined[combined["model"].isin(gridded)]
            for probe in sorted(set(shown["probe"])):
                if shown[shown["probe"] == probe]["model"].nunique() > 1:
                    path = plot_model_comparison(shown, probe, folder / f"compare_{probe}.png", x=x)
                    out.append((path, f"compare acc vs {x} {probe}"))
    for i, table in enumerate(t for t in tables.values() if table_kind(t) == "similarity"):
        for model in sorted(set(table["model"])):
            if "reference" in table.columns and ((table["reference"] == "self") & (table["model"] == model)).any():
                out.append((plot_cka_matrix(table, folder / f"cka{i}_{len(out)}.png", model=model), "cka matrix"))
    for i, table in enumerate(t for t in tables.values() if table_kind(t) == "fusion"):
        if (table["metric"] == "mixture_weight").any():
            path = plot_mixture_weights(table, folder / f"fusion{i}" / "fusion_weights.png")
            out.append((path, f"fusion-mixture weights, {table['model'].iloc[0]}"))
    return out


def _answer(tables: dict[Path, pd.DataFrame], comparisons: Sequence[Paired], figures: _Figures) -> str:
    """The first screen: a card per probed model (its val-chosen cell) and the first model's heatmap."""
    runs = [t for t in tables.values() if table_kind(t) == "probe"]
    if not runs:
        return ""
    cards = []
    for i, table in enumerate(runs):
        for model, own in table.groupby("model", sort=False):
            probe = _preferred(sorted(set(own["probe"])))
            best = best_cells(own[own["probe"] == probe]).iloc[0]
            key = rf.cell_key(model, probe, best["t"], best["layer"])
            noise = rf.noise_text(best["t"], float(best["sigma"]), float(best["logsnr"]))
            lines = ""
            if i == 0:
                items = []
                for result in (c.result for c in comparisons if c.baseline and c.result is not None):
                    assert result is not None  # filtered above
                    p = result.paired
                    items.append(
                        f"<li>vs {html.escape(chosen_name(result.b))}: <b>{100 * p.diff:+.1f}</b> points "
                        f"[{100 * p.ci_low:+.1f}, {100 * p.ci_high:+.1f}], McNemar p = {p.p_value:.3g} "
                        f"({html.escape(result.a.probe)} probes, {p.n} test images)</li>"
                    )
                lines = f"<ul class=paired>{''.join(items)}</ul>" if items else ""
            cards.append(
                f'<div class=card data-model="{html.escape(str(model))}">'
                f"<div><b>{html.escape(str(model))}</b> · {html.escape(probe)} probe</div>"
                f"<div>val-chosen cell <b>t={int(best['t'])} {html.escape(str(best['layer']))}</b> "
                f"<span class=note>({html.escape(noise)})</span>"
                f'<button class=open type=button data-cell="{html.escape(key)}">open cell</button></div>'
                f"<div><span class=big>{percent(best['value'])} %</span> test top-1 "
                f"[{percent(best['ci_low'])}, {percent(best['ci_high'])}] "
                f"<span class=note>(Wilson 95 %; val {percent(best['val_value'])} %)</span></div>{lines}</div>"
            )
    first = runs[0]
    heatmap = ""
    gridded = rf.gridded_models(first)
    if gridded:
        own = first[first["model"] == gridded[0]]
        probe = _preferred(sorted(set(own["probe"])))
        heatmap = figures.add(
            rf.grid_heatmap(
                own,
                model=gridded[0],
                probe=probe,
                metric="top1",
                title=f"{gridded[0]} · {probe} probe · test top-1 (red: val-chosen; click a cell)",
            ),
            "hover a cell for its numbers; click it for its confusion matrix and per-class recall",
            in_section=False,  # drawn here; the figures section has its own copy
        )
    return (
        "<h2>The answer</h2><div class=answer><div>"
        + "".join(cards)
        + "<p class=note>Each cell is chosen on the validation split and reported on test; differences are "
        "paired on the same test images (bootstrap 95 % interval, exact McNemar test).</p></div>"
        + f"<div>{heatmap}</div></div>"
    )


def _budget_note(heavy: dict[str, dict], missing: Sequence[str]) -> str:
    """What the cell panels carry, so a reader knows why some cells have images and others not."""
    if not heavy and not missing:
        return ""  # no probe run: the panels hold numbers only, nothing to explain
    text = (
        "Cell panels: every cell of a probe or fusion run has its numbers, test confusion matrix and per-class "
        "recall (from the predictions sidecar). To keep the page light only each model's val-chosen cell carries "
        "images: a few test images with their nearest train images, and a 2-D embedding of the test images "
        "with a thumbnail on hover"
    )
    if heavy:
        text += f" ({len(heavy)} cell{'s' if len(heavy) > 1 else ''} here)."
    else:
        text += " (none here: give the models' pooled caches with --cache)."
    if missing:
        text += " Without images: " + "; ".join(missing) + "."
    return f"<p class=note id=panel-budget>{html.escape(text)}</p>"


def _maps_note(maps: dict[str, dict], missing: Sequence[str]) -> str:
    """What the segmentation cells' panels carry besides numbers."""
    if not maps and not missing:
        return ""
    text = (
        "Segmentation panels: the val-chosen cell of each run also shows a few test images, their ground-truth "
        f"masks and its spatial features as colours (first three principal components as RGB; {len(maps)} here)."
    )
    if missing:
        text += " Without them: " + "; ".join(missing) + "."
    return f"<p class=note id=maps-budget>{html.escape(text)}</p>"


def _write(page: str, out: Path) -> None:
    fd, tmp_path = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(page)
        publish(tmp_path, out)
    except BaseException:
        Path(tmp_path).unlink(missing_ok=True)
        raise


def _data_script(figures: _Figures, cells: dict, classes: dict) -> str:
    """The page's data as one JSON block; ``</`` escaped so that no string can end the script element."""
    blob = (
        '{"figures": {'
        + ", ".join(f"{json.dumps(name)}: {spec}" for name, spec in figures.specs.items())
        + f'}}, "cells": {json.dumps(cells)}, "classes": {json.dumps(classes)}}}'
    )
    blob = blob.replace("</", "<\\/")
    return f'<script type="application/json" id="probekit-data">{blob}</script>'


def build_report(
    results: Sequence[str | os.PathLike],
    out: str | os.PathLike,
    *,
    caches: Sequence[str | os.PathLike] = (),
    images: Sequence[str | os.PathLike] = (),
    commands: Sequence[str] = (),
    title: str = "probekit report",
    x: str = "t",
    n_boot: int = 10_000,
    leaderboard: str | os.PathLike | None = None,
) -> Path:
    """Write the report page to ``out`` (atomically) and return its path. See the module docstring."""
    import plotly.offline

    if not results:
        raise ProbekitError("give at least one results CSV with --results")
    if x not in X_AXES:
        raise ProbekitError(f"--x must be one of {', '.join(X_AXES)}, got {x!r}")
    tables = {Path(p): read_table(p) for p in results}
    for image in images:
        if not Path(image).is_file() or Path(image).read_bytes()[:8] != b"\x89PNG\r\n\x1a\n":
            raise ProbekitError(f"--images {image} is not a PNG file")
    cache_paths = [Path(c) for c in caches]
    run_cache_rows, cache_commands = cache_rows(cache_paths)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    comparisons = paired_comparisons(tables, n_boot)
    figures = _Figures()
    models = ""
    if leaderboard is not None:  # several models: their comparison comes first
        from probekit.evaluate.leaderboard import read_leaderboard
        from probekit.plots.report_models import models_section

        by_model = {
            str(m): own
            for t in tables.values()
            if table_kind(t) == "probe"
            for m, own in t.groupby("model", sort=False)
        }
        models = models_section(read_leaderboard(leaderboard), by_model, figures.add)
    answer = _answer(tables, comparisons, figures)
    _probe_figures(figures, tables, x)
    with tempfile.TemporaryDirectory(prefix="probekit-report-") as tmp:
        static = _static_figures(tables, Path(tmp), x) + [(Path(i), Path(i).stem.replace("_", " ")) for i in images]
        static_html = "\n".join(_image_html(path, caption) for path, caption in static)
    cells, classes = cell_panels(tables, cache_paths)
    dense_cells, mask_classes = dense_panels(tables)
    cells.update(dense_cells)
    classes.update(mask_classes)
    heavy, missing = neighbour_panels(tables, cache_paths)
    for key, entry in heavy.items():
        if key in cells:
            cells[key]["neighbours"] = entry
    maps, missing_maps = feature_map_panels(tables, cache_paths)
    for key, entry in maps.items():
        if key in cells:
            cells[key]["maps"] = entry
    parts = [
        f"<h1>{html.escape(title)}</h1>",
        f"<p class=note>probekit {__version__}, written {datetime.now(timezone.utc).isoformat(timespec='seconds')}. "
        "Every number below is read from the results tables listed under “What was run”; “best” means chosen on "
        "the validation split and reported on test. Click a heatmap cell or a table row to open that cell.</p>",
        models,
        answer,
        _budget_note(heavy, missing),
        _maps_note(maps, missing_maps),
    ]
    best, keys = best_rows(tables)
    if best:
        parts += [
            "<h2>Val-chosen best cells</h2>",
            table_html(
                ["model", "probe", "cell", "setting", "val top-1 %", "test top-1 %", "Wilson 95 %", "chosen on"],
                best,
                numeric=(4, 5),
                keys=[k if k in cells else "" for k in keys],
            ),
        ]
    if comparisons:
        parts += [
            "<h2>Paired comparisons (A − B on the same test images)</h2>",
            "<p class=note>Paired bootstrap 95 % interval of the accuracy difference and exact McNemar test "
            "on the discordant images (<code>probekit compare</code>).</p>",
            table_html(
                ["A", "B", "A %", "B %", "A − B (points)", "95 % interval", "McNemar"],
                comparison_rows(comparisons),
                numeric=(2, 3, 4),
            ),
        ]
    parts += [dense_section(tables, n_boot), label_section(tables)]
    parts += [
        "<h2>Figures</h2>",
        "\n".join(figures.html) or "<p class=note>no interactive figures (no run with a noise grid)</p>",
    ]
    if static_html:
        parts += ["<h2>Static figures</h2>", static_html]
    run = table_html(["results", "kind", "model", "dataset", "probes / metrics", "protocol"], protocol_rows(tables))
    if run_cache_rows:
        header = ["cache", "model", "framework", "dataset", "images", "noise levels", "layers", "pooling", "draws"]
        run += table_html([*header, "views", "precision", "model fingerprint"], run_cache_rows)
    parts.append(f"<details id=what-was-run><summary>What was run</summary>{run}</details>")
    all_commands = cache_commands + [c for c in commands if c.strip()]
    if all_commands:
        parts.append(
            "<details id=commands><summary>Commands</summary>"
            f"<pre>{html.escape(chr(10).join(all_commands))}</pre></details>"
        )
    parts.append("<aside id=cell-panel hidden></aside>")
    page = (
        "<!DOCTYPE html>\n<html lang=en><head><meta charset=utf-8>"
        f"<title>{html.escape(title)}</title><style>{STYLE}</style></head>\n<body>\n"
        + "\n".join(p for p in parts if p)
        + "\n"
        + _data_script(figures, cells, classes)
        + f"\n<script>{plotly.offline.get_plotlyjs()}</script>\n<script>{SCRIPT}</script>\n</body></html>\n"
    )
    _write(page, out)
    return out
