"""Label budgets: stratified, seeded draws disjoint from val and test; probing under each budget."""

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from probekit.core.errors import ProbekitError
from probekit.data.base import ImageDataset, ImageSplit
from probekit.evaluate import stratified_val_split
from probekit.features.cache import FeatureCache
from probekit.features.extraction import ExtractConfig, extract
from probekit.models import load_backbone
from probekit.probes.label_budget import (
    budget_positions,
    parse_budgets,
    probe_label_budgets,
)
from probekit.probes.run import ProbeRunConfig


def test_parse_budgets():
    assert parse_budgets("1,5, 10,all") == [1, 5, 10, None]
    for bad in ("0,5", "x", "1,1", ""):
        with pytest.raises(ProbekitError, match="labels-per-class"):
            parse_budgets(bad)


def test_budget_positions_stratified_seeded_and_distinct_per_draw():
    labels = np.repeat(np.arange(4), [30, 20, 25, 40])
    a = budget_positions(labels, 5, seed=0, draw=0)
    np.testing.assert_array_equal(np.bincount(labels[a]), [5, 5, 5, 5])
    assert len(np.unique(a)) == len(a)
    np.testing.assert_array_equal(a, budget_positions(labels, 5, seed=0, draw=0))
    assert not np.array_equal(a, budget_positions(labels, 5, seed=0, draw=1))
    assert not np.array_equal(a, budget_positions(labels, 5, seed=1, draw=0))
    with pytest.raises(ProbekitError, match="class 1 has only 20"):
        budget_positions(labels, 21, seed=0, draw=0)


def test_budget_positions_come_class_by_class_so_draws_share_their_labels():
    labels = np.random.default_rng(0).integers(0, 4, size=200)
    draws = [budget_positions(labels, 3, seed=0, draw=d) for d in range(3)]
    for positions in draws:
        np.testing.assert_array_equal(labels[positions], np.repeat(np.arange(4), 3))
        for label in range(4):  # ascending within each class
            part = positions[labels[positions] == label]
            np.testing.assert_array_equal(part, np.sort(part))


def _dataset():
    rng = np.random.default_rng(3)

    def split(n, offset):
        labels = (np.arange(n) % 3).astype(np.int64)
        images = (rng.integers(0, 100, size=(n, 12, 12, 1)) + 70 * labels[:, None, None, None]).astype(np.uint8)
        return ImageSplit(images=images, labels=labels, index=np.arange(n, dtype=np.int64) + offset)

    return ImageDataset("toy", {"train": split(60, 0), "test": split(24, 1000)}, ["a", "b", "c"], "memory")


@pytest.fixture(scope="module")
def cache(tiny_unet_dir, tmp_path_factory):
    path = tmp_path_factory.mktemp("budget") / "c.h5"
    config = ExtractConfig(timesteps=[0, 40], layers=["down_blocks.0.resnets.0", "mid_block"], batch_size=32)
    extract(load_backbone(str(tiny_unet_dir)), _dataset(), path, config, progress=False)
    return path


def test_probe_label_budgets_fits_on_the_drawn_images_only(cache):
    config = ProbeRunConfig(probes=("linear",), val_fraction=0.2, seed=7)
    table = probe_label_budgets(cache, config, [2, None], draws=2, progress=False)
    assert set(table["labels_per_class"]) == {"2", "all"}
    two = table[table["labels_per_class"] == "2"]
    assert set(two["budget_draw"]) == {0, 1} and (two["n_train"] == 6).all()
    assert (table[table["labels_per_class"] == "all"]["n_train"] == 48).all()
    # Independent recomputation of one cell: the same draw from train minus val, scikit-learn's fit.
    with FeatureCache(cache) as c:
        y = c.labels("train")
        x = c.features("train", "mid_block.resnets.1", 40)
        x_test, y_test = c.features("test", "mid_block.resnets.1", 40), c.labels("test")
    fit_pos, val_pos = stratified_val_split(y, 0.2, 7)
    chosen = fit_pos[budget_positions(y[fit_pos], 2, seed=7, draw=1)]
    assert not set(chosen) & set(val_pos)
    scaler = StandardScaler().fit(x[chosen])
    clf = LogisticRegression(C=1.0, tol=1e-6, max_iter=10_000).fit(scaler.transform(x[chosen]), y[chosen])
    expected = (clf.predict(scaler.transform(x_test)) == y_test).mean()
    row = two[
        (two["budget_draw"] == 1)
        & (two["t"] == 40)
        & (two["layer"] == "mid_block.resnets.1")
        & (two["split"] == "test")
        & (two["metric"] == "top1")
    ]
    assert row["value"].iloc[0] == pytest.approx(expected, abs=1 / len(y_test) + 1e-9)
    # val and test are the same images under every budget
    assert two.groupby(["split"])["n_eval"].unique().map(len).eq(1).all()


