"""probekit report: a self-contained page, its data checked against the results tables and sidecars
(the page in a browser: test_report_browser.py).
"""

import base64
import html
import io
import json
import re

import h5py
import numpy as np
import pandas as pd
import pytest

from probekit.cli import main
from probekit.evaluate.predictions import predictions_path
from probekit.evaluate.results import write_table
from probekit.probes.run import ProbeRunConfig


def _build(paths, out, *extra):
    assert main(["report", "--results", *map(str, paths), "--n-boot", "200", *map(str, extra), "--out", str(out)]) == 0
    return out.read_text()


def page_data(page: str) -> dict:
    """The page's JSON data block (figures, cells, class names), parsed here with the json module."""
    match = re.search(r'<script type="application/json" id="probekit-data">(.*?)</script>', page, flags=re.S)
    assert match, "no data block in the page"
    return json.loads(match.group(1))


def test_page_is_self_contained_and_complete(report_inputs):
    tmp, cache, reference, paths, commands = report_inputs
    page = _build(paths.values(), tmp / "report.html", "--cache", cache, reference, "--commands", commands)
    # self-contained: no external resources in the markup, no script loaded from elsewhere (the inlined
    # plotly.js holds link strings it never requests here: the browser test records every request)
    markup = re.sub(r"<script[^>]*>.*?</script>", "", page, flags=re.S)
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:|//|file:)""", markup)
    assert "<script src" not in page and "Plotly.newPlot" in page
    images = re.findall(r'<img [^>]*src="data:image/png;base64,', page)
    assert len(images) == 1 + 1  # static: the CKA matrix and the mixture weights
    figures = page_data(page)["figures"]
    # interactive: the answer's heatmap, the knn heatmap and curves of m, 3 similarity maps
    assert len(figures) == 3 + 3
    for text in (
        "The answer",
        "Val-chosen best cells",
        "fusion-concat",
        "fusion-mixture",
        "Paired comparisons",
        "McNemar",
        "probekit extract --model m",
        "probekit fuse --cache m.h5",
        "chosen on val",
        "<details id=what-was-run>",
    ):
        assert text in page, text
    assert "# main job" not in page and "not comparable" not in page
    with h5py.File(cache, "r") as f:  # the precision the cache was computed in, read without probekit
        assert f"<td>{f.attrs.get('precision', 'fp32')}</td>" in page
    # the answer comes before every table of what was run
    assert page.index("The answer") < page.index("Val-chosen best cells") < page.index("<summary>What was run")


def plotly_array(value) -> np.ndarray:
    """A data array of a plotly figure: a list, or plotly 6's typed array {dtype, bdata (base64), shape}."""
    if isinstance(value, dict):
        flat = np.frombuffer(base64.b64decode(value["bdata"]), dtype=np.dtype(value["dtype"]))
        shape = value.get("shape")
        return flat.reshape([int(n) for n in str(shape).split(",")]) if shape else flat
    return np.asarray(value, dtype=float)


