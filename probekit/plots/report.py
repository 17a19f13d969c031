"""``probekit report``: one self-contained HTML page from results tables (no network needed to view).

Every figure is drawn from the tables (plus any PNG given with ``images``, e.g. a t-SNE) and
embedded as a base64 ``data:`` URI; styles are inline. The page holds:

1. what was run: models, dataset, the evaluation protocol (train / val / test sizes, where each
   choice was made) and, from the caches given, framework, grid, layers, pooling and draws;
2. the val-chosen best cell of every (model, probe), with its test top-1 and Wilson 95 % interval,
   fusion probes included;
3. paired comparisons (``probekit compare``) of the first classification run against every other
   one, and of each fusion probe against the best single cell of its model;
4. dense probes, when ``segment`` / ``correspond`` tables are given: each run's val-chosen cell,
   the paired comparisons (``probekit dense-compare``) of the first run of each task against the
   others, and where the global probe's val-chosen cell scores on the dense tasks;
5. label efficiency, when ``probe --labels-per-class`` tables are given: the val-chosen cell's
   test accuracy per budget (mean, min and max over draws);
6. heatmaps, accuracy-vs-noise curves (dense metrics included), similarity maps, the cell x cell
   CKA matrix, the fusion mixture weights, the label-efficiency curve and the extra images;
7. the commands: each cache's recorded ``command`` attribute and the lines of a commands file.

Orchestration over results, compare and plots (it imports no models and no probes).
"""

from __future__ import annotations

import base64
import html
import math
import os
import tempfile
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

from probekit._version import __version__
from probekit.core.atomic import publish
from probekit.core.errors import ProbekitError
from probekit.evaluate.compare import compare_runs
from probekit.evaluate.predictions import predictions_path
from probekit.evaluate.results import best_cells, read_table
from probekit.features.cache import FeatureCache

_FUSED = "fused"

_STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:2em auto;max-width:1200px;
     padding:0 1em;color:#222;line-height:1.45}
