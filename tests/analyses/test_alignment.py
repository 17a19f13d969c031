import math

import h5py
import numpy as np
import pytest
from scipy.spatial.distance import pdist

from probekit.analyses.alignment import AlignConfig, alignment, measure, subsample, uniformity
from probekit.core.errors import ProbekitError
from probekit.features.extraction import ExtractConfig, extract
from probekit.models import load_backbone
from tests.features.test_extraction import _dataset

LAYERS = ["down_blocks.0.resnets.0", "mid_block"]


def _unit(x):
    x = np.asarray(x, dtype=np.float64)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _reference(a, b):
    """Independent numpy/scipy computation of (alignment, uniformity of a, uniformity of b)."""
    ua, ub = _unit(a), _unit(b)
    align = np.mean(np.linalg.norm(ua - ub, axis=1) ** 2)
    unif = [np.log(np.mean(np.exp(-2 * pdist(u, "sqeuclidean")))) for u in (ua, ub)]
    return align, unif[0], unif[1]


def test_functions_match_scipy_on_random_features():
    rng = np.random.default_rng(1)
    a = rng.standard_normal((300, 7)) * 5 + 2
    b = a + rng.standard_normal((300, 7))
    align, ua, _ = _reference(a, b)
    assert alignment(a, b) == pytest.approx(align, rel=1e-10)
    assert uniformity(a) == pytest.approx(ua, rel=1e-10)


def test_uniformity_blocks_cover_every_pair(monkeypatch):
    import probekit.analyses.alignment as module

    rng = np.random.default_rng(2)
    x = rng.standard_normal((53, 4))
    monkeypatch.setattr(module, "_ROW_BLOCK", 5)  # many blocks, a ragged last one
    expected = np.log(np.mean(np.exp(-2 * pdist(_unit(x), "sqeuclidean"))))
    assert uniformity(x) == pytest.approx(expected, rel=1e-10)


def test_extremes():
    # Identical draws align perfectly; two antipodal points are as uniform as two points can be.
    x = np.array([[1.0, 0.0], [-1.0, 0.0]])
    assert alignment(x, 3 * x) == pytest.approx(0.0)
    assert uniformity(x) == pytest.approx(-8.0)


@pytest.fixture(scope="module")
def two_draw_cache(tiny_unet_dir, tmp_path_factory):
    path = tmp_path_factory.mktemp("align") / "f.h5"
    extract(
        load_backbone(str(tiny_unet_dir)),
        _dataset(n_train=12, n_test=30),
        path,
        ExtractConfig(timesteps=[3, 80], layers=LAYERS, draws=2, batch_size=16),
        progress=False,
    )
    return path


@pytest.mark.slow
def test_cache_rows_equal_numpy(two_draw_cache):
    table = measure(two_draw_cache, AlignConfig(split="test"))
    assert set(table["metric"]) == {"alignment", "uniformity"} and len(table) == 2 * 2 * 2
    with h5py.File(two_draw_cache, "r") as f:
        for row in table.itertuples():
            t_index = list(f["grid/t"][:]).index(row.t)
            feats = f["test/feats"][row.layer][t_index]  # (K, N, D)
            align, u0, u1 = _reference(feats[0], feats[1])
            expected = align if row.metric == "alignment" else (u0 + u1) / 2
            assert row.value == pytest.approx(expected, rel=1e-6, abs=1e-9), (row.t, row.layer, row.metric)
            assert row.n_eval == 30 and row.split == "test" and row.probe == "geometry" and math.isnan(row.ci_low)


def test_subsample_is_seeded_and_used(two_draw_cache):
    positions = subsample(30, 10, seed=4)
    np.testing.assert_array_equal(positions, subsample(30, 10, seed=4))
    assert len(set(positions)) == 10
    table = measure(two_draw_cache, AlignConfig(split="test", max_points=10, seed=4))
    row = table[(table["metric"] == "uniformity")].iloc[0]
    with h5py.File(two_draw_cache, "r") as f:
        feats = f["test/feats"][row["layer"]][list(f["grid/t"][:]).index(row["t"])]
    _, u0, u1 = _reference(feats[0][positions], feats[1][positions])
    assert row["value"] == pytest.approx((u0 + u1) / 2, rel=1e-6) and row["n_eval"] == 10


def test_one_draw_is_refused(tiny_unet_dir, tmp_path):
    path = tmp_path / "one.h5"
    extract(
        load_backbone(str(tiny_unet_dir)),
        _dataset(n_train=6, n_test=6),
        path,
        ExtractConfig(timesteps=[3], layers=LAYERS[:1], draws=1),
        progress=False,
    )
    with pytest.raises(ProbekitError, match="--draws 2"):
        measure(path)


def test_cli_writes_table_and_heatmaps(two_draw_cache, tmp_path):
    from probekit.cli import main
    from probekit.evaluate.results import read_table

    out = tmp_path / "align.csv"
    assert main(["align", "--cache", str(two_draw_cache), "--out", str(out), "--figures", str(tmp_path / "fig")]) == 0
    table = read_table(out)
    assert sorted(table["metric"].unique()) == ["alignment", "uniformity"]
    assert (tmp_path / "fig" / "heatmap_alignment.png").stat().st_size > 0
    assert (tmp_path / "fig" / "heatmap_uniformity.png").stat().st_size > 0
    assert main(["align", "--cache", str(two_draw_cache), "--out", str(out), "--max-points", "1"]) == 2