def test_the_answer_holds_each_models_chosen_cell_and_the_paired_differences(report_inputs, tmp_path):
    from scipy.stats import binomtest

    _, _, _, paths, _ = report_inputs
    page = html.unescape(_build([paths["m"], paths["pixels"]], tmp_path / "r.html"))
    answer = page.split("<h2>The answer</h2>", 1)[1].split("<h2>", 1)[0]
    chosen = {}
    for name in ("m", "pixels"):
        top1 = pd.read_csv(paths[name])
        top1 = top1[top1["metric"] == "top1"]
        best = top1[top1["split"] == "val"].sort_values(["value", "t", "depth"], ascending=[False, True, True]).iloc[0]
        test = top1[(top1["split"] == "test") & (top1["t"] == best["t"]) & (top1["layer"] == best["layer"])].iloc[0]
        chosen[name] = best
        card = answer.split(f'data-model="{name}"', 1)[1].split("</div></div>", 1)[0]
        assert f"val-chosen cell <b>t={best['t']} {best['layer']}</b>" in card
        assert f"<span class=big>{_fmt(test['value'])} %</span> test top-1 [{_fmt(test['ci_low'])}, " in card
    # A - B on the same test images, and the exact McNemar test on the discordant ones (numpy and scipy here)
    sides = {name: np.load(predictions_path(paths[name])) for name in ("m", "pixels")}
    correct = {}
    for name, side in sides.items():
        row = [
            i for i, k in enumerate(zip(side["t"], side["layer"])) if k == (chosen[name]["t"], chosen[name]["layer"])
        ][0]
        correct[name] = side["predictions"][row] == side["labels"]
    diff = 100 * (correct["m"].mean() - correct["pixels"].mean())
    only_a, only_b = int((correct["m"] & ~correct["pixels"]).sum()), int((~correct["m"] & correct["pixels"]).sum())
    p = binomtest(only_a, only_a + only_b, 0.5).pvalue
    assert f"vs pixels knn (t=0 pixels): <b>{diff:+.1f}</b> points [" in answer
    assert f"McNemar p = {p:.3g} (knn probes, {len(correct['m'])} test images)" in answer


def _fmt(value):
    return "–" if pd.isna(value) else f"{100 * value:.1f}"


def test_heatmap_hover_holds_the_numbers_of_the_results_table(report_inputs, tmp_path):
    _, _, _, paths, _ = report_inputs
    data = page_data(_build([paths["m"], paths["pixels"]], tmp_path / "r.html"))
    table = pd.read_csv(paths["m"])
    top1 = table[table["metric"] == "top1"]
    heatmaps = [f for f in data["figures"].values() if f["data"][0]["type"] == "heatmap"]
    assert len(heatmaps) == 2  # the answer's and the figures section's
    for figure in heatmaps:
        trace = figure["data"][0]
        checked = 0
        for i, layer in enumerate(trace["y"]):
            for j, column in enumerate(trace["x"]):
                t = int(re.match(r"t=(\d+)", column).group(1))
                key, noise, val, test, interval, _ = trace["customdata"][i][j]
                rows = top1[(top1["t"] == t) & (top1["layer"] == layer)].set_index("split")
                assert key == f"m|knn|{t}|{layer}"
                assert noise.startswith(f"t={t}, σ={rows.loc['test', 'sigma']:.3g}, log-SNR ")
                assert (val, test) == (_fmt(rows.loc["val", "value"]), _fmt(rows.loc["test", "value"]))
                low, high = rows.loc["test", ["ci_low", "ci_high"]]
                assert interval == f"<br>Wilson 95 % [{_fmt(low)}, {_fmt(high)}]"
                assert plotly_array(trace["z"])[i, j] == pytest.approx(100 * rows.loc["test", "value"])
                checked += 1
        assert checked == top1[top1["split"] == "test"].shape[0] == 4
        # the outlined cell is the one of highest val top-1 (ties: lower t), found here with pandas
        val = top1[top1["split"] == "val"].sort_values(["value", "t", "depth"], ascending=[False, True, True]).iloc[0]
        shape = figure["layout"]["shapes"][0]
        columns = [int(re.match(r"t=(\d+)", c).group(1)) for c in trace["x"]]
        assert (shape["x0"] + 0.5, shape["y0"] + 0.5) == (columns.index(val["t"]), trace["y"].index(val["layer"]))