h1{font-size:1.6em;margin-bottom:.2em} h2{border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:2em}
table{border-collapse:collapse;margin:.6em 0;font-size:.9em} th,td{border:1px solid #ddd;padding:.3em
.6em;text-align:left}
th{background:#f3f3f3} td.num{text-align:right;font-variant-numeric:tabular-nums}
figure{display:inline-block;margin:.6em;vertical-align:top;max-width:48%} figure
img{max-width:100%;height:auto;border:1px solid #eee}
figcaption{font-size:.85em;color:#555} pre{background:#f6f6f6;padding:.8em;overflow-x:auto;font-size:.85em}
.note{color:#666;font-size:.9em} .warn{color:#a40}
"""

# Sets a marker on <body> once every image has decoded with a non-zero size (checked by the
# browser test; harmless for a reader).
_MARKER_SCRIPT = """
window.addEventListener('load', function () {
  var images = Array.prototype.slice.call(document.images);
  var ok = images.filter(function (im) { return im.complete && im.naturalWidth > 0; }).length;
  document.body.setAttribute('data-images-rendered', ok + '/' + images.length);
});
"""


# task: (metric the cell is chosen on, its second metric, what is scored, the unit a comparison resamples)
_DENSE = {
    "segment": ("miou", "pixel_accuracy", "pixels", "images"),
    "correspond": ("pck", "pck_point", "pairs", "pairs"),
}


def _kind(table: pd.DataFrame) -> str:
    """What a results table holds: "similarity", "fusion", "labels", "segment", "correspond" or "probe"."""
    if (table["probe"] == "similarity").all():
        return "similarity"
    if "labels_per_class" in table.columns:
        return "labels"
    for task, (metric, *_) in _DENSE.items():
        if (table["metric"] == metric).any():
            return task
    if (table["layer"] == _FUSED).any():
        return "fusion"
    return "probe"


def _percent(value: float) -> str:
    return "" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{100 * value:.1f}"


def _table_html(header: Sequence[str], rows: Sequence[Sequence[object]], numeric: Sequence[int] = ()) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join(
        "<tr>"
        + "".join(f"<td{' class=num' if i in numeric else ''}>{html.escape(str(v))}</td>" for i, v in enumerate(r))
        + "</tr>"
        for r in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def _image_html(path: Path, caption: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return (
        f'<figure><img alt="{html.escape(caption)}" src="data:image/png;base64,{data}">'
        f"<figcaption>{html.escape(caption)}</figcaption></figure>"
    )


def _protocol_rows(tables: dict[Path, pd.DataFrame]) -> list[list[object]]:
    rows = []
    for path, table in tables.items():
        kind = _kind(table)
        for (model, dataset), group in table.groupby(["model", "dataset"], sort=False):
            sizes = group.groupby("split")["n_eval"].max().to_dict()
            if kind == "similarity":
                protocol = f"{int(sizes.get('test', max(sizes.values())))} images, seeded subsample"
            elif kind in _DENSE:
                unit = _DENSE[kind][2]
                fit = f"fit on {int(group['n_train'].max())} {unit}, " if kind == "segment" else "nothing fitted, "
                protocol = (
                    f"{fit}val {int(sizes.get('val', 0))} {unit}, test {int(sizes.get('test', 0))} {unit}; "
                    "chosen on val"
                )
            elif kind == "labels":
                budgets = ", ".join(dict.fromkeys(group["labels_per_class"].astype(str)))
                protocol = (
                    f"fit on {budgets} labels per class ({int(group['budget_draw'].max()) + 1} draws each), "
                    f"val {int(sizes.get('val', 0))}, test {int(sizes.get('test', 0))}; chosen on val per draw"
                )
            else:
                chosen = "val" if "val" in sizes else "test (no validation split)"
                protocol = (
                    f"fit on {int(group['n_train'].max())}, val {int(sizes.get('val', 0))}, "
                    f"test {int(sizes.get('test', 0))}; chosen on {chosen}"
                )
            probes = ", ".join(sorted(set(group["probe"]) - {""}))
            rows.append([path.name, kind, model, dataset, probes, protocol])
    return rows


def _best_rows(tables: dict[Path, pd.DataFrame]) -> list[list[object]]:
    rows = []
    for table in tables.values():
        if _kind(table) not in ("probe", "fusion"):
            continue
        for r in best_cells(table).itertuples(index=False):
            cell = getattr(r, "cells", "") if r.layer == _FUSED else f"t={r.t} (σ={r.sigma:.3g}) {r.layer}"
            rows.append(
                [
                    r.model,
                    r.probe,
                    cell,
                    r.params,
                    _percent(r.val_value),
                    _percent(r.value),
                    f"[{_percent(r.ci_low)}, {_percent(r.ci_high)}]",
                    r.chosen_on,
                ]
            )
    return rows


def _common_probe(a: pd.DataFrame, b: pd.DataFrame) -> str | None:
    shared = set(a["probe"]) & set(b["probe"])
    for preferred in ("linear", "logreg", "sgd", "mlp", "knn"):
        if preferred in shared:
            return preferred
    return sorted(shared)[0] if shared else None


def _comparison_rows(tables: dict[Path, pd.DataFrame], n_boot: int) -> list[list[object]]:
    """A minus B for: first probe run vs every other probe run; each fusion probe vs its model's run."""
    runs = [p for p, t in tables.items() if _kind(t) == "probe" and predictions_path(p).is_file()]
    pairs: list[tuple[Path, Path, str, str]] = []
    for other in runs[1:]:
        probe = _common_probe(tables[runs[0]], tables[other])
        if probe:
            pairs.append((runs[0], other, probe, probe))
    for path, table in tables.items():
        if _kind(table) != "fusion" or not predictions_path(path).is_file():
            continue
        model = table["model"].iloc[0]
        same = [p for p in runs if model in set(tables[p]["model"])]
        if not same:
            continue
        baseline = "linear" if "linear" in set(tables[same[0]]["probe"]) else sorted(set(tables[same[0]]["probe"]))[0]
        for probe in sorted(set(table.loc[table["layer"] == _FUSED, "probe"])):
            pairs.append((path, same[0], probe, baseline))
    rows = []
    for a, b, probe_a, probe_b in pairs:
        try:
            c = compare_runs(a, b, probe=probe_a, probe_b=probe_b, n_boot=n_boot)
        except ProbekitError as err:
            rows.append([f"{a.name} {probe_a}", f"{b.name} {probe_b}", "", "", "", "", f"not comparable: {err}"])
            continue
        p = c.paired
        rows.append(
            [
                f"{c.a.model} {probe_a} ({'fused' if c.a.layer == _FUSED else f't={c.a.t} {c.a.layer}'})",
                f"{c.b.model} {probe_b} ({'fused' if c.b.layer == _FUSED else f't={c.b.t} {c.b.layer}'})",
                _percent(p.acc_a),
                _percent(p.acc_b),
                f"{100 * p.diff:+.1f}",
                f"[{100 * p.ci_low:+.1f}, {100 * p.ci_high:+.1f}]",
                f"p = {p.p_value:.3g} ({p.only_a} vs {p.only_b} discordant of {p.n})",
            ]
        )
    return rows


def _cell(t: object, layer: object) -> str:
    return f"t={t} {layer}"


def _dense_rows(tables: dict[Path, pd.DataFrame]) -> list[list[object]]:
    """Val-chosen cell of every dense run: its val and test metric and the task's second metric on test."""
    rows = []
    for table in tables.values():
        kind = _kind(table)
        if kind not in _DENSE:
            continue
        metric, second, *_ = _DENSE[kind]
        for r in best_cells(table, metric).itertuples(index=False):
            other = table[
                (table["model"] == r.model)
                & (table["t"] == r.t)
                & (table["layer"] == r.layer)
                & (table["split"] == "test")
                & (table["metric"] == second)
            ]["value"]
            rows.append(
                [
                    kind,
                    r.model,
                    _cell(r.t, r.layer),
                    metric,
                    _percent(r.val_value),
                    _percent(r.value),
                    f"{second} {_percent(float(other.iloc[0]))}" if len(other) else "",
                ]
            )
    return rows


def _dense_comparison_rows(tables: dict[Path, pd.DataFrame], n_boot: int) -> list[list[object]]:
    """A minus B at the val-chosen cells: the first run of each dense task against every other run of it."""
    from probekit.evaluate.dense_sidecar import compare_dense, sidecar_path

    rows = []
    for task in _DENSE:
        runs = [p for p, t in tables.items() if _kind(t) == task and sidecar_path(p).is_file()]
        for other in runs[1:]:
            name_a, name_b = (str(tables[r]["model"].iloc[0]) for r in (runs[0], other))
            try:
                c = compare_dense(runs[0], other, n_boot=n_boot)
            except ProbekitError as err:
                rows.append([task, name_a, name_b, "", "", "", f"not comparable: {err}"])
                continue
            rows.append(
                [
                    task,
                    f"{name_a} ({_cell(*c.cell_a)})",
                    f"{name_b} ({_cell(*c.cell_b)})",
                    _percent(c.value_a),
                    _percent(c.value_b),
                    f"{100 * c.diff:+.1f}",
                    f"[{100 * c.ci_low:+.1f}, {100 * c.ci_high:+.1f}] over {c.n} test {_DENSE[task][3]}",
                ]
            )
    return rows


def _dense_vs_global(tables: dict[Path, pd.DataFrame]) -> str:
    """Where the first probe run's val-chosen cell scores on each dense task of the same model."""
    probes = [t for t in tables.values() if _kind(t) == "probe"]
    if not probes:
        return ""
    table = probes[0]
    probe = "linear" if "linear" in set(table["probe"]) else sorted(set(table["probe"]))[0]
    best = best_cells(table[table["probe"] == probe]).iloc[0]
    parts = []
    for dense in (t for t in tables.values() if _kind(t) in _DENSE):
        kind = _kind(dense)
        metric = _DENSE[kind][0]
        own = dense[dense["model"] == best["model"]]
        if own.empty:
            continue
        chosen = best_cells(own, metric).iloc[0]
        there = own[
            (own["t"] == best["t"])
            & (own["layer"] == best["layer"])
            & (own["split"] == "test")
            & (own["metric"] == metric)
        ]["value"]
        at_global = f"{_percent(float(there.iloc[0]))} % there" if len(there) else "not in the dense grid"
        same = "the same cell" if (chosen["t"], chosen["layer"]) == (best["t"], best["layer"]) else "a different cell"
        parts.append(
            f"{kind}: val-chosen {_cell(chosen['t'], chosen['layer'])}, {same}, test {metric} "
            f"{_percent(chosen['value'])} % (global cell: {at_global})"
        )
    if not parts:
        return ""
    return (
        f"The global {probe} probe's val-chosen cell of {best['model']} is {_cell(best['t'], best['layer'])}. "
        + "; ".join(parts)
        + "."
    )


def _label_rows(tables: dict[Path, pd.DataFrame]) -> list[list[object]]:
    from probekit.plots.label_efficiency import label_efficiency_table

    labelled = [t for t in tables.values() if _kind(t) == "labels"]
    if not labelled:
        return []
    summary = label_efficiency_table(pd.concat(labelled, ignore_index=True))
    return [
        [
            r.model,
            r.labels_per_class,
            r.n_train,
            r.draws,
            _percent(r.mean),
            f"[{_percent(r.min)}, {_percent(r.max)}]",
            r.cells,
        ]
        for r in summary.itertuples(index=False)
    ]


def _figures(tables: dict[Path, pd.DataFrame], folder: Path, x: str) -> list[tuple[Path, str]]:
    from probekit.plots import plot_all, plot_heatmap
    from probekit.plots.fusion import plot_mixture_weights
    from probekit.plots.similarity import plot_similarity

    figures: list[tuple[Path, str]] = []
    probe_tables = [t for t in tables.values() if _kind(t) == "probe"]
    if probe_tables:
        combined = pd.concat(probe_tables, ignore_index=True)
        # A model probed at one noise level only (pixels, a control at t = 0) has no curve to draw:
        # its numbers are in the tables above; the figures show the models with a noise grid.
        gridded = [m for m, own in combined.groupby("model", sort=False) if own["t"].nunique() > 1]
        if gridded:
            shown = combined[combined["model"].isin(gridded)]
            figures += [(p, p.stem.replace("_", " ")) for p in plot_all(shown, folder / "probes", x=x)]
    for i, table in enumerate(t for t in tables.values() if _kind(t) in _DENSE):
        # The t x layer heatmap of each run with a noise grid (a run at one noise level has its numbers
        # in the dense table only); its curves are drawn by `probekit plot --metric`.
        kind, metric = _kind(table), _DENSE[_kind(table)][0]
        for (model, dataset, probe), own in table[table["metric"] == metric].groupby(["model", "dataset", "probe"]):
            if own["t"].nunique() > 1:
                path = plot_heatmap(
                    table,
                    probe,
                    metric,
                    folder / f"dense{i}" / f"heatmap_{len(figures)}.png",
                    model=model,
                    dataset=dataset,
                )
                figures.append((path, f"{kind}: heatmap {probe} ({metric}), {model}"))
    labelled = [t for t in tables.values() if _kind(t) == "labels"]
    if labelled:
        from probekit.plots.label_efficiency import plot_label_efficiency

        path, _ = plot_label_efficiency(
            pd.concat(labelled, ignore_index=True), folder / "labels" / "label_efficiency.png"
        )
        figures.append((path, "label efficiency: val-chosen cell's test top-1 vs labels per class"))
    for i, table in enumerate(t for t in tables.values() if _kind(t) == "similarity"):
        figures += [(p, p.stem.replace("_", " ")) for p in plot_similarity(table, folder / f"similarity{i}")]
    for i, table in enumerate(t for t in tables.values() if _kind(t) == "fusion"):
        if (table["metric"] == "mixture_weight").any():
            path = plot_mixture_weights(table, folder / f"fusion{i}" / "fusion_weights.png")
            figures.append((path, f"fusion-mixture weights, {table['model'].iloc[0]}"))
    return figures


def _cache_rows(caches: Sequence[Path]) -> tuple[list[list[object]], list[str]]:
    rows, commands = [], []
    for path in caches:
        with FeatureCache(path) as cache:
            a = cache.attrs
            sizes = ", ".join(f"{s} {cache.progress(s)[1]}" for s in cache.splits)
            rows.append(
                [
                    path.name,
                    a.get("model_id"),
                    a.get("framework"),
                    a.get("dataset"),
                    sizes,
                    f"{len(cache.timesteps)} ({', '.join(map(str, cache.timesteps))})",
                    len(cache.layers),
                    a.get("pooling"),
                    a.get("draws"),
                    a.get("views", 0),
                ]
            )
            if a.get("command"):
                commands.append(str(a["command"]))
    return rows, commands


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
) -> Path:
    """Write the report page to ``out`` (atomically) and return its path. See the module docstring."""
    if not results:
        raise ProbekitError("give at least one results CSV with --results")
    tables = {Path(p): read_table(p) for p in results}
    for image in images:
        if not Path(image).is_file() or Path(image).read_bytes()[:8] != b"\x89PNG\r\n\x1a\n":
            raise ProbekitError(f"--images {image} is not a PNG file")
    cache_rows, cache_commands = _cache_rows([Path(c) for c in caches])
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="probekit-report-") as tmp:
        figures = _figures(tables, Path(tmp), x) + [(Path(i), Path(i).stem.replace("_", " ")) for i in images]
        figure_html = "\n".join(_image_html(path, caption) for path, caption in figures)
    parts = [
        f"<h1>{html.escape(title)}</h1>",
        f"<p class=note>probekit {__version__}, written {datetime.now(timezone.utc).isoformat(timespec='seconds')}. "
        "Every number below is read from the results tables listed; “best” means chosen on the validation split "
        "and reported on test.</p>",
        "<h2>What was run</h2>",
        _table_html(["results", "kind", "model", "dataset", "probes / metrics", "protocol"], _protocol_rows(tables)),
    ]
    if cache_rows:
        parts.append(
            _table_html(
                [
                    "cache",
                    "model",
                    "framework",
                    "dataset",
                    "images",
                    "noise levels",
                    "layers",
                    "pooling",
                    "draws",
                    "views",
                ],
                cache_rows,
            )
        )
    best = _best_rows(tables)
    if best:
        parts += [
            "<h2>Val-chosen best cells</h2>",
            _table_html(
                ["model", "probe", "cell", "setting", "val top-1 %", "test top-1 %", "Wilson 95 %", "chosen on"],
                best,
                numeric=(4, 5),
            ),
        ]
    comparisons = _comparison_rows(tables, n_boot)
    if comparisons:
        parts += [
            "<h2>Paired comparisons (A − B on the same test images)</h2>",
            "<p class=note>Paired bootstrap 95 % interval of the accuracy difference and exact McNemar test "
            "on the discordant images (<code>probekit compare</code>).</p>",
            _table_html(
                ["A", "B", "A %", "B %", "A − B (points)", "95 % interval", "McNemar"], comparisons, numeric=(2, 3, 4)
            ),
        ]
    dense = _dense_rows(tables)
    if dense:
        parts += [
            "<h2>Dense probes</h2>",
            "<p class=note>Per-pixel linear segmentation (mIoU) and keypoint correspondence (PCK) of every "
            "(t, layer) cell's feature map; the cell is chosen on val and scored on test.</p>",
            _table_html(
                ["task", "model", "val-chosen cell", "metric", "val %", "test %", "test, other metric %"],
                dense,
                numeric=(4, 5),
            ),
        ]
        dense_comparisons = _dense_comparison_rows(tables, n_boot)
        if dense_comparisons:
            parts += [
                "<p class=note>Paired bootstrap 95 % interval over the same test images or pairs "
                "(<code>probekit dense-compare</code>).</p>",
                _table_html(
                    ["task", "A", "B", "A %", "B %", "A − B (points)", "95 % interval"],
                    dense_comparisons,
                    numeric=(3, 4, 5),
                ),
            ]
        sentence = _dense_vs_global(tables)
        if sentence:
            parts.append(f"<p>{html.escape(sentence)}</p>")
    labels = _label_rows(tables)
    if labels:
        parts += [
            "<h2>Label efficiency</h2>",
            "<p class=note>Linear probes fitted on k labelled train images per class (seeded draws); the cell "
            "is chosen on the same val split for every draw and scored on the same test images.</p>",
            _table_html(
                [
                    "model",
                    "labels per class",
                    "fit images",
                    "draws",
                    "test top-1 % (mean)",
                    "min, max over draws",
                    "val-chosen cell of each draw",
                ],
                labels,
                numeric=(2, 3, 4),
            ),
        ]
    parts += ["<h2>Figures</h2>", figure_html or "<p class=note>no figures</p>"]
    all_commands = cache_commands + [c for c in commands if c.strip()]
    if all_commands:
        parts += ["<h2>Commands</h2>", f"<pre>{html.escape(chr(10).join(all_commands))}</pre>"]
    page = (
        "<!DOCTYPE html>\n<html lang=en><head><meta charset=utf-8>"
        f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head>\n<body>\n"
        + "\n".join(parts)
        + f"\n<script>{_MARKER_SCRIPT}</script>\n</body></html>\n"
    )
    fd, tmp_path = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(page)
        publish(tmp_path, out)
    except BaseException:
        Path(tmp_path).unlink(missing_ok=True)
        raise
    return out
