"""Streamed probes (train rows read block by block) against the in-memory probes on the same cell."""

import numpy as np

from probekit.probes.knn import knn_sweep
from probekit.probes.linear import (
    LinearProbeConfig,
    fit_linear_path,
    predict_linear_grid,
)
from probekit.probes.streamed import TrainRows, fit_linear_streamed, knn_streamed


def _cell(n=3000, n_test=600, width=24, classes=5, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((classes, width)) * 0.8
    mix = rng.standard_normal((width, width)) * 0.3 + np.eye(width)  # correlated features
    y, y_test = rng.integers(0, classes, n), rng.integers(0, classes, n_test)
    x = ((centres[y] + rng.standard_normal((n, width))) @ mix + 5.0).astype(np.float32)
    x_test = ((centres[y_test] + rng.standard_normal((n_test, width))) @ mix + 5.0).astype(np.float32)
    return x, y, x_test, y_test


def _rows(x, block):
    return TrainRows(len(x), x.shape[1], lambda: (x[i : i + block] for i in range(0, len(x), block)))


def test_streamed_linear_matches_in_memory_heads_and_predictions():
    x, y, x_test, y_test = _cell()
    config = LinearProbeConfig(tol=1e-6, num_classes=5)
    Cs = [0.01, 1.0]
    memory = fit_linear_path({"c": x}, y, Cs, config)
    source = _rows(x, 257)  # blocks that do not divide N
    streamed = fit_linear_streamed("c", source, y, Cs, config)
    assert source.passes > 10  # every evaluation reads the cell again
    for c in Cs:
        a, b = memory[c]["c"], streamed[c]
        assert b.converged
        np.testing.assert_allclose(b.mean.numpy(), a.mean.numpy(), rtol=1e-6)
        np.testing.assert_allclose(b.std.numpy(), a.std.numpy(), rtol=1e-5)
        np.testing.assert_allclose(b.weight.numpy(), a.weight.numpy(), atol=2e-3)
        np.testing.assert_allclose(b.objective, a.objective, rtol=1e-6)
        pa = predict_linear_grid({"c": a}, {"c": x_test})["c"]
        pb = predict_linear_grid({"c": b}, {"c": x_test})["c"]
        np.testing.assert_array_equal(pa, pb)


def test_streamed_knn_matches_in_memory_predictions():
    x, y, x_test, _ = _cell(n=2500, n_test=700)
    queries = {"val": x_test[:300], "test": x_test[300:]}
    for centre in (False, True):
        memory = knn_sweep(
            {"c": x},
            y,
            {s: {"c": q} for s, q in queries.items()},
            [1, 10, 50],
            [0.07, 0.5],
            centre=centre,
            num_classes=5,
            similarity="fp32",
        )
        streamed = knn_streamed(
            _rows(x, 333), y, queries, [1, 10, 50], [0.07, 0.5], centre=centre, num_classes=5, chunk_size=128
        )
        for kt in memory:
            for split in queries:
                np.testing.assert_array_equal(streamed[kt][split], memory[kt]["c"][split])


def test_streamed_knn_ranks_ties_by_train_index_across_blocks():
    # duplicated train rows in different blocks with different labels: the lower index must win
    rng = np.random.default_rng(3)
    base = rng.standard_normal((50, 8)).astype(np.float32)
    x = np.concatenate([base, base])
    y = np.concatenate([np.zeros(50, dtype=np.int64), np.ones(50, dtype=np.int64)])
    q = base[:20] + 1e-3
    memory = knn_sweep({"c": x}, y, {"test": {"c": q}}, [1], [0.07], num_classes=2, similarity="fp32")
    streamed = knn_streamed(_rows(x, 50), y, {"test": q}, [1], [0.07], num_classes=2)
    np.testing.assert_array_equal(streamed[(1, 0.07)]["test"], memory[(1, 0.07)]["c"]["test"])
    assert (streamed[(1, 0.07)]["test"] == 0).all()
