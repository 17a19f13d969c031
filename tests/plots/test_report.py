"""probekit report: a self-contained page, checked by content and, when one is installed, in a headless browser."""

import html
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from probekit.analyses.fusion import FusionConfig, fuse_cache
from probekit.analyses.similarity import SimilarityConfig, similarity_table
from probekit.cli import main
from probekit.core.schedule import DDPMSchedule
from probekit.evaluate.predictions import predictions_path, write_predictions
from probekit.evaluate.results import write_table
from probekit.features.cache import CacheLayout, CacheWriter, SplitLabels
from probekit.models import LayerInfo
from probekit.probes.run import ProbeRunConfig, probe_cache
from tests.analyses.test_fusion import _split


def _cache(path, splits, model, timesteps, widths):
    layout = CacheLayout(
        attrs={
            "model_id": model,
            "model_sha256": "ab" * 32,
            "dataset": "toy",
            "fit": {},
            "seed": 0,
            "pooling": "gap",
            "command": f"probekit extract --model {model} --data toy --out {path.name}",
        },
        grid=DDPMSchedule().points(timesteps),
        layers=[LayerInfo(name, "down", d, w, "1x1") for d, (name, w) in enumerate(widths.items())],
        widths=widths,
        splits={s: SplitLabels(y, ids) for s, (_, y, ids) in splits.items()},
        class_names=["neg", "pos"],
        draws=1,
    )
    writer = CacheWriter(path, layout)
    for s, (cells, _, _) in splits.items():
        writer.write_batch(s, 0, {name: f[:, None].astype(np.float32) for name, f in cells.items()})
    writer.close(complete=True)
    return path


@pytest.fixture(scope="module")
def report_inputs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("report")
    rng = np.random.default_rng(0)
    splits = {"train": _split(rng, 300, 0), "test": _split(rng, 120, 10_000)}
    cache = _cache(tmp / "m.h5", splits, "m", [1, 50], {"a": 4, "b": 6})
    pixels = {
        s: ({"pixels": (cells["a"][:1] + cells["b"][:1, :, :4])}, y, ids) for s, (cells, y, ids) in splits.items()
    }
    reference = _cache(tmp / "pixels.h5", pixels, "pixels", [0], {"pixels": 4})
    paths = {}
    for name, path in (("m", cache), ("pixels", reference)):
        run = probe_cache(path, ProbeRunConfig(probes=("knn",)), progress=False)
        paths[name] = write_table(run.table, tmp / f"results_{name}.csv")
        write_predictions(predictions_path(paths[name]), run.predictions)
    fused = fuse_cache(cache, paths["m"], FusionConfig(probe="knn", top_k=(2,), epochs=3))
    paths["fusion"] = write_table(fused.table, tmp / "fusion.csv")
    write_predictions(predictions_path(paths["fusion"]), fused.predictions)
    paths["similarity"] = write_table(similarity_table(cache, reference, SimilarityConfig(k=5)), tmp / "sim.csv")
    commands = tmp / "commands.txt"
    commands.write_text("# main job\nprobekit fuse --cache m.h5 --results results_m.csv --out fusion.csv\n")
    return tmp, cache, reference, paths, commands


