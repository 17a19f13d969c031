"""Correspondence: PCK on hand-made pairs, an independent numpy matcher, the warp generator's exact
ground truth, the SPair-71k / PF-Pascal readers, image frames, and paired comparisons.
"""

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from probekit.analyses.dense.correspond import correspond_cache
from probekit.analyses.dense.frame import ImageFrame
from probekit.core.errors import ProbekitError
from probekit.data import load_dataset
from probekit.data.pairs import (
    PairSet,
    convert_pf_pascal,
    convert_spair,
    read_pairs,
    warp_image,
    warp_pairs,
    write_pair_folder,
)
from probekit.evaluate.dense_sidecar import compare_dense, write_dense_sidecar
from probekit.evaluate.results import write_table
from probekit.features.cache import FeatureCache
from probekit.features.extraction import ExtractConfig, extract
from probekit.models import load_backbone

SIDE = 16


def _translation_folder(root, *, shuffle=False, n=6, shift=(3, 2), seed=0):
    """RGB noise images and their integer translations; keypoints where both images hold the same pixel."""
    rng = np.random.default_rng(seed)
    images, src_kps, trg_kps = [], [], []
    dx, dy = shift
    for _ in range(n):
        source = rng.integers(0, 256, size=(SIDE, SIDE, 3), dtype=np.uint8)
        target = rng.integers(0, 256, size=(SIDE, SIDE, 3), dtype=np.uint8)
        target[dy:, dx:] = source[: SIDE - dy, : SIDE - dx]  # target(x + dx, y + dy) = source(x, y)
        if shuffle:
            target = target.reshape(-1, 3)[rng.permutation(SIDE * SIDE)].reshape(SIDE, SIDE, 3)
        xs, ys = rng.integers(0, SIDE - dx, size=5), rng.integers(0, SIDE - dy, size=5)
        images += [source, target]
        src_kps.append(np.stack([xs, ys], axis=1))
        trg_kps.append(np.stack([xs + dx, ys + dy], axis=1))
    ids = np.arange(n, dtype=np.int64)
    pairs = PairSet(
        ids * 2, ids * 2 + 1, np.stack(src_kps).astype(float), np.stack(trg_kps).astype(float), np.full((n, 4), np.nan)
    )
    return write_pair_folder(root, {"val": images, "test": images}, {"val": pairs, "test": pairs})


def _pixels_cache(root, out, side=SIDE):
    return extract(
        load_backbone("pixels"), load_dataset(str(root)), out, ExtractConfig(pooling=f"spatial{side}"), progress=False
    )


def test_raw_pixels_reach_pck_1_under_an_integer_translation(tmp_path):
    root = _translation_folder(tmp_path / "pairs")
    results = correspond_cache(_pixels_cache(root, tmp_path / "p.h5"), root)
    test = results.table[results.table["split"] == "test"].set_index("metric")["value"]
    assert test["pck"] == 1.0 and test["pck_point"] == 1.0
    np.testing.assert_array_equal(results.test_counts[(0, "pixels")], [[5, 5]] * 6)


def test_a_shuffled_target_fails(tmp_path):
    root = _translation_folder(tmp_path / "pairs", shuffle=True)
    results = correspond_cache(_pixels_cache(root, tmp_path / "p.h5"), root)
    test = results.table[results.table["split"] == "test"].set_index("metric")["value"]
    # alpha 0.1 x 16 pixels: only a prediction within 1.6 pixels counts, ~9 of 256 positions by chance
    assert test["pck"] < 0.25


