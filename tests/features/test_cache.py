import h5py
import numpy as np
import pytest

from probekit.core.errors import ProbekitError
from probekit.core.schedule import DDPMSchedule
from probekit.features.cache import CacheLayout, CacheWriter, FeatureCache, SplitLabels, write_master
from probekit.models import LayerInfo


def _layout(dtype="float32", draws=2):
    schedule = DDPMSchedule()
    return CacheLayout(
        attrs={
            "model_id": "m",
            "model_sha256": "ab" * 32,
            "dataset": "toy",
            "fit": {"fit": "pad"},
            "seed": 0,
            "pooling": "gap",
        },
        grid=schedule.points([1, 50]),
        layers=[LayerInfo("a", "down", 0, 3, "4x4"), LayerInfo("b", "mid", 1, 5, "2x2", aliases=("mid_block",))],
        widths={"a": 3, "b": 5},
        splits={
            "train": SplitLabels(np.array([0, 1, 1, 0, 2]), np.arange(5) + 10),
            "test": SplitLabels(np.array([2, 0]), np.array([7, 3])),
        },
        class_names=["x", "y", "z"],
        draws=draws,
        dtype=dtype,
    )


def _fill(path, layout, rng, batch=2):
    writer = CacheWriter(path, layout)
    written = {}
    for split, labels in layout.splits.items():
        n = len(labels.labels)
        full = {
            name: rng.normal(size=(2, layout.draws, n, layout.widths[name])).astype(np.float32)
            for name in layout.widths
        }
        written[split] = full
        for start in range(0, n, batch):
            writer.write_batch(
                split, start, {name: values[:, :, start : start + batch] for name, values in full.items()}
            )
    writer.close(complete=True)
    return written


def test_round_trip_of_features_labels_grid_and_layers(tmp_path):
    layout = _layout()
    written = _fill(tmp_path / "c.h5", layout, np.random.default_rng(0))
    with FeatureCache(tmp_path / "c.h5") as cache:
        assert cache.complete
        assert cache.timesteps == [1, 50]
        assert cache.grid[1].alpha_bar == pytest.approx(DDPMSchedule().point(50).alpha_bar)
        assert [(l.name, l.depth, l.channels, l.aliases) for l in cache.layers] == [
            ("a", 0, 3, ()),
            ("b", 1, 5, ("mid_block",)),
        ]
        assert cache.class_names == ["x", "y", "z"]
        np.testing.assert_array_equal(cache.labels("train"), [0, 1, 1, 0, 2])
        np.testing.assert_array_equal(cache.index("test"), [7, 3])
        # a cell is the mean over the noise draws
        np.testing.assert_allclose(cache.features("train", "b", 50), written["train"]["b"][1].mean(axis=0), rtol=1e-6)
        assert cache.attrs["fit"] == {"fit": "pad"} and cache.attrs["draws"] == 2
        assert "complete" in cache.summary() and "mid_block" in cache.summary()


def test_float16_storage(tmp_path):
    layout = _layout(dtype="float16", draws=1)
    written = _fill(tmp_path / "c.h5", layout, np.random.default_rng(1))
    with h5py.File(tmp_path / "c.h5") as f:
        assert f["train/feats/a"].dtype == np.float16
    with FeatureCache(tmp_path / "c.h5") as cache:
        got = cache.features("test", "a", 1)
        assert got.dtype == np.float32
        np.testing.assert_allclose(got, written["test"]["a"][0, 0], rtol=1e-3, atol=1e-3)


def test_unfinished_cache_is_refused_with_progress(tmp_path):
    layout = _layout()
    writer = CacheWriter(tmp_path / "c.h5", layout)
    writer.write_batch("train", 0, {name: np.zeros((2, 2, 2, w), np.float32) for name, w in layout.widths.items()})
    writer.close(complete=False)
    with FeatureCache(tmp_path / "c.h5") as cache:
        assert not cache.complete and cache.progress("train") == (2, 5)
        with pytest.raises(ProbekitError, match="unfinished.*train 2/5"):
            cache.require_complete()
        assert "INCOMPLETE" in cache.summary()


def test_claiming_complete_with_missing_samples_fails(tmp_path):
    writer = CacheWriter(tmp_path / "c.h5", _layout())
    with pytest.raises(RuntimeError, match="unwritten"):
        writer.close(complete=True)
    with FeatureCache(tmp_path / "c.h5") as cache:
        assert not cache.complete


def test_unknown_cell_and_non_cache_files(tmp_path):
    _fill(tmp_path / "c.h5", _layout(), np.random.default_rng(0))
    with FeatureCache(tmp_path / "c.h5") as cache:
        with pytest.raises(ProbekitError, match="timestep 7 is not in"):
            cache.features("train", "a", 7)
        with pytest.raises(ProbekitError, match="layer 'zz' is not in"):
            cache.features("train", "zz", 1)
    (tmp_path / "junk.h5").write_bytes(b"not hdf5")
    with pytest.raises(ProbekitError, match="not a readable HDF5"):
        FeatureCache(tmp_path / "junk.h5")
    with h5py.File(tmp_path / "other.h5", "w") as f:
        f.attrs["x"] = 1
    with pytest.raises(ProbekitError, match="not a probekit feature cache"):
        FeatureCache(tmp_path / "other.h5")
    with pytest.raises(ProbekitError, match="not found"):
        FeatureCache(tmp_path / "missing.h5")


