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