def _numpy_pck(maps, pairs, alpha):
    """Independent: upsample every map to the image, cosine argmax over target pixels, DIFT's rule."""
    up = F.interpolate(torch.from_numpy(maps), size=(SIDE, SIDE), mode="bilinear", align_corners=False).numpy()
    per_pair = []
    for p in range(len(pairs.source)):
        src, trg = up[pairs.source[p]], up[pairs.target[p]]
        flat = trg.reshape(trg.shape[0], -1).T
        flat = flat / np.linalg.norm(flat, axis=1, keepdims=True)
        correct = 0
        for (x, y), (tx, ty) in zip(pairs.source_kps[p].astype(int), pairs.target_kps[p]):
            vector = src[:, y, x] / np.linalg.norm(src[:, y, x])
            best = int(np.argmax(flat @ vector))
            distance = np.hypot(best % SIDE - tx, best // SIDE - ty)
            correct += distance / SIDE <= alpha
        per_pair.append(correct / len(pairs.source_kps[p]))
    return np.mean(per_pair)


@pytest.mark.parametrize("alpha", [0.1, 0.25])
def test_pck_on_coarse_maps_matches_an_independent_numpy_matcher(tmp_path, alpha):
    from probekit.analyses.dense.correspond import CorrespondConfig

    root = _translation_folder(tmp_path / "pairs", shift=(4, 4), seed=3)
    cache = _pixels_cache(root, tmp_path / "p.h5", side=4)
    results = correspond_cache(cache, root, CorrespondConfig(alpha=alpha))
    with FeatureCache(cache) as c:
        maps = c.feature_maps("test", "pixels", 0)  # test pairs: the test split
    expected = _numpy_pck(maps, read_pairs(root, "test"), alpha)
    got = results.table[(results.table["split"] == "test") & (results.table["metric"] == "pck")]["value"].iloc[0]
    assert got == pytest.approx(expected)


def test_warp_ground_truth_is_exact():
    # a linear image: bilinear interpolation reproduces it exactly, so the warped image at the
    # ground-truth position of a source pixel holds that pixel's value
    ys, xs = np.mgrid[0:28, 0:28]
    image = (40 + 3 * xs + 4 * ys).astype(np.uint8)
    images, pairs = warp_pairs(image[None], keypoints=30, rotation=20, scale=0.1, shift=0.05, seed=1)
    source, target = images
    from scipy.ndimage import map_coordinates

    valid = np.isfinite(pairs.target_kps[0]).all(axis=1)
    src, trg = pairs.source_kps[0][valid].astype(int), pairs.target_kps[0][valid]
    sampled = map_coordinates(target.astype(float), [trg[:, 1], trg[:, 0]], order=1)
    inside = (trg.min(axis=1) >= 1) & (trg.max(axis=1) <= 26)  # away from the rounding at the border
    np.testing.assert_allclose(sampled[inside], source[src[inside, 1], src[inside, 0]], atol=1.01)
    # an integer translation is an exact pixel shift
    shifted = warp_image(image, np.eye(2), np.array([3.0, -2.0]))
    np.testing.assert_array_equal(shifted[:26, 3:], image[2:, :25])


def test_spair_reader_on_a_fixture(tmp_path):
    root = tmp_path / "SPair-71k"
    for category, name, size in (("cat", "a.jpg", (40, 30)), ("cat", "b.jpg", (50, 20))):
        (root / "JPEGImages" / category).mkdir(parents=True, exist_ok=True)
        Image.new("RGB", size).save(root / "JPEGImages" / category / name)
    for split in ("val", "test"):
        (root / "PairAnnotation" / split).mkdir(parents=True)
        record = {
            "src_imname": "a.jpg",
            "trg_imname": "b.jpg",
            "category": "cat",
            "src_imsize": [40, 30, 3],
            "trg_imsize": [50, 20, 3],
            "src_kps": [[1, 2], [3, 4]],
            "trg_kps": [[5, 6], [7, 8]],
            "src_bndbox": [0, 0, 10, 10],
            "trg_bndbox": [2, 3, 30, 15],
        }
        (root / "PairAnnotation" / split / "000001-a-b:cat.json").write_text(json.dumps(record))
    out = convert_spair(root, tmp_path / "pairs")
    pairs = read_pairs(out, "test")
    assert pairs.source.tolist() == [0] and pairs.target.tolist() == [1]
    np.testing.assert_array_equal(pairs.source_kps[0], [[1, 2], [3, 4]])
    np.testing.assert_array_equal(pairs.target_kps[0], [[5, 6], [7, 8]])
    np.testing.assert_array_equal(pairs.target_bbox[0], [2, 3, 30, 15])
    assert Image.open(sorted((out / "images" / "test").iterdir())[1]).size == (50, 20)
    with pytest.raises(ProbekitError, match="SPair-71k"):
        convert_spair(tmp_path / "nothing", tmp_path / "x")


def test_pf_pascal_reader_on_a_fixture(tmp_path):
    root = tmp_path / "PF-dataset-PASCAL"
    (root / "JPEGImages").mkdir(parents=True)
    for name in ("2009_1.jpg", "2009_2.jpg"):
        Image.new("RGB", (30, 20)).save(root / "JPEGImages" / name)
    header = "source_image,target_image,class,XA,YA,XB,YB\n"
    row = (
        "PF-dataset-PASCAL/JPEGImages/2009_2.jpg,PF-dataset-PASCAL/JPEGImages/2009_1.jpg,7,1;2;3,4;5;6,7;8;9,10;11;12\n"
    )
    for split in ("val", "test"):
        (root / f"{split}_pairs_pf_pascal.csv").write_text(header + row)
    out = convert_pf_pascal(root, tmp_path / "pairs")
    pairs = read_pairs(out, "val")
    assert pairs.source.tolist() == [1] and pairs.target.tolist() == [0]  # images sorted by path
    np.testing.assert_array_equal(pairs.source_kps[0], [[1, 4], [2, 5], [3, 6]])
    np.testing.assert_array_equal(pairs.target_kps[0], [[7, 10], [8, 11], [9, 12]])
    assert np.isnan(pairs.target_bbox).all()  # no box: PCK uses the image size
    (root / "test_pairs_pf_pascal.csv").write_text("a,b\n1,2\n")
    with pytest.raises(ProbekitError, match="lacks column"):
        convert_pf_pascal(root, tmp_path / "pairs2")


def test_frames_replay_pad_resize_and_centre_crop():
    pad = ImageFrame.from_fit({"fit": "pad", "from_size": [28, 28], "to_size": [32, 32]}, (28, 28))
    np.testing.assert_allclose(pad.to_frame([[0.5, 27.5]]), [[2.5, 29.5]])
    resize = ImageFrame.from_fit({"fit": "resize", "from_size": [16, 16], "to_size": [32, 32]}, (16, 16))
    np.testing.assert_allclose(resize.to_frame([[0.5, 8.0]]), [[1.0, 16.0]])
    # a 40 x 20 (W x H) image: shorter side to 10 -> 20 x 10, centre crop 10 x 10 (5 columns cut left), then pad to 16
    mixed = ImageFrame.from_fit(
        {"fit": "pad", "from_size": [10, 10], "to_size": [16, 16], "resize": {"size": 10}}, (20, 40)
    )
    np.testing.assert_allclose(mixed.to_frame([[10.0, 4.0]]), [[10 / 2 - 5 + 3, 2 + 3]])
    assert not mixed.inside(np.array([[2.0, 4.0]]))  # cut off by the crop
    with pytest.raises(ProbekitError, match="not what the cache fitted"):
        ImageFrame.from_fit({"fit": "none", "from_size": [28, 28], "to_size": [28, 28]}, (30, 30))


def test_dense_compare_of_a_run_with_itself_and_a_worse_one(tmp_path):
    root = _translation_folder(tmp_path / "pairs")
    good = correspond_cache(_pixels_cache(root, tmp_path / "p.h5"), root)
    bad = correspond_cache(_pixels_cache(root, tmp_path / "q.h5", side=2), root)
    for name, results in (("good", good), ("bad", bad)):
        write_table(results.table, tmp_path / f"{name}.csv")
        write_dense_sidecar(tmp_path / f"{name}.csv", results.table, "pck", results.test_counts, results.test_pairs)
    same = compare_dense(tmp_path / "good.csv", tmp_path / "good.csv", n_boot=200)
    assert same.diff == 0 and same.ci_low == 0 and same.ci_high == 0
    diff = compare_dense(tmp_path / "good.csv", tmp_path / "bad.csv", n_boot=500)
    per_pair_bad = bad.test_counts[(0, "pixels")]
    assert diff.value_b == pytest.approx(np.mean(per_pair_bad[:, 0] / per_pair_bad[:, 1]))
    assert diff.diff == pytest.approx(1.0 - diff.value_b) and diff.ci_low <= diff.diff <= diff.ci_high