def _shards(tmp_path):
    """Two shard caches of the same layout with different samples, and their features by split."""
    from dataclasses import replace

    full = _layout()
    parts = [{"train": slice(0, 3), "test": slice(0, 1)}, {"train": slice(3, 5), "test": slice(1, 2)}]
    paths, written = [], []
    for r, part in enumerate(parts):
        splits = {s: SplitLabels(v.labels[part[s]], v.index[part[s]]) for s, v in full.splits.items()}
        paths.append(tmp_path / f"m.rank{r}-of-2.h5")
        written.append(_fill(paths[-1], replace(full, splits=splits), np.random.default_rng(r)))
    return paths, written


def test_master_reads_the_shards_in_order(tmp_path):
    paths, written = _shards(tmp_path)
    write_master(tmp_path / "m.h5", paths)
    with FeatureCache(tmp_path / "m.h5") as cache:
        assert cache.complete
        np.testing.assert_array_equal(cache.labels("train"), [0, 1, 1, 0, 2])
        expected = np.concatenate([w["train"]["b"][1].mean(axis=0) for w in written])
        np.testing.assert_allclose(cache.features("train", "b", 50), expected, rtol=1e-6)


def test_master_with_a_missing_shard_is_refused(tmp_path):
    paths, _ = _shards(tmp_path)
    write_master(tmp_path / "m.h5", paths)
    paths[1].unlink()
    # HDF5 alone would read the missing rows as zeros and keep saying complete.
    with h5py.File(tmp_path / "m.h5", "r") as f:
        assert bool(f.attrs["complete"]) and not f["train/feats/a"][0, 0, 3:].any()
    with pytest.raises(ProbekitError, match=r"shard .*m\.rank1-of-2\.h5 is missing"):
        FeatureCache(tmp_path / "m.h5")


def test_master_with_an_unfinished_shard_is_refused(tmp_path):
    paths, _ = _shards(tmp_path)
    write_master(tmp_path / "m.h5", paths)
    with h5py.File(paths[0], "r+") as f:  # the shard was restarted after the master was written
        f.attrs["complete"] = False
    with FeatureCache(tmp_path / "m.h5") as cache:
        assert not cache.complete
        with pytest.raises(ProbekitError, match=r"shard .*m\.rank0-of-2\.h5 is unfinished"):
            cache.require_complete()


def test_info_prints_the_prompt_template(tmp_path, capsys):
    rng = np.random.default_rng(2)
    layout = CacheLayout(
        attrs={
            "model_id": "sd:x",
            "model_sha256": "ab" * 32,
            "dataset": "toy",
            "fit": {},
            "seed": 0,
            "pooling": "gap",
            "prompt": "a photo of a {}",
            "command": "probekit extract --prompt 'a photo of a {}'",
        },
        grid=DDPMSchedule().points([10]),
        layers=[LayerInfo("a", "down", 0, 4, "1x1")],
        widths={"a": 4},
        splits={"test": SplitLabels(np.arange(6) % 3, np.arange(6))},
        class_names=["a", "b", "c"],
        draws=1,
    )
    writer = CacheWriter(tmp_path / "p.h5", layout)
    writer.write_batch("test", 0, {"a": rng.normal(size=(1, 1, 6, 4)).astype(np.float32)})
    writer.close(complete=True)
    from probekit.cli import main

    assert main(["info", str(tmp_path / "p.h5")]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "prompt template: 'a photo of a {}'" in lines


def test_a_flipped_byte_in_a_feature_chunk_is_one_line_naming_file_and_dataset(tmp_path, capsys):
    from probekit.cli import main

    path = tmp_path / "c.h5"
    _fill(path, _layout(), np.random.default_rng(0))
    with h5py.File(path, "r") as f:
        dataset = f["train"]["feats"]["b"]
        assert "checksums" in f["train"] and f["train"]["checksums"]["b"].shape == dataset.shape[:3]
        chunk = dataset.id.get_chunk_info(0)  # (t=0, draw 0, first rows)
    raw = bytearray(path.read_bytes())
    raw[chunk.byte_offset + 2] ^= 0x01  # one bit of one stored float
    path.write_bytes(bytes(raw))
    with FeatureCache(path) as cache:
        np.testing.assert_array_equal(cache.features("train", "a", 1).shape, (5, 3))  # other datasets still read
        with pytest.raises(ProbekitError, match=r"c\.h5: dataset /train/feats/b does not match its Fletcher-32"):
            cache.features("train", "b", 1)
    capsys.readouterr()
    argv = ["probe", "--cache", str(path), "--out", str(tmp_path / "r.csv"), "--quiet", "--val-fraction", "0"]
    assert main([*argv, "--probes", "knn"]) != 0
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and "/train/feats/b" in err[0] and "Fletcher-32" in err[0], err
    assert not (tmp_path / "r.csv").exists()