def test_plot_label_efficiency(cache, tmp_path):
    from probekit.plots.label_efficiency import plot_label_efficiency

    config = ProbeRunConfig(probes=("linear",), val_fraction=0.2)
    table = probe_label_budgets(cache, config, [1, 3, None], draws=2, progress=False)
    other = table.copy()
    other["model"] = "baseline"
    path, summary = plot_label_efficiency(pd.concat([table, other]), tmp_path / "le.png")
    assert path.is_file() and path.stat().st_size > 0
    assert len(summary) == 6
    one = summary[(summary["model"] != "baseline") & (summary["labels_per_class"] == "1")].iloc[0]
    # the mean over draws of the val-chosen cell's test value, recomputed from the table
    picks = []
    for draw in (0, 1):
        part = table[(table["labels_per_class"] == "1") & (table["budget_draw"] == draw) & (table["metric"] == "top1")]
        val = part[part["split"] == "val"].sort_values(["value", "t", "depth"], ascending=[False, True, True]).iloc[0]
        test = part[(part["split"] == "test") & (part["t"] == val["t"]) & (part["layer"] == val["layer"])]
        picks.append(test["value"].iloc[0])
    assert one["mean"] == pytest.approx(np.mean(picks))
    assert one["min"] == pytest.approx(min(picks)) and one["max"] == pytest.approx(max(picks))
    assert summary[summary["labels_per_class"] == "all"]["per_class"].iloc[0] == pytest.approx(48 / 3)


def test_every_budget_and_draw_matches_scikit_learn_on_its_own_images(cache):
    """The draws of a budget are solved as one batched problem; each must still be the fit on its
    own images: every (budget, draw) of one cell against scikit-learn's fit on those images.
    """
    config = ProbeRunConfig(probes=("linear",), val_fraction=0.2, seed=3)
    table = probe_label_budgets(cache, config, [2, 5, None], draws=3, progress=False)
    with FeatureCache(cache) as c:
        y = c.labels("train")
        x = c.features("train", "down_blocks.0.resnets.0", 0)
        x_test, y_test = c.features("test", "down_blocks.0.resnets.0", 0), c.labels("test")
    fit_pos, _ = stratified_val_split(y, 0.2, 3)
    for per_class, draw in [(2, 0), (2, 1), (2, 2), (5, 0), (5, 1), (5, 2), (None, 0)]:
        chosen = fit_pos if per_class is None else fit_pos[budget_positions(y[fit_pos], per_class, seed=3, draw=draw)]
        scaler = StandardScaler().fit(x[chosen])
        clf = LogisticRegression(C=1.0, tol=1e-6, max_iter=10_000).fit(scaler.transform(x[chosen]), y[chosen])
        expected = (clf.predict(scaler.transform(x_test)) == y_test).mean()
        row = table[
            (table["labels_per_class"] == ("all" if per_class is None else str(per_class)))
            & (table["budget_draw"] == draw)
            & (table["t"] == 0)
            & (table["layer"] == "down_blocks.0.resnets.0")
            & (table["split"] == "test")
            & (table["metric"] == "top1")
        ]
        assert len(row) == 1
        assert row["value"].iloc[0] == pytest.approx(expected, abs=1 / len(y_test) + 1e-9), (per_class, draw)
