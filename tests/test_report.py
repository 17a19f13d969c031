"""probekit report: a self-contained page, checked by content and, when one is installed, in a headless browser."""

import re
import shutil
import subprocess

import numpy as np
import pytest

from probekit.cache import CacheLayout, CacheWriter, SplitLabels
from probekit.cli import main
from probekit.models import LayerInfo
from probekit.predictions import predictions_path, write_predictions
from probekit.probes.fusion import FusionConfig, fuse_cache
from probekit.probes.run import ProbeRunConfig, probe_cache
from probekit.results import write_table
from probekit.schedule import DDPMSchedule
from probekit.similarity import SimilarityConfig, similarity_table
from tests.probes.test_fusion import _split


def _cache(path, splits, model, timesteps, widths):
    layout = CacheLayout(
        attrs={"model_id": model, "model_sha256": "ab" * 32, "dataset": "toy", "fit": {}, "seed": 0, "pooling": "gap",
               "command": f"probekit extract --model {model} --data toy --out {path.name}"},
        grid=DDPMSchedule().points(timesteps),
        layers=[LayerInfo(name, "down", d, w, "1x1") for d, (name, w) in enumerate(widths.items())],
        widths=widths, splits={s: SplitLabels(y, ids) for s, (_, y, ids) in splits.items()},
        class_names=["neg", "pos"], draws=1,
    )  # fmt: skip
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
    pixels = {s: ({"pixels": (cells["a"][:1] + cells["b"][:1, :, :4])}, y, ids) for s, (cells, y, ids) in splits.items()}
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
    assert main(["report", "--results", *map(str, paths.values()), "--cache", str(cache), str(reference),
                 "--commands", str(commands), "--n-boot", "200", "--out", str(out)]) == 0  # fmt: skip
    page = out.read_text()
    # self-contained: no external resources of any kind
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:|//|file:)""", page)
    images = re.findall(r'<img [^>]*src="data:image/png;base64,', page)
    # knn heatmap + curve of the gridded model (pixels, one clean point, is in the tables only),
    # 3 similarity maps + matrix, mixture weights
    assert len(images) == 2 + 4 + 1
    for text in ("Val-chosen best cells", "fusion-concat", "fusion-mixture", "Paired comparisons", "McNemar",
                 "probekit extract --model m", "probekit fuse --cache m.h5", "chosen on val"):  # fmt: skip
        assert text in page, text
    assert "# main job" not in page and "not comparable" not in page


def _browser():
    return next((b for b in ("chromium", "chromium-browser", "google-chrome") if shutil.which(b)), None)


@pytest.mark.skipif(_browser() is None, reason="no chromium / chrome installed")
def test_every_image_renders_in_a_headless_browser(report_inputs):
    tmp, cache, reference, paths, commands = report_inputs
    out = tmp / "browser.html"
    assert main(["report", "--results", *map(str, paths.values()), "--n-boot", "200", "--out", str(out)]) == 0
    expected = len(re.findall(r"<img ", out.read_text()))
    dom = subprocess.run(
        [_browser(), "--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=10000", "--dump-dom",
         out.resolve().as_uri()],
        capture_output=True, text=True, timeout=120, check=True,
    ).stdout  # fmt: skip
    marker = re.search(r'data-images-rendered="(\d+)/(\d+)"', dom)
    assert marker, "the page's load script did not run"
    assert expected > 0 and marker.groups() == (str(expected), str(expected))
