"""``probekit report``: one self-contained HTML page from results tables (no network needed to view).

Every figure is drawn from the tables (plus any PNG given with ``images``, e.g. a t-SNE) and
embedded as a base64 ``data:`` URI; styles are inline. The page holds:

1. what was run: models, dataset, the evaluation protocol (train / val / test sizes, where each
   choice was made) and, from the caches given, framework, grid, layers, pooling and draws;
2. the val-chosen best cell of every (model, probe), with its test top-1 and Wilson 95 % interval,
   fusion probes included;
3. paired comparisons (``probekit compare``) of the first classification run against every other
   one, and of each fusion probe against the best single cell of its model;
4. heatmaps, accuracy-vs-noise curves, similarity maps, the cell x cell CKA matrix, the fusion
   mixture weights and the extra images;
5. the commands: each cache's recorded ``command`` attribute and the lines of a commands file.

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


def _kind(table: pd.DataFrame) -> str:
    """What a results table holds: "similarity", "fusion" or "probe". a results table holds."""
    if (table["probe"] == "similarity").all():
        return "similarity"
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
        if _kind(table) == "similarity":
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


def _figures(tables: dict[Path, pd.DataFrame], folder: Path, x: str) -> list[tuple[Path, str]]:
    from probekit.plots import plot_all
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
