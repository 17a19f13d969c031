"""The report in headless Chromium, driven over the DevTools protocol (tests/plots/browser.py): real
mouse moves and clicks on the heatmaps, the cell panel and the layer selector, every number checked
against the results tables (pandas) and the sidecars (scikit-learn), no console error, no request
that would leave the machine. CI sets PROBEKIT_REQUIRE_BROWSER=1, so a missing browser fails there.
"""

import json
import os
import re
import time
from pathlib import Path
from urllib.parse import quote

import numpy as np
import pandas as pd
import pytest

from probekit.cli import main
from probekit.evaluate.predictions import predictions_path
from tests.plots.browser import Browser, browser_path

pytestmark = [pytest.mark.browser, pytest.mark.slow]

_NEED_BROWSER = os.environ.get("PROBEKIT_REQUIRE_BROWSER") == "1"
pytestmark = pytest.mark.skipif(browser_path() is None and not _NEED_BROWSER, reason="no chromium / chrome installed")

# Counts the page's images that decoded and whose pixels are not all one colour.
_NONBLANK = """(function () {
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
  return [drawn, images.length];
})()"""

# Viewport position of cell (row i, column j) of the heatmap in div ID, scrolled into view first.
_CELL_XY = """(function (id, i, j) {
  var gd = document.getElementById(id); gd.scrollIntoView({block: 'center'});
  var xa = gd._fullLayout.xaxis, ya = gd._fullLayout.yaxis, r = gd.getBoundingClientRect();
  return [r.left + xa._offset + xa.c2p(j), r.top + ya._offset + ya.c2p(i)];
})"""

_TABLE = "Array.from(document.querySelectorAll('%s tr')).slice(1).map(r => Array.from(r.cells).map(c => c.innerText))"


def _open(browser, path):
    """The page loaded and every plotly figure drawn; returns (page, seconds until drawn)."""
    start = time.monotonic()
    page = browser.open(Path(path).resolve().as_uri())
    page.wait_for(
        "(function () { var d = document.body.getAttribute('data-plots-drawn');"
        " return d && d.split('/')[0] === d.split('/')[1] ? d : null; })()",
        timeout=120,
    )
    return page, time.monotonic() - start


def _click(page, selector):
    x, y = page.evaluate(
        f"(function () {{ var e = document.querySelector({json.dumps(selector)});"
        " e.scrollIntoView({block: 'center'}); var r = e.getBoundingClientRect();"
        " return [r.left + r.width / 2, r.top + r.height / 2]; })()"
    )
    page.click(x, y)


def _assert_clean(page):
    assert page.log.console_errors == [] and page.log.exceptions == []
    assert any(u.startswith("file:") for u in page.log.requests)  # the recorder saw the page itself
    assert page.log.external() == [], page.log.external()


def _fmt(value):
    return "–" if pd.isna(value) else f"{100 * value:.1f}"


@pytest.fixture(scope="module")
def page_file(report_inputs, tmp_path_factory):
    tmp, cache, reference, paths, commands = report_inputs
    out = tmp_path_factory.mktemp("browser") / "report.html"
    results = [paths[name] for name in ("m", "pixels", "fusion", "similarity")]
    argv = ["report", "--results", *map(str, results), "--cache", str(cache), str(reference), "--n-boot", "200"]
    assert main([*argv, "--out", str(out)]) == 0
    return out, paths


