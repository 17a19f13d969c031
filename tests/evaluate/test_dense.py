"""PCK, confusion, mIoU and pixel accuracy against hand-computed values and a plain-loop implementation."""

import numpy as np
import pytest

from probekit.core.errors import ProbekitError
from probekit.evaluate.dense import (
    confusion_matrix,
    keypoints_correct,
    pck_threshold,
    segmentation_scores,
)


def test_pck_hand_computed():
    # target box 40 wide x 100 high -> threshold 100; alpha 0.1 -> 10 pixels, inclusive (DIFT: dist / thr <= alpha)
    threshold = pck_threshold(np.array([10, 20, 50, 120]), (300, 400))
    assert threshold == 100
    true = np.array([[0, 0], [0, 0], [0, 0], [5, 5]])
    predicted = np.array([[6, 8], [6, 8.0001], [10, 0], [5, 5]])  # distances 10, >10, 10, 0
    np.testing.assert_array_equal(keypoints_correct(predicted, true, threshold, 0.1), [True, False, True, True])
    assert pck_threshold(None, (300, 400)) == 400  # no box: the image's larger side


def test_pck_bad_input():
    with pytest.raises(ProbekitError, match="threshold"):
        keypoints_correct(np.zeros((1, 2)), np.zeros((1, 2)), 0.0, 0.1)
    with pytest.raises(ProbekitError, match="equal shape"):
        keypoints_correct(np.zeros((2, 2)), np.zeros((1, 2)), 1.0, 0.1)


def test_miou_hand_computed():
    labels = np.array([[0, 0, 1, 1], [2, 2, 255, 1]])
    predicted = np.array([[0, 1, 1, 1], [2, 0, 0, 1]])
    # class 0: TP 1, FP 1 (pos 5), FN 1 -> 1/3 ; class 1: TP 3, FP 1, FN 0 -> 3/4 ; class 2: TP 1, FN 1 -> 1/2
    scores = segmentation_scores(confusion_matrix(predicted, labels, 3))
    assert scores["miou"] == pytest.approx((1 / 3 + 3 / 4 + 1 / 2) / 3)
    assert scores["pixel_accuracy"] == pytest.approx(5 / 7)


def _loop_scores(predicted, labels, num_classes):
    ious = []
    for c in range(num_classes):
        tp = fp = fn = 0
        for p, l in zip(predicted.ravel(), labels.ravel()):
            if l == 255:
                continue
            tp += p == c and l == c
            fp += p == c and l != c
            fn += p != c and l == c
        if tp + fp + fn:
            ious.append(tp / (tp + fp + fn))
    valid = labels != 255
    return np.mean(ious), (predicted[valid] == labels[valid]).mean()


def test_miou_matches_a_plain_loop():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 5, size=(3, 9, 9))
    labels[rng.random(labels.shape) < 0.1] = 255
    predicted = np.where(rng.random(labels.shape) < 0.6, labels, rng.integers(0, 5, size=labels.shape)) % 5
    scores = segmentation_scores(confusion_matrix(predicted, labels, 5))
    miou, accuracy = _loop_scores(predicted, labels, 5)
    assert scores["miou"] == pytest.approx(miou) and scores["pixel_accuracy"] == pytest.approx(accuracy)
    with pytest.raises(ProbekitError, match="outside"):
        confusion_matrix(np.zeros(2), np.array([0, 7]), 5)
