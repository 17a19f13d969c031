"""Spatial caches (--pooling spatialS): layout, version, float16, feature maps, budget and --max-memory."""

import logging

import h5py
import numpy as np
import pytest

from probekit.core.errors import ProbekitError
from probekit.data.base import ImageDataset, ImageSplit
from probekit.features.cache import FeatureCache
from probekit.features.extraction import ExtractConfig, extract
from probekit.models import load_backbone

LAYERS = ["down_blocks.0.resnets.0", "mid_block"]


def _dataset(n_train=12, n_test=6):
    rng = np.random.default_rng(0)

    def split(n, offset):
        labels = (np.arange(n) % 2).astype(np.int64)
        images = rng.integers(0, 256, size=(n, 16, 16, 1)).astype(np.uint8)
        return ImageSplit(images=images, labels=labels, index=np.arange(n, dtype=np.int64) + offset)

    return ImageDataset("toy", {"train": split(n_train, 0), "test": split(n_test, 100)}, ["a", "b"], "memory")


def test_spatial_cache_layout_and_maps_match_a_hooked_forward(tiny_unet_dir, tmp_path):
    backbone = load_backbone(str(tiny_unet_dir))
    data = _dataset()
    out = extract(
        backbone,
        data,
        tmp_path / "s.h5",
        ExtractConfig(timesteps=[0], layers=LAYERS, pooling="spatial4"),
        progress=False,
    )
    with h5py.File(out) as f:
        assert int(f.attrs["format_version"]) == 2 and int(f.attrs["spatial_side"]) == 4
        assert f["train/feats/down_blocks.0.resnets.0"].dtype == np.float16
        assert f["train/feats/down_blocks.0.resnets.0"].shape == (1, 1, 12, 8 * 16)
    # the grid averaged over space is the gap feature of the same noisy forward (layout check),
    # and the flattened grid is avg4's vector (same numbers, float16-rounded)
    gap = extract(backbone, data, tmp_path / "g.h5", ExtractConfig(timesteps=[0], layers=LAYERS), progress=False)
    avg = extract(
        backbone, data, tmp_path / "a.h5", ExtractConfig(timesteps=[0], layers=LAYERS, pooling="avg4"), progress=False
    )
    with FeatureCache(out) as cache, FeatureCache(gap) as g, FeatureCache(avg) as a:
        assert cache.spatial_side == 4
        maps = cache.feature_maps("test", "down_blocks.0.resnets.0", 0, rows=np.array([0, 2, 3]))
        assert maps.shape == (3, 8, 4, 4) and maps.dtype == np.float32
        np.testing.assert_allclose(
            maps.mean(axis=(2, 3)), g.features("test", "down_blocks.0.resnets.0", 0)[[0, 2, 3]], rtol=2e-3, atol=2e-3
        )
        flat = a.features("test", "down_blocks.0.resnets.0", 0)[[0, 2, 3]].reshape(3, 8, 4, 4)
        np.testing.assert_allclose(maps, flat.astype(np.float16).astype(np.float32), rtol=1e-6)


def test_plain_caches_stay_version_1_and_have_no_maps(tiny_unet_dir, tmp_path):
    out = extract(
        load_backbone(str(tiny_unet_dir)),
        _dataset(),
        tmp_path / "g.h5",
        ExtractConfig(timesteps=[0], layers=LAYERS),
        progress=False,
    )
    with h5py.File(out) as f:
        assert int(f.attrs["format_version"]) == 1 and "spatial_side" not in f.attrs
        assert f["train/feats/mid_block.resnets.1"].dtype == np.float32
    with FeatureCache(out) as cache:
        assert cache.spatial_side == 0
        with pytest.raises(ProbekitError, match="--pooling spatialS"):
            cache.feature_maps("test", "mid_block", 0)


def test_pixels_spatial_maps_are_the_averaged_image(tmp_path):
    data = _dataset()
    out = extract(load_backbone("pixels"), data, tmp_path / "p.h5", ExtractConfig(pooling="spatial8"), progress=False)
    images = data.splits["train"].images.astype(np.float64).transpose(0, 3, 1, 2) / 255
    expected = images.reshape(12, 1, 8, 2, 8, 2).mean(axis=(3, 5))
    with FeatureCache(out) as cache:
        np.testing.assert_allclose(cache.feature_maps("train", "pixels", 0), expected, atol=1e-3)


@pytest.mark.slow
def test_budget_is_printed_and_max_memory_lowers_the_batch(tiny_unet_dir, tmp_path, caplog):
    backbone = load_backbone(str(tiny_unet_dir))
    # down_blocks.0.resnets.0: 8 channels x 4 x 4 = 128 values; mid_block: 16 x 16 = 256; per image 384 values
    per_image = 2 * 384 * 4  # two grid points, float32 in memory
    with caplog.at_level(logging.INFO, logger="probekit.features.extraction"):
        extract(
            backbone,
            _dataset(),
            tmp_path / "m.h5",
            ExtractConfig(
                timesteps=[0, 10], layers=LAYERS, pooling="spatial4", batch_size=8, max_memory=3 * per_image * 5
            ),
            progress=False,
        )
    text = caplog.text
    assert "batch size 8 -> 5" in text
    disk = 2 * 384 * 2 * (12 + 6)  # grid x values x float16 x images
    assert f"{disk / 2**20:.1f} MiB of float16 features on disk" in text
    with pytest.raises(ProbekitError, match="cannot hold the features of even one image"):
        extract(
            backbone,
            _dataset(),
            tmp_path / "n.h5",
            ExtractConfig(timesteps=[0, 10], layers=LAYERS, pooling="spatial4", max_memory=per_image),
            progress=False,
        )
    assert not (tmp_path / "n.h5").exists()
