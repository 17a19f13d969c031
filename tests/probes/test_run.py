"""run_probes over caches: memory-bounded groups, NaN cells, several caches of one extraction."""

import logging
import re

import h5py
import numpy as np
import pandas as pd
import pytest

from probekit.core.errors import ProbekitError
from probekit.data.base import ImageDataset, ImageSplit
from probekit.evaluate import stratified_val_split
from probekit.features.cache import FeatureCache
from probekit.features.cache.checksum import fletcher32
from probekit.features.extraction import ExtractConfig, extract
from probekit.models import load_backbone
from probekit.probes.run import ProbeRunConfig, plan_groups, probe_bytes, run_probes

LAYERS = ["down_blocks.0.resnets.0", "mid_block", "up_blocks.1.resnets.1"]


def _dataset(n_train=48, n_test=24):
    rng = np.random.default_rng(3)

    def split(n, offset):
        labels = (np.arange(n) % 3).astype(np.int64)
        images = (rng.integers(0, 100, size=(n, 12, 12, 1)) + 70 * labels[:, None, None, None]).astype(np.uint8)
        return ImageSplit(images=images, labels=labels, index=np.arange(n, dtype=np.int64) + offset)

    return ImageDataset("toy", {"train": split(n_train, 0), "test": split(n_test, 1000)}, ["a", "b", "c"], "memory")