def test_page_is_self_contained_and_complete(report_inputs):
    tmp, cache, reference, paths, commands = report_inputs
    out = tmp / "report.html"
    assert (
        main(
            [
                "report",
                "--results",
                *map(str, paths.values()),
                "--cache",
                str(cache),
                str(reference),
                "--commands",
                str(commands),
                "--n-boot",
                "200",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    page = out.read_text()
    # self-contained: no external resources of any kind
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:|//|file:)""", page)
    images = re.findall(r'<img [^>]*src="data:image/png;base64,', page)
    # knn heatmap + curve of the gridded model (pixels, one clean point, is in the tables only),
    # 3 similarity maps + matrix, mixture weights
    assert len(images) == 2 + 4 + 1
    for text in (
        "Val-chosen best cells",
        "fusion-concat",
        "fusion-mixture",
        "Paired comparisons",
        "McNemar",
        "probekit extract --model m",
        "probekit fuse --cache m.h5",
        "chosen on val",
    ):
        assert text in page, text
    assert "# main job" not in page and "not comparable" not in page


def _browser():
    return next((b for b in ("chromium", "chromium-browser", "google-chrome") if shutil.which(b)), None)


# Appended to a copy of the page: draws every image onto a canvas and counts those whose pixels are
# not all one colour (a figure that decodes but is blank counts as not rendered).
_NONBLANK_SCRIPT = """<script>
window.addEventListener('load', function () {
  var images = Array.prototype.slice.call(document.images), drawn = 0;
  images.forEach(function (im) {
    if (!im.complete || im.naturalWidth === 0) { return; }
    var canvas = document.createElement('canvas');
    canvas.width = im.naturalWidth; canvas.height = im.naturalHeight;
    var ctx = canvas.getContext('2d');
    ctx.drawImage(im, 0, 0);
    var px = ctx.getImageData(0, 0, canvas.width, canvas.height).data, seen = {};
    for (var i = 0; i < px.length; i += 4 * 7) { seen[px[i] + ',' + px[i + 1] + ',' + px[i + 2]] = 1; }
    if (Object.keys(seen).length > 1) { drawn += 1; }
  });
  document.body.setAttribute('data-images-nonblank', drawn + '/' + images.length);
});
</script>"""


def _render(page, tmp_path):
    """The DOM of ``page`` after a headless browser loaded it (the non-blank check appended)."""
    copy = tmp_path / f"rendered_{page.name}"
    copy.write_text(page.read_text().replace("</body>", _NONBLANK_SCRIPT + "</body>"))
    return subprocess.run(
        [
            _browser(),
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--virtual-time-budget=10000",
            "--dump-dom",
            copy.resolve().as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=180,
        check=True,
    ).stdout


def _cells(row_html):
    return [
        html.unescape(re.sub(r"<[^>]+>", "", c)).strip()
        for c in re.findall(r"<td[^>]*>(.*?)</td>", row_html, flags=re.S)
    ]


def _best_table(dom):
    section = dom.split("Val-chosen best cells", 1)[1].split("</table>", 1)[0]
    return [_cells(r) for r in re.findall(r"<tr>(.*?)</tr>", section, flags=re.S)[1:]]


def _check_best_cells(dom, results):
    """Each row of the page's best-cells table holds its cell's val and test top-1 from the results
    files, and that cell's val top-1 is the highest of its (model, probe): read with pandas here.
    """
    table = pd.concat([pd.read_csv(path) for path in results], ignore_index=True)
    top1 = table[table["metric"] == "top1"].fillna({"params": ""})
    rows = _best_table(dom)
    assert len(rows) == len(top1[top1["split"] == "test"].groupby(["model", "probe"])), rows
    for model, probe, cell, params, val, test, _interval, _chosen in rows:
        runs = top1[(top1["model"] == model) & (top1["probe"] == probe)]
        match = re.match(r"t=(-?\d+) \(σ=[^)]*\) (\S+)$", cell)
        same = runs["params"] == params
        if match:  # a single cell; fusion rows name their cells instead
            same &= (runs["t"] == int(match.group(1))) & (runs["layer"] == match.group(2))
        chosen = {split: runs[same & (runs["split"] == split)]["value"] for split in ("val", "test")}
        assert len(chosen["test"]) == 1, (model, probe, cell)
        assert f"{100 * chosen['test'].item():.1f}" == test, (model, probe, cell)
        assert f"{100 * chosen['val'].item():.1f}" == val, (model, probe, cell)
        assert chosen["val"].item() == pytest.approx(runs[runs["split"] == "val"]["value"].max())


_NEED_BROWSER = os.environ.get("PROBEKIT_REQUIRE_BROWSER") == "1"  # CI sets it: a missing browser fails there


@pytest.mark.skipif(_browser() is None and not _NEED_BROWSER, reason="no chromium / chrome installed")
def test_every_figure_renders_non_blank_and_the_tables_hold_the_results(report_inputs, tmp_path):
    assert _browser(), "PROBEKIT_REQUIRE_BROWSER=1 but no chromium is installed (apt-get install chromium)"
    _, cache, reference, paths, commands = report_inputs
    out = tmp_path / "browser.html"
    assert main(["report", "--results", *map(str, paths.values()), "--n-boot", "200", "--out", str(out)]) == 0
    expected = len(re.findall(r"<img ", out.read_text()))
    dom = _render(out, tmp_path)
    marker = re.search(r'data-images-rendered="(\d+)/(\d+)"', dom)
    assert marker, "the page's load script did not run"
    assert expected > 0 and marker.groups() == (str(expected), str(expected))
    assert re.search(r'data-images-nonblank="(\d+)/(\d+)"', dom).groups() == (str(expected), str(expected))
    _check_best_cells(dom, [paths["m"], paths["pixels"], paths["fusion"]])


@pytest.mark.skipif(_browser() is None and not _NEED_BROWSER, reason="no chromium / chrome installed")
def test_the_shipped_report_renders_and_holds_the_shipped_results(tmp_path):
    assert _browser(), "PROBEKIT_REQUIRE_BROWSER=1 but no chromium is installed (apt-get install chromium)"
    figures = Path(__file__).resolve().parents[2] / "figures"
    dom = _render(figures / "report.html", tmp_path)
    images = re.search(r'data-images-nonblank="(\d+)/(\d+)"', dom).groups()
    assert int(images[1]) >= 10 and images[0] == images[1]
    _check_best_cells(dom, sorted(figures.glob("results_*.csv")) + [figures / "fusion_ddpm.csv"])


def _dense_run(folder, name, kind, cells, seed):
    """A segment / correspond results table with its sidecar, from random per-unit test outcomes."""
    from probekit.analyses.dense.table import dense_rows
    from probekit.core.types import CellInfo
    from probekit.evaluate.dense import segmentation_scores
    from probekit.evaluate.dense_sidecar import write_dense_sidecar

    rng = np.random.default_rng(seed)
    infos = {(t, layer): CellInfo(t, 0.1 * (t + 1), 1.0, 0.9, layer, "down", d) for d, (t, layer) in enumerate(cells)}
    values, scores = {}, {}
    for cell in infos:
        if kind == "confusion":
            units = rng.integers(0, 30, size=(6, 3, 3))
            test = segmentation_scores(units.sum(axis=0))
            metrics, val = ("miou", "pixel_accuracy"), {"miou": rng.uniform(), "pixel_accuracy": rng.uniform()}
        else:
            total = rng.integers(4, 9, size=5)
            units = np.stack([rng.integers(0, total + 1), total], axis=1)
            test = {
                "pck": float(np.mean(units[:, 0] / units[:, 1])),
                "pck_point": float(units[:, 0].sum() / total.sum()),
            }
            metrics, val = ("pck", "pck_point"), {"pck": rng.uniform(), "pck_point": rng.uniform()}
        values[cell] = units
        scores[cell] = {"val": {**val, "n_eval": 4}, "test": {**test, "n_eval": len(units)}}
    probe = "segment-linear" if kind == "confusion" else "correspond"
    table = dense_rows(scores, infos, probe=probe, metrics=metrics, model=name, dataset="toy", n_train=99)
    path = write_table(table, folder / f"{'segment' if kind == 'confusion' else 'correspond'}_{name}.csv")
    write_dense_sidecar(path, table, kind, values, np.arange(len(next(iter(values.values())))))
    return path, table, values


def test_dense_and_label_efficiency_sections_hold_the_tables_numbers(report_inputs, tmp_path):
    from probekit.evaluate.dense import segmentation_scores
    from probekit.probes.label_budget import probe_label_budgets

    _, cache, _, paths, _ = report_inputs
    grid = [(1, "a"), (1, "b"), (50, "a"), (50, "b")]
    seg_m, seg_table, seg_values = _dense_run(tmp_path, "m", "confusion", grid, 1)
    seg_b, _, seg_values_b = _dense_run(tmp_path, "pixels", "confusion", [(0, "pixels")], 2)
    cor_m, cor_table, _ = _dense_run(tmp_path, "m", "pck", grid, 3)
    labels = probe_label_budgets(cache, ProbeRunConfig(probes=("linear",)), [1, 5, None], draws=2, progress=False)
    labels_path = write_table(labels, tmp_path / "labels_m.csv")
    out = tmp_path / "report.html"
    assert (
        main(
            [
                "report",
                "--results",
                str(paths["m"]),
                str(seg_m),
                str(seg_b),
                str(cor_m),
                str(labels_path),
                "--n-boot",
                "300",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    page = html.unescape(out.read_text())
    assert "Dense probes" in page and "Label efficiency" in page and "not comparable" not in page

    # each dense run's row: the cell of highest val metric (ties: lower t), its test value, read here with pandas
    for table, metric in ((seg_table, "miou"), (cor_table, "pck")):
        val = table[(table["split"] == "val") & (table["metric"] == metric)].sort_values(
            ["value", "t"], ascending=[False, True]
        )
        t, layer = val.iloc[0][["t", "layer"]]
        test = table[
            (table["split"] == "test") & (table["metric"] == metric) & (table["t"] == t) & (table["layer"] == layer)
        ]
        row = f"<td>t={t} {layer}</td><td>{metric}</td><td class=num>{100 * val.iloc[0]['value']:.1f}</td>"
        assert row + f"<td class=num>{100 * test['value'].item():.1f}</td>" in page, (metric, row)
    # the paired comparison: mIoU of the summed test confusions at the two chosen cells, with numpy
    chosen = (
        seg_table[(seg_table["split"] == "val") & (seg_table["metric"] == "miou")]
        .sort_values(["value", "t"], ascending=[False, True])
        .iloc[0]
    )
    a = segmentation_scores(seg_values[(chosen["t"], chosen["layer"])].sum(axis=0))["miou"]
    b = segmentation_scores(seg_values_b[(0, "pixels")].sum(axis=0))["miou"]
    assert (
        f"<td class=num>{100 * a:.1f}</td><td class=num>{100 * b:.1f}</td><td class=num>{100 * (a - b):+.1f}</td>"
        in page
    )
    assert "over 6 test images" in page
    assert "The global knn probe's val-chosen cell of m is" in page  # where the global cell scores on each task

    # label efficiency: per budget, the mean over draws of each draw's val-chosen cell's test top-1
    top1 = labels[labels["metric"] == "top1"]
    for budget, group in top1.groupby(top1["labels_per_class"].astype(str)):
        picks = []
        for _, draw in group.groupby("budget_draw"):
            val = (
                draw[draw["split"] == "val"].sort_values(["value", "t", "depth"], ascending=[False, True, True]).iloc[0]
            )
            test = draw[(draw["split"] == "test") & (draw["t"] == val["t"]) & (draw["layer"] == val["layer"])]
            picks.append(test["value"].item())
        fit = int(group["n_train"].iloc[0])
        row = f"<td>m</td><td>{budget}</td><td class=num>{fit}</td><td class=num>{len(picks)}</td>"
        assert (
            row
            + f"<td class=num>{100 * np.mean(picks):.1f}</td><td>[{100 * min(picks):.1f}, {100 * max(picks):.1f}]</td>"
            in page
        ), budget
    assert "label efficiency: val-chosen cell's test top-1 vs labels per class" in page
    assert "segment: heatmap segment-linear (miou), m" in page and "correspond: heatmap correspond (pck), m" in page
    assert "heatmap segment-linear (miou), pixels" not in page  # one noise level: no map to draw
