import numpy as np
import pytest

from probekit.core.errors import ProbekitError
from probekit.data import ImageSplit, holdout_split, stratified_subset


def make_split(labels, index_offset=1000):
    """Each image's single pixel holds its position, so images can be traced after subsetting."""
    labels = np.asarray(labels, dtype=np.int64)
    positions = np.arange(len(labels))
    images = (positions % 256).astype(np.uint8).reshape(-1, 1, 1, 1)
    return ImageSplit(images, labels, positions.astype(np.int64) * 3 + index_offset)


def shuffled_labels(counts, seed=0):
    labels = np.concatenate([[c] * n for c, n in enumerate(counts)])
    return np.random.default_rng(seed).permutation(labels)


def test_subset_proportions_exact():
    split = make_split(shuffled_labels([50, 30, 20]))
    subset = stratified_subset(split, 10, seed=0)
    np.testing.assert_array_equal(np.bincount(subset.labels), [5, 3, 2])


def test_subset_largest_remainder_rounding():
    # quotas for 5 of [6, 3, 1]: 3, 1.5, 0.5 -> floors 3, 1, 0; the one left goes to the tie's
    # lower class (class 1), so [3, 2, 0]
    split = make_split(shuffled_labels([6, 3, 1]))
    np.testing.assert_array_equal(np.bincount(stratified_subset(split, 5, seed=4).labels, minlength=3), [3, 2, 0])
    # quotas for 7 of [6, 3, 1]: 4.2, 2.1, 0.7 -> floors 4, 2, 0 -> class 2 has the largest remainder
    np.testing.assert_array_equal(np.bincount(stratified_subset(split, 7, seed=4).labels, minlength=3), [4, 2, 1])


def test_subset_keeps_order_and_ids():
    split = make_split(shuffled_labels([40, 25, 35]))
    subset = stratified_subset(split, 30, seed=7)
    assert len(subset) == 30
    assert np.all(np.diff(subset.index) > 0)
    positions = (subset.index - 1000) // 3
    np.testing.assert_array_equal(subset.images[:, 0, 0, 0], positions)
    np.testing.assert_array_equal(subset.labels, split.labels[positions])


def test_subset_is_deterministic_and_seeded():
    split = make_split(shuffled_labels([40, 25, 35]))
    first = stratified_subset(split, 30, seed=7).index
    np.testing.assert_array_equal(stratified_subset(split, 30, seed=7).index, first)
    assert not np.array_equal(stratified_subset(split, 30, seed=8).index, first)


def test_subset_of_subset_keeps_original_ids():
    split = make_split(shuffled_labels([40, 25, 35]))
    inner = stratified_subset(stratified_subset(split, 50, seed=1), 20, seed=2)
    assert set(inner.index) <= set(split.index)


@pytest.mark.parametrize("limit", [None, 100, 1000])
def test_no_limit_or_large_limit_returns_split_unchanged(limit):
    split = make_split(shuffled_labels([40, 25, 35]))
    assert stratified_subset(split, limit, seed=0) is split


def test_subset_limit_must_be_positive():
    with pytest.raises(ProbekitError, match="positive"):
        stratified_subset(make_split([0, 1, 1]), 0, seed=0)


def test_holdout_counts_and_indices():
    labels = shuffled_labels([10, 6, 4])
    images = np.arange(20, dtype=np.uint8).reshape(20, 1, 1, 1)
    train, test = holdout_split(images, labels, 0.25, seed=0)
    # 5 of 20: quotas 2.5, 1.5, 1.0 -> floors 2, 1, 1; the tie of remainders goes to class 0
    np.testing.assert_array_equal(np.bincount(test.labels), [3, 1, 1])
    np.testing.assert_array_equal(np.sort(np.concatenate([train.index, test.index])), np.arange(20))
    for split in (train, test):
        np.testing.assert_array_equal(split.images[:, 0, 0, 0], split.index)
        np.testing.assert_array_equal(split.labels, labels[split.index])


def test_holdout_keeps_a_train_image_of_every_class():
    labels = np.array([0] * 8 + [1])  # class 1 has a single image
    train, test = holdout_split(np.zeros((9, 1, 1, 1), np.uint8), labels, 0.5, seed=0)
    assert 1 in train.labels and 1 not in test.labels
    assert len(test) == round(9 * 0.5)


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.1, 1.5])
def test_holdout_fraction_must_be_in_open_interval(fraction):
    with pytest.raises(ProbekitError, match="strictly between 0 and 1"):
        holdout_split(np.zeros((10, 1, 1, 1), np.uint8), np.zeros(10, np.int64), fraction, seed=0)