@pytest.fixture(scope="module")
def caches(tiny_unet_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("caches")
    backbone = load_backbone(str(tiny_unet_dir))
    paths = {}
    for name, splits, timesteps in [
        ("both", ("train", "test"), [0, 40]),
        ("train", ("train",), [0, 40]),
        ("test", ("test",), [0, 40]),
        ("other_grid", ("test",), [0, 41]),
    ]:
        paths[name] = root / f"{name}.h5"
        config = ExtractConfig(timesteps=timesteps, layers=LAYERS, splits=splits, batch_size=16)
        extract(backbone, _dataset(), paths[name], config, progress=False)
    return paths


CONFIG = ProbeRunConfig(probes=("linear", "knn"), epochs=3)


def _values(table: pd.DataFrame) -> pd.Series:
    return table.set_index(["probe", "t", "layer", "split", "metric"])["value"].sort_index()


def test_plan_groups_packs_cells_within_the_budget():
    sizes = {(0, "a"): 100, (0, "b"): 300, (5, "a"): 100, (5, "b"): 300}
    assert plan_groups(sizes, None) == [list(sizes)]
    assert plan_groups(sizes, 450) == [[(0, "a"), (0, "b")], [(5, "a"), (5, "b")]]
    assert plan_groups(sizes, 300) == [[(0, "a")], [(0, "b")], [(5, "a")], [(5, "b")]]
    with pytest.raises(ProbekitError, match="raise --max-memory"):
        plan_groups(sizes, 250)


@pytest.mark.slow
def test_streamed_groups_give_the_same_table(caches, caplog):
    whole = run_probes(caches["both"], CONFIG, progress=False)
    with FeatureCache(caches["both"]) as cache:
        fit, val = stratified_val_split(cache.labels("train"), CONFIG.val_fraction, CONFIG.seed)
        classes = len(cache.class_names)
    narrow, wide = (probe_bytes(w, len(fit), len(val) + 24, classes, CONFIG.probes) for w in (8, 16))
    assert narrow < wide <= 2 * narrow < narrow + wide  # so the two 8-wide cells in a row share a group
    one_cell = 2 * narrow - 10
    with caplog.at_level(logging.INFO):
        streamed = run_probes(caches["both"], CONFIG, progress=False, max_memory=one_cell + 10)
    # cells in order have widths 8,16,8 | 8,16,8: the two 8-wide cells between the 16-wide ones share a group
    assert "probing 6 cells in 5 groups" in caplog.text
    # one time line per probe, counting every cell over all groups
    assert re.search(r"linear: 6 cells in \d+\.\d s$", caplog.text, re.M)
    assert re.search(r"knn: 6 cells in \d+\.\d s$", caplog.text, re.M)
    pd.testing.assert_series_equal(_values(whole), _values(streamed))


def test_nan_cell_is_skipped_and_reported_others_probed(caches, tmp_path, caplog):
    path = tmp_path / "nan.h5"
    path.write_bytes(caches["both"].read_bytes())
    with h5py.File(path, "r+") as f:
        f["train/feats/mid_block.resnets.1"][1, 0, 5, 3] = np.nan  # t=40 only
        # as the writer would have stored it: the vector's checksum over its new bytes
        f["train/checksums/mid_block.resnets.1"][1, 0, 5] = fletcher32(f["train/feats/mid_block.resnets.1"][1, 0, 5])
    with caplog.at_level(logging.WARNING):
        table = run_probes(path, CONFIG, progress=False)
    assert "cell t=40 mid_block.resnets.1 skipped: NaN/inf features in 1 " in caplog.text
    cells = set(zip(table["t"], table["layer"]))
    assert (40, "mid_block.resnets.1") not in cells and len(cells) == 5
    reference = _values(run_probes(caches["both"], CONFIG, progress=False))
    kept = _values(table)
    pd.testing.assert_series_equal(reference.loc[kept.index], kept)


def test_train_and_test_caches_combine_and_mismatches_are_refused(caches):
    combined = run_probes([caches["train"], caches["test"]], CONFIG, progress=False)
    pd.testing.assert_series_equal(_values(run_probes(caches["both"], CONFIG, progress=False)), _values(combined))
    with pytest.raises(ProbekitError, match=r"differ in grid \(\[0, 40\] vs \[0, 41\]\)"):
        run_probes([caches["train"], caches["other_grid"]], CONFIG, progress=False)
    with pytest.raises(ProbekitError, match="overlapping samples"):
        run_probes([caches["both"], caches["test"]], CONFIG, progress=False)
    with pytest.raises(ProbekitError, match="need a train and a test split"):
        run_probes([caches["train"]], CONFIG, progress=False)


def _write_cache(path, train_feats, test_feats, y_train, y_test):
    """A cache written directly: one grid point, cells = layers 'a', 'b' (width 4)."""
    from probekit.core.schedule import GridPoint
    from probekit.features.cache import CacheLayout, CacheWriter, SplitLabels
    from probekit.models.backbone import LayerInfo

    layers = [LayerInfo("a", "down", 0, 4, "1x1"), LayerInfo("b", "up", 1, 4, "1x1")]
    layout = CacheLayout(
        attrs={"model_id": "made", "model_sha256": "0", "dataset": "made", "seed": 0, "pooling": "gap"},
        grid=[GridPoint(t=0, model_input=0.0, alpha_bar=1.0, sigma=0.0, logsnr=float("inf"))],
        layers=layers,
        widths={"a": 4, "b": 4},
        splits={
            "train": SplitLabels(y_train, np.arange(len(y_train))),
            "test": SplitLabels(y_test, np.arange(len(y_test))),
        },
        class_names=["0", "1"],
        draws=1,
    )
    writer = CacheWriter(path, layout)
    writer.write_batch("train", 0, {name: x[None, None] for name, x in train_feats.items()})
    writer.write_batch("test", 0, {name: x[None, None] for name, x in test_feats.items()})
    writer.close(complete=True)


def test_the_val_best_cell_is_reported_when_the_test_best_cell_differs(tmp_path):
    rng = np.random.default_rng(0)
    n_train, n_test = 600, 400
    y_train, y_test = rng.integers(0, 2, n_train), rng.integers(0, 2, n_test)

    def signal(y, strength):
        x = rng.standard_normal((len(y), 4)).astype(np.float32)
        x[:, 0] += strength * (2 * y - 1)
        return x

    # cell a: strong signal on train (hence on val), none on test; cell b: weak on train, strong on test
    train = {"a": signal(y_train, 4.0), "b": signal(y_train, 0.8)}
    test = {"a": signal(y_test, 0.0), "b": signal(y_test, 4.0)}
    _write_cache(tmp_path / "c.h5", train, test, y_train, y_test)
    table = run_probes(tmp_path / "c.h5", ProbeRunConfig(probes=("logreg",)), progress=False)
    top1 = table[table.metric == "top1"].set_index(["layer", "split"])["value"]
    assert top1["a", "val"] > top1["b", "val"] and top1["b", "test"] > top1["a", "test"]  # the construction holds

    from probekit.evaluate.results import best_cells, format_summary

    best = best_cells(table)
    assert best.iloc[0]["layer"] == "a" and best.iloc[0]["value"] == top1["a", "test"]
    assert "the test-best cell differs: t=0 b" in format_summary(table)
    # --val-fraction 0: the choice is made on test and says so
    on_test = run_probes(tmp_path / "c.h5", ProbeRunConfig(probes=("logreg",), val_fraction=0.0), progress=False)
    assert set(on_test["split"]) == {"test"} and best_cells(on_test).iloc[0]["layer"] == "b"
    assert "CHOSEN ON TEST" in format_summary(on_test)