def test_cell_panels_hold_the_sidecars_confusion_matrices(report_inputs, tmp_path):
    from sklearn.metrics import confusion_matrix, recall_score

    _, cache, _, paths, _ = report_inputs
    data = page_data(_build([paths["m"], paths["pixels"], paths["fusion"]], tmp_path / "r.html", "--cache", cache))
    assert data["classes"] == {"toy": ["neg", "pos"]}  # from the cache
    checked = 0
    for name in ("m", "pixels", "fusion"):
        sidecar = np.load(predictions_path(paths[name]), allow_pickle=False)
        table = pd.read_csv(paths[name]).fillna({"params": ""})
        test = table[(table["metric"] == "top1") & (table["split"] == "test")]
        for r in test.itertuples():
            cell = data["cells"][f"{r.model}|{r.probe}|{r.t}|{r.layer}"]
            row = [
                m
                for m, key in enumerate(zip(sidecar["probe"], sidecar["t"], sidecar["layer"]))
                if key == (r.probe, r.t, r.layer)
            ]
            predicted = sidecar["predictions"][row[0]]
            assert cell["confusion"] == confusion_matrix(sidecar["labels"], predicted, labels=[0, 1]).tolist()
            recall = recall_score(sidecar["labels"], predicted, average=None, labels=[0, 1])
            assert cell["recall"] == [f"{100 * v:.1f}" for v in recall]
            assert (cell["test"], cell["interval"]) == (_fmt(r.value), f"[{_fmt(r.ci_low)}, {_fmt(r.ci_high)}]")
            val = table[(table["metric"] == "top1") & (table["split"] == "val")]
            val = val[(val["t"] == r.t) & (val["layer"] == r.layer) & (val["probe"] == r.probe)]["value"]
            assert cell["val"] == (_fmt(val.item()) if len(val) else "")
            checked += 1
    assert checked == 4 + 1 + 2  # m: 2 t x 2 layers; pixels: one cell; fusion: two fused probes


def test_curves_start_with_few_layers_and_list_every_layer(report_inputs, tmp_path):
    _, _, _, paths, _ = report_inputs
    data = page_data(_build([paths["m"]], tmp_path / "r.html", "--x", "logsnr"))
    curves = [f for f in data["figures"].values() if f["data"][0]["type"] == "scatter"]
    assert len(curves) == 1
    traces = curves[0]["data"]
    assert [t["name"] for t in traces] == ["a", "b"]  # forward order
    best = pd.read_csv(paths["m"])
    best = best[(best["metric"] == "top1") & (best["split"] == "val")]
    best = best.sort_values(["value", "t", "depth"], ascending=[False, True, True]).iloc[0]
    shown = [t["name"] for t in traces if t["visible"] is True]
    assert best["layer"] in shown  # both layers share a stage: the val-chosen one alone starts visible
    assert shown == [best["layer"]]


def test_bad_inputs_give_one_line_errors(report_inputs, tmp_path, capsys):
    _, _, _, paths, _ = report_inputs
    from probekit.core.errors import ProbekitError
    from probekit.plots.report import build_report

    with pytest.raises(ProbekitError, match=r"^--x must be one of t, sigma, logsnr, got 'bogus'$"):
        build_report([paths["m"]], tmp_path / "r.html", x="bogus")
    image = tmp_path / "not.png"
    image.write_text("text")
    assert main(["report", "--results", str(paths["m"]), "--images", str(image), "--out", str(tmp_path / "r.html")])
    err = capsys.readouterr().err.strip().splitlines()
    assert any("is not a PNG file" in line for line in err) and not (tmp_path / "r.html").exists()