def test_clicking_a_heatmap_cell_opens_its_panel_with_the_tables_numbers(page_file):
    from sklearn.metrics import confusion_matrix

    assert browser_path(), "PROBEKIT_REQUIRE_BROWSER=1 but no chromium is installed (apt-get install chromium)"
    out, paths = page_file
    table = pd.read_csv(paths["m"]).fillna({"params": ""})
    top1 = table[table["metric"] == "top1"]
    sidecar = np.load(predictions_path(paths["m"]), allow_pickle=False)
    with Browser() as browser:
        page, _ = _open(browser, out)
        drawn, total = page.evaluate(_NONBLANK)
        assert total == 2 and drawn == total  # the CKA matrix and the mixture weights
        layers = page.evaluate("document.getElementById('fig-0').data[0].y")
        columns = page.evaluate("document.getElementById('fig-0').data[0].x")
        assert sorted(layers) == ["a", "b"] and len(columns) == 2
        for i, layer in enumerate(layers):
            for j, column in enumerate(columns):
                t = int(re.match(r"t=(\d+)", column).group(1))
                rows = top1[(top1["t"] == t) & (top1["layer"] == layer)].set_index("split")
                val, test = _fmt(rows.loc["val", "value"]), _fmt(rows.loc["test", "value"])
                x, y = page.evaluate(f"{_CELL_XY}('fig-0', {i}, {j})")
                page.mouse("mouseMoved", x, y)
                hover = page.wait_for("(document.querySelector('#fig-0 .hovertext') || {}).textContent", timeout=10)
                assert f"{layer}t={t}, σ=" in hover and f"val {val}, test {test} (%)" in hover, hover
                low, high = rows.loc["test", ["ci_low", "ci_high"]]
                assert f"Wilson 95 % [{_fmt(low)}, {_fmt(high)}]" in hover
                page.click(x, y)
                key = page.wait_for("document.getElementById('cell-panel').getAttribute('data-cell')", timeout=10)
                assert key == f"m|knn|{t}|{layer}"
                assert page.evaluate("document.getElementById('cell-panel').hidden") is False
                numbers = page.evaluate(_TABLE % "#cell-numbers")[0]
                r = rows.loc["test"]
                assert numbers[:3] == [val, test, f"[{_fmt(r['ci_low'])}, {_fmt(r['ci_high'])}]"]
                assert numbers[4:] == [r["params"], str(int(r["n_eval"])), str(int(r["n_train"]))]
                m = [
                    n
                    for n, k in enumerate(zip(sidecar["probe"], sidecar["t"], sidecar["layer"]))
                    if k == ("knn", t, layer)
                ]
                expected = confusion_matrix(sidecar["labels"], sidecar["predictions"][m[0]], labels=[0, 1])
                shown = page.evaluate(_TABLE % "#cell-confusion")
                assert [row[0] for row in shown] == ["0 neg", "1 pos"]  # class names from the cache
                assert [[int(v) for v in row[1:]] for row in shown] == expected.tolist()
                _click(page, "#cell-close")
                assert page.evaluate("document.getElementById('cell-panel').hidden") is True
        # a row of the best-cells table opens its cell too
        _click(page, "tr[data-cell^='pixels|']")
        assert page.wait_for("document.getElementById('cell-panel').getAttribute('data-cell')") == "pixels|knn|0|pixels"
        _assert_clean(page)


def test_the_layer_selector_hides_and_shows_curves(page_file):
    assert browser_path(), "PROBEKIT_REQUIRE_BROWSER=1 but no chromium is installed (apt-get install chromium)"
    out, _ = page_file
    with Browser() as browser:
        page, _ = _open(browser, out)
        curves = page.evaluate(
            "Array.from(document.querySelectorAll('.layer-selector')).map(e => e.getAttribute('data-for'))"
        )
        assert len(curves) == 1
        fig = curves[0]
        drawn = f"document.querySelectorAll('#{fig} .scatterlayer .trace').length"
        checked = f"Array.from(document.querySelectorAll('[data-for={fig}] input')).map(e => e.checked)"
        assert page.evaluate(drawn) == 1 and page.evaluate(checked).count(True) == 1  # the val-chosen layer
        _click(page, f"[data-for={fig}] button[data-action=all]")
        assert page.wait_for(f"{drawn} === 2") and page.evaluate(checked) == [True, True]
        _click(page, f"[data-for={fig}] input[data-layer=a]")
        assert page.wait_for(f"{drawn} === 1") and page.evaluate(checked) == [False, True]
        names = f"Array.from(document.querySelectorAll('#{fig} .legendtext')).map(e => e.textContent)"
        assert page.evaluate(names) == ["b"]
        _click(page, f"[data-for={fig}] button[data-action=none]")
        assert page.wait_for(f"{drawn} === 0")
        _assert_clean(page)


