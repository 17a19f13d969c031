import math

import numpy as np
import pytest

from probekit.evaluate.metrics import (
    CellScore,
    mean_class_recall,
    score_predictions,
    top1_accuracy,
    wilson_interval,
)

# Three classes, worked out by hand:
#   class 0: 3 samples, 2 right -> recall 2/3
#   class 1: 2 samples, 1 right -> recall 1/2
#   class 2: 1 sample,  1 right -> recall 1
# top1 = 4/6; mean class recall = (2/3 + 1/2 + 1) / 3 = 13/18.
Y_TRUE = np.array([0, 0, 0, 1, 1, 2])
Y_PRED = np.array([0, 0, 1, 1, 2, 2])


def test_top1_by_hand():
    assert top1_accuracy(Y_TRUE, Y_PRED) == pytest.approx(4 / 6)


def test_mean_class_recall_by_hand():
    assert mean_class_recall(Y_TRUE, Y_PRED) == pytest.approx(13 / 18)


def test_mean_class_recall_ignores_classes_absent_from_truth():
    # Class 3 is predicted once but never occurs: it has no recall to average.
    y_true = np.array([0, 0, 1, 1])
    y_pred = np.array([0, 3, 1, 1])
    assert mean_class_recall(y_true, y_pred) == pytest.approx((1 / 2 + 1) / 2)


def test_score_predictions_fields():
    score = score_predictions(Y_TRUE, Y_PRED)
    assert isinstance(score, CellScore)
    assert score.n_test == 6
    assert score.top1 == pytest.approx(4 / 6)
    assert score.mean_class_recall == pytest.approx(13 / 18)
    assert score.predictions.dtype == np.int64
    np.testing.assert_array_equal(score.predictions, Y_PRED)
    assert score.converged


def test_wilson_interval_known_value():
    # 8 / 10 at 95 %: the textbook Wilson interval is (0.4902, 0.9433).
    low, high = wilson_interval(8, 10)
    assert low == pytest.approx(0.4902, abs=1e-4)
    assert high == pytest.approx(0.9433, abs=1e-4)


def test_wilson_interval_matches_formula():
    correct, n, z = 437, 500, 1.96
    p = correct / n
    centre = (p + z**2 / (2 * n)) / (1 + z**2 / n)
    half = z / (1 + z**2 / n) * np.sqrt(p * (1 - p) / n + z**2 / (4 * n**2))
    assert wilson_interval(correct, n, z) == pytest.approx((centre - half, centre + half))


def test_wilson_interval_edges():
    low, high = wilson_interval(0, 20)
    assert low == 0.0 and 0 < high < 0.2
    low, high = wilson_interval(20, 20)
    assert high == 1.0 and 0.8 < low < 1
    assert all(math.isnan(v) for v in wilson_interval(0, 0))
    with pytest.raises(ValueError):
        wilson_interval(5, 3)


def test_empty_or_mismatched_inputs_raise():
    with pytest.raises(ValueError):
        top1_accuracy(np.array([]), np.array([]))
    with pytest.raises(ValueError):
        mean_class_recall(np.array([0, 1]), np.array([0]))