def _dense_run(folder, name, kind, cells, seed, dataset="toy"):
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
    table = dense_rows(scores, infos, probe=probe, metrics=metrics, model=name, dataset=dataset, n_train=99)
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

    # every dense cell opens a panel: the summed pixel confusion and each class's IoU (numpy here), or the
    # pairs of lowest PCK, and the table's numbers
    cells = page_data(out.read_text())["cells"]
    for (t, layer), units in seg_values.items():
        cell = cells[f"m|segment-linear|{t}|{layer}"]
        summed = units.sum(axis=0)
        assert cell["confusion"] == summed.tolist()
        union = summed.sum(axis=0) + summed.sum(axis=1) - np.diag(summed)
        assert cell["iou"] == [f"{100 * summed[k, k] / union[k]:.1f}" for k in range(3)]
        test = seg_table[(seg_table["t"] == t) & (seg_table["layer"] == layer) & (seg_table["split"] == "test")]
        assert cell["numbers"]["row"][1] == f"{100 * test[test['metric'] == 'miou']['value'].item():.1f}"
        assert cell["numbers"]["row"][3] == f"{100 * test[test['metric'] == 'pixel_accuracy']['value'].item():.1f}"
    sidecar = np.load(cor_m.with_name(cor_m.stem + ".dense.npz"))
    for t, layer, units in zip(sidecar["t"], sidecar["layer"], sidecar["values"]):
        cell = cells[f"m|correspond|{t}|{layer}"]
        pck = units[:, 0] / units[:, 1]
        order = sorted(range(len(pck)), key=lambda i: (pck[i], i))
        assert [row[0] for row in cell["worst"]] == sidecar["index"][order].tolist()
        assert [row[1] for row in cell["worst"]] == [f"{units[i, 0]} / {units[i, 1]}" for i in order]
    # the dense heatmaps are clickable: each of their cells names a panel of the page
    keys = [
        cell[0]
        for figure in page_data(out.read_text())["figures"].values()
        if figure["data"][0]["type"] == "heatmap"
        for row in figure["data"][0]["customdata"]
        for cell in row
    ]
    assert len(keys) == 4 * 4 and set(keys) <= set(cells)  # the answer's and knn of m, segment, correspond


def _thumbnail_pixels(uri):
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1]))))


def test_the_val_chosen_cell_carries_neighbours_and_an_embedding(digits_run, tmp_path):
    from sklearn.decomposition import PCA
    from sklearn.neighbors import NearestNeighbors

    cache, results, data = digits_run
    page = _build([results], tmp_path / "r.html", "--cache", cache)
    cells = page_data(page)["cells"]
    table = pd.read_csv(results)
    val = table[(table["metric"] == "top1") & (table["split"] == "val")]
    best = val.sort_values(["value", "t", "depth"], ascending=[False, True, True]).iloc[0]
    key = f"d|knn|{best['t']}|{best['layer']}"
    assert [k for k, c in cells.items() if "neighbours" in c] == [key]  # the val-chosen cell only
    assert "(1 cell here)" in page
    heavy = cells[key]["neighbours"]

    with h5py.File(cache, "r") as f:  # the cell's features, read here without probekit
        t_index = list(f["grid"]["t"][:]).index(best["t"])
        feats = {s: f[s]["feats"][best["layer"]][t_index].mean(axis=0) for s in ("train", "test")}
        ids = {s: f[s]["index"][:] for s in ("train", "test")}
        labels = {s: f[s]["labels"][:] for s in ("train", "test")}
    mean = feats["train"].astype(np.float64).mean(axis=0)
    index = NearestNeighbors(n_neighbors=5, metric="cosine").fit(feats["train"] - mean)
    firsts = [int(np.flatnonzero(labels["test"] == c)[0]) for c in range(10)][:6]
    assert [q["id"] for q in heavy["queries"]] == ids["test"][firsts].tolist()
    distances, found = index.kneighbors(feats["test"][firsts] - mean)
    images = {s: data.splits[s] for s in ("train", "test")}
    for query, row, dist in zip(heavy["queries"], found, distances):
        assert [n["id"] for n in query["neighbours"]] == ids["train"][row].tolist()
        assert [float(n["sim"]) for n in query["neighbours"]] == pytest.approx(1 - dist, abs=1e-3)
        assert [n["label"] for n in query["neighbours"]] == labels["train"][row].tolist()
        # each thumbnail is the dataset's image of that sample id
        for item, split in [(query, "test")] + [(n, "train") for n in query["neighbours"]]:
            position = int(np.flatnonzero(images[split].index == item["id"])[0])
            assert np.array_equal(_thumbnail_pixels(item["img"]), images[split].images[position][..., 0])

    embedding = heavy["embedding"]
    assert embedding["id"] == ids["test"].tolist() and embedding["label"] == labels["test"].tolist()
    reference = PCA(n_components=2).fit_transform(feats["test"].astype(np.float64))
    for component, axis in ((0, "x"), (1, "y")):
        mine = np.array(embedding[axis])
        sign = np.sign(mine @ reference[:, component])  # a principal axis is defined up to its sign
        assert mine == pytest.approx(sign * reference[:, component], abs=2e-4)


