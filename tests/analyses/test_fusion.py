"""Fusion probes on a cache where two cells together separate the classes and neither alone does."""

import numpy as np
import pytest

from probekit.analyses.fusion import FusionConfig, fuse_cache
from probekit.cli import main
from probekit.core.errors import ProbekitError
from probekit.core.schedule import DDPMSchedule
from probekit.evaluate.compare import compare_runs
from probekit.evaluate.predictions import predictions_path, read_predictions, write_predictions
from probekit.evaluate.results import best_cells, read_table, write_table
from probekit.features.cache import CacheLayout, CacheWriter, SplitLabels
from probekit.models import LayerInfo
from probekit.probes.run import ProbeRunConfig, probe_cache
from tests.plots.conftest import assert_png


def _split(rng, n, offset):
    """Cell a = u + 3v, cell b = u - 3v (plus noise columns): the class is sign(u)."""
    y = rng.integers(0, 2, size=n)
    u = np.where(y == 1, 1.0, -1.0) * (0.3 + np.abs(rng.normal(size=n)))
    v = 3.0 * rng.normal(size=n)
    noise = lambda d: rng.normal(size=(n, d))  # noqa: E731
    cells = {
        "a": np.stack([np.c_[u + v, noise(3)], noise(4)]),  # (T=2, N, 4): t=1 informative, t=50 noise
        "b": np.stack([np.c_[u - v, noise(5)], noise(6)]),
    }
    return cells, y, np.arange(n) + offset


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("fusion")
    rng = np.random.default_rng(0)
    splits = {"train": _split(rng, 700, 0), "test": _split(rng, 500, 10_000)}
    layout = CacheLayout(
        attrs={"model_id": "m", "model_sha256": "ab" * 32, "dataset": "toy", "fit": {}, "seed": 0, "pooling": "gap"},
        grid=DDPMSchedule().points([1, 50]),
        layers=[LayerInfo("a", "down", 0, 4, "1x1"), LayerInfo("b", "up", 1, 6, "1x1")],
        widths={"a": 4, "b": 6},
        splits={s: SplitLabels(y, ids) for s, (_, y, ids) in splits.items()},
        class_names=["neg", "pos"],
        draws=1,
    )
    cache = tmp / "c.h5"
    writer = CacheWriter(cache, layout)
    for s, (cells, _, _) in splits.items():
        writer.write_batch(s, 0, {name: f[:, None].astype(np.float32) for name, f in cells.items()})
    writer.close(complete=True)
    results = probe_cache(cache, ProbeRunConfig(probes=("linear",)), progress=False)
    results_csv = write_table(results.table, tmp / "results.csv")
    write_predictions(predictions_path(results_csv), results.predictions)
    fused = fuse_cache(cache, results_csv, FusionConfig(top_k=(1, 2)))
    fusion_csv = write_table(fused.table, tmp / "fusion.csv")
    write_predictions(predictions_path(fusion_csv), fused.predictions)
    return cache, results_csv, fusion_csv, fused, results.table


@pytest.mark.slow
def test_fusion_beats_every_single_cell(run):
    _, _, fusion_csv, fused, single = run
    single_test = single[(single["metric"] == "top1") & (single["split"] == "test")]["value"]
    assert single_test.max() < 0.75  # neither cell separates the classes alone
    best = best_cells(read_table(fusion_csv)).set_index("probe")["value"]
    assert best["fusion-concat"] > 0.95 and best["fusion-mixture"] > 0.95
    assert min(best) > single_test.max() + 0.2
    concat = fused.table[fused.table["probe"] == "fusion-concat"].iloc[0]
    assert concat["params"].startswith("k=2") and set(concat["cells"].split(";")) == {"t=1:a", "t=1:b"}


def test_mixture_weights_are_a_distribution_favouring_the_informative_cells(run):
    _, _, fusion_csv, fused, _ = run
    table = read_table(fusion_csv)
    weights = table[table["metric"] == "mixture_weight"]
    assert len(weights) == 4 and (weights["value"] >= 0).all()
    assert weights["value"].sum() == pytest.approx(1.0, abs=1e-6)
    assert sum(fused.weights.values()) == pytest.approx(1.0, abs=1e-6)
    # the two informative cells (t=1) weigh more than the two noise cells (t=50)
    assert min(fused.weights[(1, "a")], fused.weights[(1, "b")]) > max(
        fused.weights[(50, "a")], fused.weights[(50, "b")]
    )


def test_compare_against_the_best_single_cell(run):
    _, results_csv, fusion_csv, *_ = run
    c = compare_runs(fusion_csv, results_csv, probe="fusion-concat", probe_b="linear", n_boot=500)
    assert c.paired.diff > 0.2 and c.paired.p_value < 1e-6
    preds = read_predictions(predictions_path(fusion_csv))
    assert preds.probe == ["fusion-concat", "fusion-mixture"]


def test_cli_writes_rows_sidecar_and_weight_figure(run, tmp_path, capsys):
    cache, results_csv, *_ = run
    out = tmp_path / "f.csv"
    assert (
        main(
            [
                "fuse",
                "--cache",
                str(cache),
                "--results",
                str(results_csv),
                "--out",
                str(out),
                "--top-k",
                "2",
                "--epochs",
                "5",
                "--figures",
                str(tmp_path),
                "--quiet",
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert "fusion-concat" in printed and "fusion-mixture" in printed and "t=1:a;t=1:b" in printed
    assert predictions_path(out).is_file()
    assert_png(tmp_path / "fusion_weights.png")
    assert (
        main(
            [
                "compare",
                "--results",
                str(out),
                str(results_csv),
                "--probe",
                "fusion-mixture",
                "--probe-b",
                "linear",
                "--n-boot",
                "200",
            ]
        )
        == 0
    )
    assert "McNemar" in capsys.readouterr().out


def test_a_different_validation_split_is_refused(run):
    cache, results_csv, *_ = run
    with pytest.raises(ProbekitError, match="same validation split"):
        fuse_cache(cache, results_csv, FusionConfig(val_fraction=0.2))
    with pytest.raises(ProbekitError, match="no 'knn' rows"):
        fuse_cache(cache, results_csv, FusionConfig(probe="knn"))


def test_concat_predicts_as_scikit_learn_on_the_concatenated_cells(run):
    """fusion-concat (k = 2, C = 1 chosen) is scikit-learn's StandardScaler + LogisticRegression
    fitted on the two informative cells side by side, on the same fitting rows.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from probekit.evaluate import stratified_val_split
    from probekit.features.cache import FeatureCache

    cache, _, fusion_csv, *_ = run
    with FeatureCache(cache) as reader:

        def concat(split):
            return np.concatenate([reader.features(split, "a", 1), reader.features(split, "b", 1)], axis=1)

        x_train, x_test = concat("train"), concat("test")
        y_train, y_test = reader.labels("train"), reader.labels("test")
    fit_pos, _ = stratified_val_split(y_train, 0.1, 0)
    row = read_table(fusion_csv).query("probe == 'fusion-concat' and split == 'test' and metric == 'top1'").iloc[0]
    C = float(row["params"].split("C=")[1])
    model = make_pipeline(StandardScaler(), LogisticRegression(C=C, tol=1e-6, max_iter=5000))
    expected = model.fit(x_train[fit_pos], y_train[fit_pos]).predict(x_test)
    got = read_predictions(predictions_path(fusion_csv)).predictions[0]
    assert (got != expected).sum() <= 2  # of 500: the two solvers stop within tolerance of one optimum
    assert row["value"] == pytest.approx((expected == y_test).mean(), abs=0.004)