def test_the_shipped_report_opens_fast_and_holds_the_shipped_results():
    assert browser_path(), "PROBEKIT_REQUIRE_BROWSER=1 but no chromium is installed (apt-get install chromium)"
    figures = Path(__file__).resolve().parents[2] / "figures"
    results = pd.concat(
        [pd.read_csv(p) for p in sorted(figures.glob("results_*.csv")) + [figures / "fusion_ddpm.csv"]],
        ignore_index=True,
    )
    top1 = results[results["metric"] == "top1"].fillna({"params": ""})
    with Browser() as browser:
        page, seconds = _open(browser, figures / "report.html")
        assert seconds < 60, seconds  # a few seconds on an idle machine; generous under a loaded test suite
        drawn, total = page.evaluate(_NONBLANK)
        assert total >= 2 and drawn == total
        rows = page.evaluate(
            "(function () { var h = Array.from(document.querySelectorAll('h2')).find(e => e.textContent === "
            "'Val-chosen best cells'); return Array.from(h.nextElementSibling.querySelectorAll('tr')).slice(1)"
            ".map(r => Array.from(r.cells).map(c => c.innerText)); })()"
        )
        assert len(rows) == len(top1[top1["split"] == "test"].groupby(["model", "probe"]))
        for model, probe, cell, params, val, test, _interval, _chosen in rows:
            runs = top1[(top1["model"] == model) & (top1["probe"] == probe)]
            match = re.match(r"t=(-?\d+) \(σ=[^)]*\) (\S+)$", cell)
            same = runs["params"] == params
            if match:  # a single cell; fusion rows name their cells instead
                same &= (runs["t"] == int(match.group(1))) & (runs["layer"] == match.group(2))
            chosen = {split: runs[same & (runs["split"] == split)]["value"] for split in ("val", "test")}
            assert (_fmt(chosen["val"].item()), _fmt(chosen["test"].item())) == (val, test), (model, probe, cell)
            assert chosen["val"].item() == pytest.approx(runs[runs["split"] == "val"]["value"].max())
        # the answer's heatmap: a click on its outlined (val-chosen) cell opens that cell, with its test top-1
        i, j = page.evaluate(
            "(function () { var s = document.getElementById('fig-0').layout.shapes[0];"
            " return [s.y0 + 0.5, s.x0 + 0.5]; })()"
        )
        page.click(*page.evaluate(f"{_CELL_XY}('fig-0', {i}, {j})"))
        key = page.wait_for("document.getElementById('cell-panel').getAttribute('data-cell')", timeout=10)
        model, probe, t, layer = key.split("|")
        row = top1[
            (top1["model"] == model)
            & (top1["probe"] == probe)
            & (top1["t"] == int(t))
            & (top1["layer"] == layer)
            & (top1["split"] == "test")
        ]
        assert page.evaluate(_TABLE % "#cell-numbers")[0][1] == _fmt(row["value"].item())
        assert page.evaluate("document.querySelectorAll('#cell-confusion tr').length") == 1 + 10
        _click(page, "#cell-close")
        # a dense heatmap: its cell's panel holds each class's IoU of the summed test confusions (numpy here)
        name = page.evaluate(
            "Array.from(document.querySelectorAll('.plotly-fig')).find(d => d.layout.title.text.startsWith("
            "'segment: checkpoints/fashion-mnist-ddpm ')).id"
        )
        page.click(*page.evaluate(f"{_CELL_XY}({json.dumps(name)}, 0, 0)"))
        key = page.wait_for(
            "(function (k) { return k && k.indexOf('segment-linear') > 0 && k; })("
            "document.getElementById('cell-panel').getAttribute('data-cell'))",
            timeout=10,
        )
        _, _, t, layer = key.split("|")
        with np.load(figures / "segment_ddpm.dense.npz") as sidecar:
            m = [n for n, c in enumerate(zip(sidecar["t"], sidecar["layer"])) if c == (int(t), layer)][0]
            summed = sidecar["values"][m].sum(axis=0)
        union = summed.sum(axis=0) + summed.sum(axis=1) - np.diag(summed)
        shown = page.evaluate(_TABLE % "#cell-iou")
        assert [row[1] for row in shown] == [f"{100 * summed[k, k] / union[k]:.1f}" for k in range(len(summed))]
        # class names from the mosaic folder's classes.txt where the page was built beside it, else indices
        assert [row[0].split(" ", 1)[0] for row in shown] == [str(k) for k in range(len(summed))]
        assert shown[0][0] in ("0 background", "0 0")
        _assert_clean(page)