def test_without_a_readable_dataset_the_page_says_why_there_are_no_images(report_inputs, tmp_path):
    _, cache, reference, paths, _ = report_inputs
    page = html.unescape(_build([paths["m"]], tmp_path / "r.html", "--cache", cache, reference))
    assert "none here: give the models' pooled caches with --cache" in page
    assert "m: dataset toy not readable here" in page


def test_the_val_chosen_segmentation_cell_shows_masks_and_its_features_as_colours(tmp_path):
    from PIL import Image
    from sklearn.decomposition import PCA

    from probekit.data.segmentation import write_mask
    from tests.plots.conftest import write_cache

    rng = np.random.default_rng(3)
    folder = tmp_path / "seg"
    masks = {}
    for split in ("train", "test"):
        (folder / "images" / split).mkdir(parents=True)
        (folder / "masks" / split).mkdir(parents=True)
        for k in range(4):
            Image.fromarray(rng.integers(0, 256, size=(8, 8), dtype=np.uint8)).save(
                folder / "images" / split / f"{k}.png"
            )
            masks[split, k] = rng.integers(0, 3, size=(8, 8)).astype(np.uint8)
            write_mask(folder / "masks" / split / f"{k}.png", masks[split, k])
    (folder / "classes.txt").write_text("background\nx\ny\n")
    side, channels = 2, 5
    splits = {
        s: ({l: rng.normal(size=(2, 4, channels * side * side)) for l in ("a", "b")}, np.zeros(4, int), np.arange(4))
        for s in ("train", "test")
    }
    cache = write_cache(tmp_path / "spatial.h5", splits, "m", [1, 50], {"a": 20, "b": 20}, dataset=str(folder))

    with h5py.File(cache, "r+") as f:  # mark it spatial: (C, S, S) grids flattened, as spatial pooling writes them
        f.attrs["spatial_side"] = side
    seg, table, _ = _dense_run(tmp_path, "m", "confusion", [(1, "a"), (1, "b"), (50, "a"), (50, "b")], 1, str(folder))
    page = _build([seg], tmp_path / "r.html", "--cache", cache)
    data = page_data(page)
    assert data["classes"][str(folder)] == ["background", "x", "y"]
    val = table[(table["split"] == "val") & (table["metric"] == "miou")]
    best = val.sort_values(["value", "t", "depth"], ascending=[False, True, True]).iloc[0]
    key = f"m|segment-linear|{best['t']}|{best['layer']}"
    assert [k for k, c in data["cells"].items() if "maps" in c] == [key]
    rows = data["cells"][key]["maps"]["rows"]
    assert [r["id"] for r in rows] == [0, 1, 2, 3]
    decode = lambda uri: Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1])))
    for k, r in enumerate(rows):
        assert np.array_equal(np.asarray(decode(r["mask"])), masks["test", k])  # palette indices = class ids
        assert np.array_equal(
            np.asarray(decode(r["img"])), np.asarray(Image.open(folder / "images" / "test" / f"{k}.png"))
        )
    # the colours: sklearn's first three principal components of every grid position's feature vector
    maps = splits["test"][0][best["layer"]][[1, 50].index(best["t"])].reshape(4, channels, side, side)
    vectors = maps.transpose(0, 2, 3, 1).reshape(-1, channels)
    components = PCA(n_components=3).fit_transform(vectors)
    scaled = 255 * (components - components.min(axis=0)) / (components.max(axis=0) - components.min(axis=0))
    shown = np.stack([np.asarray(decode(r["pca"]).convert("RGB")) for r in rows]).reshape(-1, 3).astype(float)
    for c in range(3):  # a principal axis is defined up to its sign: flipped, the scaled colour is 255 - v
        assert min(np.abs(shown[:, c] - scaled[:, c]).max(), np.abs(shown[:, c] - (255 - scaled[:, c])).max()) <= 1
    assert "(first three principal components as RGB; 1 here)" in page
