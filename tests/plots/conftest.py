"""A small results table built directly with pandas, and a PNG checker."""

import math
from pathlib import Path

import matplotlib.image
import numpy as np
import pandas as pd
import pytest

from probekit.evaluate.results import COLUMNS

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def make_table(models=("ddpm",), probes=("linear", "knn"), n_layers=4, seed=0) -> pd.DataFrame:
    """Every (model, probe, t, layer, split, metric) row (val and test values differ), with a clean t=0 point (sigma
    0, logSNR +inf).
    """
    rng = np.random.default_rng(seed)
    grid = [
        (0, 0.0, math.inf, 1.0),
        (50, 0.2, 3.2, 0.96),
        (100, 0.34, 2.16, 0.897),
        (300, 1.1, -0.19, 0.45),
        (600, 3.0, -2.2, 0.1),
    ]
    rows = []
    for model in models:
        for probe in probes:
            for t, sigma, logsnr, alpha_bar in grid:
                for depth in range(n_layers):
                    for split in ("val", "test"):
                        value = rng.uniform(0.2, 0.9)
                        for metric in ("top1", "mean_class_recall"):
                            rows.append(
                                dict(
                                    model=model,
                                    dataset="cifar10",
                                    t=t,
                                    sigma=sigma,
                                    logsnr=logsnr,
                                    alpha_bar=alpha_bar,
                                    layer=f"up_blocks.{depth}.resnets.0",
                                    stage="up",
                                    depth=depth,
                                    probe=probe,
                                    params="",
                                    metric=metric,
                                    split=split,
                                    value=value,
                                    ci_low=value - 0.01 if metric == "top1" else math.nan,
                                    ci_high=value + 0.01 if metric == "top1" else math.nan,
                                    n_train=1000,
                                    n_eval=500,
                                )
                            )
    return pd.DataFrame(rows, columns=list(COLUMNS))


def assert_png(path: Path, min_side: int = 100) -> None:
    """The file exists, starts with the PNG signature and decodes to an RGBA image."""
    path = Path(path)
    assert path.is_file() and path.stat().st_size > 0
    assert path.read_bytes()[:8] == PNG_MAGIC
    image = matplotlib.image.imread(path)
    assert image.ndim == 3 and image.shape[2] in (3, 4)
    assert min(image.shape[:2]) >= min_side
    assert not list(path.parent.glob(".*.png"))  # no temp file left behind


@pytest.fixture
def table() -> pd.DataFrame:
    return make_table()


@pytest.fixture
def table_factory():
    return make_table


@pytest.fixture
def check_png():
    return assert_png


def write_cache(path, splits, model, timesteps, widths, dataset="toy", class_names=("neg", "pos")):
    from probekit.core.schedule import DDPMSchedule
    from probekit.features.cache import CacheLayout, CacheWriter, SplitLabels
    from probekit.models import LayerInfo

    layout = CacheLayout(
        attrs={
            "model_id": model,
            "model_sha256": "ab" * 32,
            "dataset": dataset,
            "fit": {},
            "seed": 0,
            "pooling": "gap",
            "command": f"probekit extract --model {model} --data {dataset} --out {path.name}",
        },
        grid=DDPMSchedule().points(timesteps),
        layers=[LayerInfo(name, "down", d, w, "1x1") for d, (name, w) in enumerate(widths.items())],
        widths=widths,
        splits={s: SplitLabels(y, ids) for s, (_, y, ids) in splits.items()},
        class_names=list(class_names),
        draws=1,
    )
    writer = CacheWriter(path, layout)
    for s, (cells, _, _) in splits.items():
        writer.write_batch(s, 0, {name: f[:, None].astype(np.float32) for name, f in cells.items()})
    writer.close(complete=True)
    return path


@pytest.fixture(scope="session")
def report_inputs(tmp_path_factory):
    """Two probe runs (a gridded model m and a one-point pixels baseline) with sidecars, a fusion run,
    a similarity table, the caches and a commands file.
    """
    from probekit.analyses.fusion import FusionConfig, fuse_cache
    from probekit.analyses.similarity import SimilarityConfig, similarity_table
    from probekit.evaluate.predictions import predictions_path, write_predictions
    from probekit.evaluate.results import write_table
    from probekit.probes.run import ProbeRunConfig, probe_cache
    from tests.analyses.test_fusion import _split

    tmp = tmp_path_factory.mktemp("report")
    rng = np.random.default_rng(0)
    splits = {"train": _split(rng, 300, 0), "test": _split(rng, 120, 10_000)}
    cache = write_cache(tmp / "m.h5", splits, "m", [1, 50], {"a": 4, "b": 6})
    pixels = {
        s: ({"pixels": (cells["a"][:1] + cells["b"][:1, :, :4])}, y, ids) for s, (cells, y, ids) in splits.items()
    }
    reference = write_cache(tmp / "pixels.h5", pixels, "pixels", [0], {"pixels": 4})
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


@pytest.fixture(scope="session")
def digits_run(tmp_path_factory):
    """A cache of scikit-learn's digits (loadable here, so the report can embed thumbnails): at t=0
    each layer holds the pixels plus noise, at t=10 noise only; its knn results with the sidecar.
    """
    from probekit.data import load_dataset
    from probekit.evaluate.predictions import predictions_path, write_predictions
    from probekit.evaluate.results import write_table
    from probekit.probes.run import ProbeRunConfig, probe_cache

    tmp = tmp_path_factory.mktemp("digits")
    data = load_dataset("digits")
    rng = np.random.default_rng(0)
    splits = {}
    for name, n in (("train", 300), ("test", 90)):
        part = data.splits[name]
        pixels = part.images[:n].reshape(n, -1).astype(np.float32) / 16.0
        cells = {
            layer: np.stack([pixels + 0.3 * rng.normal(size=pixels.shape), rng.normal(size=pixels.shape)])
            for layer in ("a", "b")
        }
        splits[name] = (cells, part.labels[:n], part.index[:n])
    cache = write_cache(
        tmp / "d.h5", splits, "d", [0, 10], {"a": 64, "b": 64}, dataset="digits", class_names=data.class_names
    )
    run = probe_cache(cache, ProbeRunConfig(probes=("knn",)), progress=False)
    results = write_table(run.table, tmp / "results_d.csv")
    write_predictions(predictions_path(results), run.predictions)
    return cache, results, data
