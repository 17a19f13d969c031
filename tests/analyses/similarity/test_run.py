"""similarity_table and `probekit similarity` on caches written in the real on-disk format."""

import numpy as np
import pytest

from probekit.analyses.similarity import SimilarityConfig, similarity_table
from probekit.cli import main
from probekit.core.errors import ProbekitError
from probekit.core.schedule import DDPMSchedule
from probekit.evaluate.results import read_table
from probekit.features.cache import CacheLayout, CacheWriter, SplitLabels
from probekit.models import LayerInfo
from probekit.plots.similarity import plot_similarity
from tests.analyses.similarity.test_metrics import _cka, _cknna, _mutual_knn
from tests.plots.conftest import assert_png


def write_cache(path, feats, labels, ids, *, model="m", dataset="toy", timesteps=(1, 50)):
    """A complete cache whose test split holds ``feats[layer]`` of shape (T, N, D)."""
    layers = [LayerInfo(name, "down", depth, f.shape[-1], "1x1") for depth, (name, f) in enumerate(feats.items())]
    layout = CacheLayout(
        attrs={
            "model_id": model,
            "model_sha256": "ab" * 32,
            "dataset": dataset,
            "fit": {},
            "seed": 0,
            "pooling": "gap",
        },
        grid=DDPMSchedule().points(list(timesteps)),
        layers=layers,
        widths={name: f.shape[-1] for name, f in feats.items()},
        splits={"test": SplitLabels(np.asarray(labels), np.asarray(ids))},
        class_names=["a", "b", "c"],
        draws=1,
    )
    writer = CacheWriter(path, layout)
    writer.write_batch("test", 0, {name: f[:, None] for name, f in feats.items()})
    writer.close(complete=True)
    return path


@pytest.fixture
def caches(tmp_path):
    rng = np.random.default_rng(0)
    n = 50
    ref = rng.normal(size=(n, 6))
    labels = rng.integers(0, 3, size=n)
    ids = np.arange(n) * 3 + 7
    feats = {
        "a": np.stack([ref @ rng.normal(size=(6, 4)) + s * rng.normal(size=(n, 4)) for s in (0.1, 2.0)]),
        "b": np.stack([rng.normal(size=(n, 5)) + ref[:, :1] * s for s in (1.0, 0.0)]),
    }
    cache = write_cache(tmp_path / "c.h5", feats, labels, ids)
    # the reference lists the same images in another order, plus one more
    order = np.r_[rng.permutation(n), n]
    ref_full = np.r_[ref, rng.normal(size=(1, 6))]
    reference = write_cache(
        tmp_path / "r.h5",
        {"pixels": ref_full[order][None]},
        np.r_[labels, 0][order],
        np.r_[ids, 1000][order],
        model="pixels",
        timesteps=(0,),
    )
    return cache, reference, feats, ref, labels, ids


def test_rows_match_the_formulas_for_every_cell(caches):
    cache, reference, feats, ref, *_ = caches
    table = similarity_table(cache, reference, SimilarityConfig(k=5, samples=1000))
    against = table[table["reference"] == "pixels"]
    assert set(against["metric"]) == {"cka", "cknna", "mutual_knn"} and len(against) == 4 * 3
    assert (against["ref_layer"] == "pixels").all() and (against["n_eval"] == 50).all()
    for (t_index, t), layer in [((i, t), l) for i, t in enumerate((1, 50)) for l in ("a", "b")]:
        x = feats[layer][t_index]
        got = against[(against["t"] == t) & (against["layer"] == layer)].set_index("metric")["value"]
        assert got["cka"] == pytest.approx(_cka(x.astype(np.float64), ref), rel=1e-5)
        assert got["cknna"] == pytest.approx(_cknna(x.astype(np.float64), ref, 5), rel=1e-5, abs=1e-6)
        assert got["mutual_knn"] == pytest.approx(_mutual_knn(x.astype(np.float64), ref, 5), abs=1e-9)
    matrix = table[table["reference"] == "self"]
    assert len(matrix) == 4 * 5 // 2 and set(matrix["metric"]) == {"cka"}
    row = matrix[(matrix["t"] == 1) & (matrix["layer"] == "a") & (matrix["ref_t"] == 50) & (matrix["ref_layer"] == "b")]
    assert row["value"].item() == pytest.approx(
        _cka(feats["a"][0].astype(np.float64), feats["b"][1].astype(np.float64)), abs=1e-5
    )
    diagonal = matrix[(matrix["t"] == matrix["ref_t"]) & (matrix["layer"] == matrix["ref_layer"])]
    np.testing.assert_allclose(diagonal["value"], 1.0, atol=1e-5)


def test_subsample_is_seeded_and_bounded(caches):
    cache, reference, *_ = caches
    one = similarity_table(cache, reference, SimilarityConfig(k=3, samples=20, seed=1, matrix=False))
    two = similarity_table(cache, reference, SimilarityConfig(k=3, samples=20, seed=1, matrix=False))
    other = similarity_table(cache, reference, SimilarityConfig(k=3, samples=20, seed=2, matrix=False))
    assert (one["n_eval"] == 20).all()
    np.testing.assert_array_equal(one["value"], two["value"])
    assert not np.allclose(one["value"], other["value"])


