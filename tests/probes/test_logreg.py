import logging

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from probekit.core.errors import ProbekitError
from probekit.probes import LogRegConfig, logreg_probe


def test_separable_cells_reach_full_accuracy_and_noise_stays_at_chance(separable_grid):
    g = separable_grid
    scores = logreg_probe(g.train, g.y_train, g.test, g.y_test)
    assert list(scores) == list(g.train)
    for key, score in scores.items():
        assert score.top1 == pytest.approx(np.mean(score.predictions == g.y_test))
        if key == g.noise_cell:
            assert abs(score.top1 - 1 / g.num_classes) < 0.1
        else:
            assert score.top1 >= 0.99, key


def test_predictions_match_a_hand_built_sklearn_model(separable_grid):
    g = separable_grid
    key = g.noise_cell  # the cell where predictions are least trivial
    scaler = StandardScaler().fit(g.train[key])
    model = LogisticRegression(C=0.5, max_iter=500).fit(scaler.transform(g.train[key]), g.y_train)
    expected = model.predict(scaler.transform(g.test[key]))
    score = logreg_probe(
        {key: g.train[key]}, g.y_train, {key: g.test[key]}, g.y_test, LogRegConfig(C=0.5, max_iter=500)
    )[key]
    np.testing.assert_array_equal(score.predictions, expected)
    assert score.converged


def test_unconverged_cells_are_flagged_and_logged_once(separable_grid, caplog, recwarn):
    g = separable_grid
    with caplog.at_level(logging.WARNING, logger="probekit.probes.logreg"):
        scores = logreg_probe(g.train, g.y_train, g.test, g.y_test, LogRegConfig(max_iter=1))
    assert not any(s.converged for s in scores.values())
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 1 and "max_iter=1" in messages[0]
    assert not [w for w in recwarn if "converge" in str(w.message).lower()]


def test_invalid_config_raises():
    with pytest.raises(ProbekitError):
        LogRegConfig(C=0)