def test_the_val_chosen_cells_panel_shows_neighbours_and_a_hoverable_embedding(digits_run, tmp_path):
    assert browser_path(), "PROBEKIT_REQUIRE_BROWSER=1 but no chromium is installed (apt-get install chromium)"
    cache, results, _ = digits_run
    out = tmp_path / "digits.html"
    assert main(["report", "--results", str(results), "--cache", str(cache), "--n-boot", "200", "--out", str(out)]) == 0
    with Browser() as browser:
        page, _ = _open(browser, out)
        _click(page, ".card button.open")
        key = page.wait_for("document.getElementById('cell-panel').getAttribute('data-cell')", timeout=10)
        images = "Array.from(document.querySelectorAll('#cell-neighbours img'))"
        assert page.wait_for(f"{images}.every(im => im.complete && im.naturalWidth === 8) && {images}.length") == 36
        page.wait_for("!!document.querySelector('#cell-embedding .main-svg')", timeout=30)
        for trace in (0, 3):
            x, y = page.evaluate(
                "(function () { var gd = document.getElementById('cell-embedding'); gd.scrollIntoView();"
                " var xa = gd._fullLayout.xaxis, ya = gd._fullLayout.yaxis, r = gd.getBoundingClientRect();"
                f" var d = gd.data[{trace}]; return [r.left + xa._offset + xa.l2p(d.x[0]),"
                " r.top + ya._offset + ya.l2p(d.y[0])]; })()"
            )
            page.mouse("mouseMoved", x, y)
            expected = page.evaluate(
                f"JSON.parse(document.getElementById('probekit-data').textContent).cells[{json.dumps(key)}]"
                f".neighbours.embedding.id[document.getElementById('cell-embedding').data[{trace}].customdata[0]]"
            )
            shown = "document.getElementById('cell-embedding-thumb').getAttribute('data-id')"
            assert page.wait_for(f"{shown} === '{expected}' && {shown}", timeout=10) == str(expected)
        _assert_clean(page)
        # an address naming the cell opens it at load; Escape closes it
        page = browser.open(out.resolve().as_uri() + "#cell=" + quote(key))
        assert page.wait_for("document.getElementById('cell-panel').getAttribute('data-cell')", timeout=30) == key
        browser.send(
            "Input.dispatchKeyEvent",
            {"type": "keyDown", "key": "Escape", "code": "Escape", "windowsVirtualKeyCode": 27},
            session=page.session,
        )
        assert page.wait_for("document.getElementById('cell-panel').hidden", timeout=10) is True
        _assert_clean(page)


def test_the_driver_records_console_errors_exceptions_and_external_requests(tmp_path):
    """The checks above can fail: a page that logs an error, throws and requests an image from the network."""
    assert browser_path(), "PROBEKIT_REQUIRE_BROWSER=1 but no chromium is installed (apt-get install chromium)"
    bad = tmp_path / "bad.html"
    bad.write_text(
        "<!DOCTYPE html><html><body><img src='http://probekit.invalid/x.png'>"
        "<script>console.error('broken'); throw new Error('thrown');</script></body></html>"
    )
    with Browser() as browser:
        page = browser.open(bad.resolve().as_uri())
        page.evaluate("0")
        # the failed image load may be logged before or after the script's error, as the resolver answers
        assert "broken" in page.log.console_errors
        assert any("thrown" in e for e in page.log.exceptions)
        assert page.log.external() == ["http://probekit.invalid/x.png"]
        with pytest.raises(AssertionError):
            _assert_clean(page)