def test_reference_of_other_images_is_refused(caches, tmp_path):
    cache, _, feats, ref, labels, ids = caches
    shifted = write_cache(tmp_path / "s.h5", {"p": ref[None]}, labels, ids + 1, model="pixels", timesteps=(0,))
    with pytest.raises(ProbekitError, match="are not in the reference"):
        similarity_table(cache, shifted)
    relabelled = write_cache(tmp_path / "l.h5", {"p": ref[None]}, (labels + 1) % 3, ids, model="pixels", timesteps=(0,))
    with pytest.raises(ProbekitError, match="different labels"):
        similarity_table(cache, relabelled)
    other_data = write_cache(tmp_path / "d.h5", {"p": ref[None]}, labels, ids, dataset="other", timesteps=(0,))
    with pytest.raises(ProbekitError, match="holds dataset"):
        similarity_table(cache, other_data)
    with pytest.raises(ProbekitError, match="--reference-t"):
        similarity_table(cache, cache)  # a reference of several cells needs one picked


def test_cli_writes_table_and_figures(caches, tmp_path, capsys):
    cache, reference, *_ = caches
    out = tmp_path / "sim.csv"
    assert (
        main(
            [
                "similarity",
                "--cache",
                str(cache),
                "--reference",
                str(reference),
                "--k",
                "4",
                "--out",
                str(out),
                "--figures",
                str(tmp_path / "fig"),
            ]
        )
        == 0
    )
    table = read_table(out)
    assert {"reference", "ref_t", "ref_layer", "params"} <= set(table.columns)
    names = sorted(p.name for p in (tmp_path / "fig").iterdir())
    assert names == [
        "cka_matrix.png",
        "similarity_cka_pixels.png",
        "similarity_cknna_pixels.png",
        "similarity_mutual_knn_pixels.png",
    ]
    for name in names:
        assert_png(tmp_path / "fig" / name)
    assert plot_similarity(table, tmp_path / "again")
    # a cache compared with itself, one cell picked
    assert (
        main(
            [
                "similarity",
                "--cache",
                str(cache),
                "--reference",
                str(cache),
                "--reference-t",
                "1",
                "--reference-layer",
                "a",
                "--no-matrix",
                "--k",
                "4",
                "--out",
                str(tmp_path / "self.csv"),
            ]
        )
        == 0
    )
    assert main(["similarity", "--cache", str(cache), "--k", "1", "--out", str(tmp_path / "x.csv")]) == 2
    assert "--k must be at least 2" in capsys.readouterr().err
    assert not (tmp_path / "x.csv").exists()


def _prh_reference(x: np.ndarray) -> np.ndarray:
    """platonic-rep's prepare_features: remove_outliers(q=0.95, exact=False), then F.normalize."""
    import torch
    import torch.nn.functional as F

    feats = torch.from_numpy(x).double()
    q_val = torch.quantile(feats.abs().flatten(start_dim=1), 0.95, dim=1).mean()
    return F.normalize(feats.clamp(-q_val, q_val), dim=-1).numpy()


def test_prh_preprocessing_matches_the_platonic_rep_pipeline(caches):
    cache, reference, feats, ref, *_ = caches
    table = similarity_table(cache, reference, SimilarityConfig(k=5, preprocess="prh", matrix=False))
    raw = similarity_table(cache, reference, SimilarityConfig(k=5, matrix=False))
    assert (
        (table["preprocess"] == "prh").all() and (raw["preprocess"] == "raw").all() and (table["draws"] == "mean").all()
    )
    y = _prh_reference(ref)
    for t_index, t in enumerate((1, 50)):
        for layer in ("a", "b"):
            x = _prh_reference(feats[layer][t_index].astype(np.float32).astype(np.float64))
            got = table[(table["t"] == t) & (table["layer"] == layer)].set_index("metric")["value"]
            assert got["cka"] == pytest.approx(_cka(x, y), rel=1e-5)
            assert got["cknna"] == pytest.approx(_cknna(x, y, 5), rel=1e-5, abs=1e-6)
            assert got["mutual_knn"] == pytest.approx(_mutual_knn(x, y, 5), abs=1e-9)
    differs = raw.set_index(["t", "layer", "metric"])["value"] - table.set_index(["t", "layer", "metric"])["value"]
    assert np.abs(differs.xs("cka", level="metric")).max() > 1e-3  # the choice changes the numbers


def test_single_draw_or_the_mean_of_draws(tmp_path):
    rng = np.random.default_rng(1)
    n, labels, ids = 30, np.arange(30) % 3, np.arange(30)
    draws = rng.normal(size=(1, 2, n, 4)).astype(np.float32)  # (T, draws, N, D)
    layout = CacheLayout(
        attrs={"model_id": "m", "model_sha256": "ab" * 32, "dataset": "toy", "fit": {}, "seed": 0, "pooling": "gap"},
        grid=DDPMSchedule().points([10]),
        layers=[LayerInfo("a", "down", 0, 4, "1x1")],
        widths={"a": 4},
        splits={"test": SplitLabels(labels, ids)},
        class_names=["a", "b", "c"],
        draws=2,
    )
    writer = CacheWriter(tmp_path / "d.h5", layout)
    writer.write_batch("test", 0, {"a": draws})
    writer.close(complete=True)
    reference = write_cache(tmp_path / "r.h5", {"pixels": rng.normal(size=(1, n, 5))}, labels, ids, timesteps=(0,))
    for mode, x in (("single", draws[0, 0]), ("mean", draws[0].mean(axis=0))):
        table = similarity_table(tmp_path / "d.h5", reference, SimilarityConfig(k=3, draws=mode, matrix=False))
        got = table.set_index("metric")["value"]["cka"]
        with read_ref(reference) as r:
            expected = _cka(x.astype(np.float64), r)
        assert (table["draws"] == mode).all() and got == pytest.approx(expected, rel=1e-5)


def read_ref(path):
    import contextlib

    from probekit.features.cache import FeatureCache

    @contextlib.contextmanager
    def opened():
        with FeatureCache(path) as cache:
            yield cache.features("test", "pixels", 0).astype(np.float64)

    return opened()
