"""Mosaic folders, mask reading, and the per-pixel linear probe end to end on a spatial cache."""

import numpy as np
import pytest
from PIL import Image

from probekit.analyses.dense.segment import SegmentConfig, segment_cache
from probekit.core.errors import ProbekitError
from probekit.data import load_dataset
from probekit.data.base import ImageDataset, ImageSplit
from probekit.data.segmentation import (
    FOREGROUND,
    fashion_mosaic,
    read_masks,
    voc_palette,
    write_fashion_mosaic,
    write_mask,
)
from probekit.features.extraction import ExtractConfig, extract
from probekit.models import load_backbone


def _garments(n=40, seed=0):
    rng = np.random.default_rng(seed)
    images = np.zeros((n, 28, 28, 1), dtype=np.uint8)
    images[:, 6:22, 8:20, 0] = rng.integers(120, 255, size=(n, 1, 1))  # a bright block on black
    return images, (np.arange(n) % 4).astype(np.int64)


def test_mosaic_tiles_and_labels_by_hand():
    images, labels = _garments()
    mosaics, masks = fashion_mosaic(images, labels, 3, tile=14, seed=5)
    choice = np.random.default_rng(5).choice(len(images), size=(3, 4), replace=True)
    # tile 3 (bottom-right) of mosaic 1: the garment shrunk 2x by box averaging
    source = images[choice[1, 3], ..., 0].astype(np.float64)
    expected = source.reshape(14, 2, 14, 2).mean(axis=(1, 3))
    np.testing.assert_allclose(mosaics[1, 14:, 14:], expected, atol=1)
    expected_mask = np.where(mosaics[1, 14:, 14:] >= FOREGROUND, labels[choice[1, 3]] + 1, 0)
    np.testing.assert_array_equal(masks[1, 14:, 14:], expected_mask)
    assert set(np.unique(masks)) <= {0, 1, 2, 3, 4}


def test_voc_palette_matches_the_published_colours():
    palette = voc_palette()
    assert palette[0:3] == [0, 0, 0] and palette[3:6] == [128, 0, 0] and palette[6:9] == [0, 128, 0]
    assert palette[15 * 3 : 16 * 3] == [192, 128, 128]  # person
    assert palette[255 * 3 : 256 * 3] == [224, 224, 192]  # the ignore index's border colour


def _toy_dataset():
    images, labels = _garments(60)
    split = lambda a, b: ImageSplit(images[a:b], labels[a:b], np.arange(b - a, dtype=np.int64))
    return ImageDataset("garments", {"train": split(0, 40), "test": split(40, 60)}, ["a", "b", "c", "d"], "memory")


def test_mosaic_folder_round_trip_and_mask_errors(tmp_path):
    root = write_fashion_mosaic(_toy_dataset(), tmp_path / "m", counts={"train": 6, "val": 2, "test": 3}, tile=16)
    data = load_dataset(str(root))
    assert sorted(data.splits) == ["test", "train", "val"] and len(data.splits["train"].labels) == 6
    with Image.open(root / "masks" / "test" / "000002.png") as mask:
        assert mask.mode == "P"
    masks = read_masks(root, "test", np.array([2]))
    assert masks[0].shape == (32, 32) and masks[0].max() <= 4
    Image.fromarray(np.zeros((32, 32, 3), dtype=np.uint8)).save(root / "masks" / "test" / "000001.png")
    with pytest.raises(ProbekitError, match="palette"):
        read_masks(root, "test", np.array([1]))
    with pytest.raises(ProbekitError, match="not empty"):
        write_fashion_mosaic(_toy_dataset(), root, counts={"train": 1})


def _folder(root, n_train=12, n_test=6, side=16):
    """Images whose bright pixels (200) are class 1 and dark pixels (0) class 0, with some ignored pixels."""
    rng = np.random.default_rng(1)
    (root / "classes.txt").parent.mkdir(parents=True, exist_ok=True)
    (root / "classes.txt").write_text("background\nthing\n")
    for split, n in (("train", n_train), ("test", n_test)):
        (root / "images" / split).mkdir(parents=True)
        (root / "masks" / split).mkdir(parents=True)
        for i in range(n):
            on = rng.random((side, side)) < 0.4
            Image.fromarray(np.where(on, 200, 0).astype(np.uint8), mode="L").save(root / "images" / split / f"{i}.png")
            mask = on.astype(np.uint8)
            mask[0, :3] = 255
            write_mask(root / "masks" / split / f"{i}.png", mask)
    return root


def test_segment_pixels_at_full_resolution_is_exact(tmp_path):
    root = _folder(tmp_path / "seg")
    cache = extract(
        load_backbone("pixels"),
        load_dataset(str(root)),
        tmp_path / "p.h5",
        ExtractConfig(pooling="spatial16"),
        progress=False,
    )
    results = segment_cache(cache, root, SegmentConfig(pixels_per_image=32, val_fraction=0.25))
    table = results.table
    test = table[(table["split"] == "test")].set_index("metric")["value"]
    # a 16 x 16 map read at pixel centres is the image itself: intensity separates the two classes
    assert test["miou"] == pytest.approx(1.0) and test["pixel_accuracy"] == pytest.approx(1.0)
    assert table[table["split"] == "test"]["n_eval"].iloc[0] == 6 * (16 * 16 - 3)
    assert table["n_train"].iloc[0] == 9 * 32


def test_segment_coarse_maps_match_numpy_upsampling(tmp_path):
    """On a 4 x 4 map the prediction is the linear head applied to bilinearly upsampled features."""
    import torch
    import torch.nn.functional as F

    from probekit.analyses.dense.frame import ImageFrame, pixel_centres, read_maps
    from probekit.features.cache import FeatureCache

    root = _folder(tmp_path / "seg")
    cache = extract(
        load_backbone("pixels"),
        load_dataset(str(root)),
        tmp_path / "p.h5",
        ExtractConfig(pooling="spatial4"),
        progress=False,
    )
    with FeatureCache(cache) as c:
        maps = torch.from_numpy(c.feature_maps("test", "pixels", 0))
        frame = ImageFrame.from_fit(c.attrs["fit"], (16, 16))
    upsampled = F.interpolate(maps, size=(16, 16), mode="bilinear", align_corners=False)
    points = torch.from_numpy(frame.to_frame(pixel_centres(16, 16))).float()[None].expand(len(maps), -1, -1)
    read = read_maps(maps, points, frame.frame_hw)
    np.testing.assert_allclose(read.numpy().reshape(len(maps), 16, 16), upsampled[:, 0].numpy(), atol=1e-6)
    with pytest.raises(ProbekitError, match="spatialS"):
        gap = extract(
            load_backbone("pixels"), load_dataset(str(root)), tmp_path / "g.h5", ExtractConfig(), progress=False
        )
        segment_cache(gap, root)
