"""Massive channels: the rule on hand-made features, its record in the cache, `info`, and --drop-massive."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest

from probekit.features.cache import FeatureCache
from probekit.features.extraction import ExtractConfig, extract
from probekit.features.massive import ATTR, cache_massive, keep_columns, massive_channels
from probekit.models import load_backbone
from tests.features.test_extraction import _dataset


def test_the_rule_on_hand_made_features():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(50, 8))  # mean |x| about 0.8 per channel
    x[:, 2] += 500.0  # far above 100 x the median
    x[:, 5] *= 50.0  # large, but below 100 x
    np.testing.assert_array_equal(massive_channels(x, 8), [2])
    np.testing.assert_array_equal(massive_channels(x, 8, ratio=20.0), [2, 5])
    # avg2 cells: 4 positions per channel, channel-major; a channel counts over all its positions
    grid = np.repeat(x[:, :, None], 4, axis=2).reshape(50, 32)
    np.testing.assert_array_equal(massive_channels(grid, 8), [2])
    assert massive_channels(np.zeros((4, 6)), 6).size == 0  # median 0: no ratio, none
    np.testing.assert_array_equal(keep_columns(32, 8, np.array([2])), [c for c in range(32) if c // 4 != 2])


@pytest.fixture(scope="module")
def cache_path(tiny_unet_dir, tmp_path_factory):
    path = tmp_path_factory.mktemp("massive") / "f.h5"
    layers = ["down_blocks.0.resnets.0", "mid_block"]
    config = ExtractConfig(timesteps=[0, 50], layers=layers)
    extract(load_backbone(str(tiny_unet_dir)), _dataset(), path, config, progress=False)
    return path


def test_extraction_records_the_cells_massive_channels(cache_path):
    with FeatureCache(cache_path) as cache:
        recorded = cache.attrs[ATTR]
        recorded = json.loads(recorded) if isinstance(recorded, str) else recorded
        assert recorded["ratio"] == 100.0 and "median" in recorded["rule"]
        for point in cache.grid:
            for layer in cache.layers:
                x = np.abs(cache.features("train", layer.name, point.t).astype(np.float64))
                per_channel = x.mean(axis=0)
                expected = np.flatnonzero(per_channel > 100 * np.median(per_channel)).tolist()
                assert recorded["cells"][f"{point.t}|{layer.name}"] == expected


def test_info_lists_and_probe_drops_the_massive_channels(cache_path, tmp_path, monkeypatch, capsys):
    import shutil

    from probekit.cli import main
    from probekit.probes import run as probe_run

    copy = tmp_path / "c.h5"
    shutil.copy(cache_path, copy)
    # pretend channels 1 and 3 of mid_block at t=50 are massive (the tiny random UNet has none)
    with FeatureCache(copy) as cache:
        found = cache_massive(cache)
    found[(50, "mid_block.resnets.1")] = np.array([1, 3])
    cells = {f"{t}|{layer}": channels.tolist() for (t, layer), channels in found.items()}
    with h5py.File(copy, "r+", locking=False) as f:
        f.attrs[ATTR] = json.dumps({"rule": "test", "ratio": 100.0, "cells": cells})
    assert main(["info", str(copy)]) == 0
    out = capsys.readouterr().out
    assert "massive channels" in out and "mid_block.resnets.1" in out and "channels 1,3" in out

    widths = {}
    real = probe_run.run_probe

    def spy(name, task, settings, **kwargs):
        widths.update({cell: array.shape[-1] for (cell, _subset), array in task.train.items()})
        return real(name, task, settings, **kwargs)

    monkeypatch.setattr(probe_run, "run_probe", spy)
    results = tmp_path / "r.csv"
    args = ["probe", "--cache", str(copy), "--probes", "knn", "--drop-massive", "--out", str(results), "--quiet"]
    assert main(args) == 0
    assert widths[(50, "mid_block.resnets.1")] == 16 - 2 and widths[(0, "mid_block.resnets.1")] == 16
    import pandas as pd

    table = pd.read_csv(results)
    dropped = table.set_index(["t", "layer"])["massive_dropped"]
    assert set(dropped.loc[(50, "mid_block.resnets.1")]) == {2} and set(dropped.loc[(0, "mid_block.resnets.1")]) == {0}


def test_similarity_drops_the_massive_channels_of_cache_and_reference(cache_path, tmp_path):
    import shutil

    from probekit.analyses.similarity import SimilarityConfig, similarity_table

    copy = tmp_path / "c.h5"
    shutil.copy(cache_path, copy)
    cell, reference_cell = (50, "down_blocks.0.resnets.0"), (0, "mid_block.resnets.1")
    with FeatureCache(copy) as cache:
        found = cache_massive(cache)
        x = cache.features("test", cell[1], cell[0]).astype(np.float64)
        y = cache.features("test", reference_cell[1], reference_cell[0]).astype(np.float64)
    found[cell], found[reference_cell] = np.array([0, 5]), np.array([2])
    cells = {f"{t}|{layer}": channels.tolist() for (t, layer), channels in found.items()}
    with h5py.File(copy, "r+", locking=False) as f:
        f.attrs[ATTR] = json.dumps({"rule": "test", "ratio": 100.0, "cells": cells})
    config = SimilarityConfig(
        k=3, matrix=False, reference_t=reference_cell[0], reference_layer=reference_cell[1], drop_massive=True
    )
    table = similarity_table(copy, copy, config)
    row = table[(table["t"] == cell[0]) & (table["layer"] == cell[1]) & (table["metric"] == "cka")]

    def u_centre(k):  # the unbiased HSIC's centring (Song et al. 2012), written out
        n = len(k)
        k = k - np.diag(np.diag(k))
        rows, total = k.sum(axis=1), k.sum()
        u = k - rows[:, None] / (n - 2) - rows[None, :] / (n - 2) + total / ((n - 1) * (n - 2))
        return u - np.diag(np.diag(u))

    def cka(a, b):  # debiased linear CKA, as the similarity table defines it
        ka, kb = u_centre(a @ a.T), u_centre(b @ b.T)
        return np.sum(ka * kb) / np.sqrt(np.sum(ka * ka) * np.sum(kb * kb))

    x_kept = np.delete(x, [0, 5], axis=1)
    y_kept = np.delete(y, [2], axis=1)
    assert float(row["value"].iloc[0]) == pytest.approx(cka(x_kept, y_kept), rel=1e-6)
    assert float(row["value"].iloc[0]) != pytest.approx(cka(x, y), rel=1e-6)
    assert bool(row["massive_dropped"].iloc[0])
