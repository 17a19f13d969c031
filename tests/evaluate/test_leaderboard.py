"""The leaderboard's statistics: Holm's adjustment and the layer chosen per noise level, against hand values."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from probekit.core.errors import ProbekitError
from probekit.evaluate.leaderboard import best_per_level, holm_adjust, parse_runs


def test_holm_adjustment_matches_the_step_down_by_hand():
    # sorted: 0.005 x 4 = 0.02, 0.01 x 3 = 0.03, 0.03 x 2 = 0.06, 0.04 x 1 = 0.04 -> running max 0.06
    adjusted = holm_adjust([0.01, 0.04, 0.03, 0.005])
    np.testing.assert_allclose(adjusted, [0.03, 0.06, 0.06, 0.02])
    np.testing.assert_allclose(holm_adjust([0.5, 0.9]), [1.0, 1.0])  # capped at 1
    assert holm_adjust([]).shape == (0,)


def test_holm_rejects_what_bonferroni_rejects_and_never_less():
    rng = np.random.default_rng(3)
    p = rng.uniform(0, 0.2, size=12)
    holm = holm_adjust(p)
    assert np.all(holm <= np.minimum(1, 12 * p) + 1e-15) and np.all(holm >= p)


def test_holm_refuses_values_that_are_not_p_values():
    with pytest.raises(ProbekitError, match="p-values in"):
        holm_adjust([0.1, 1.5])


def _rows(layer: str, depth: int, t: int, logsnr: float, val: float, test: float) -> list[dict]:
    base = {"model": "m", "probe": "linear", "metric": "top1", "layer": layer, "depth": depth, "t": t}
    return [{**base, "logsnr": logsnr, "split": s, "value": v} for s, v in (("val", val), ("test", test))]


def test_best_per_level_picks_each_levels_layer_on_val_and_orders_by_log_snr():
    rows = (
        _rows("a", 0, 0, 9.0, 0.70, 0.60)
        + _rows("b", 1, 0, 9.0, 0.80, 0.50)  # b wins on val at t=0 though a is better on test
        + _rows("a", 0, 50, 2.0, 0.65, 0.66)
        + _rows("b", 1, 50, 2.0, 0.65, 0.90)  # a tie on val: the shallower layer
        + _rows("a", 0, 400, -3.0, 0.20, 0.25)
        + _rows("b", 1, 400, -3.0, 0.30, 0.35)
    )
    best = best_per_level(pd.DataFrame(rows), "linear")
    assert list(best["t"]) == [0, 50, 400]
    assert list(best["layer"]) == ["b", "a", "b"]
    np.testing.assert_allclose(best["value"], [0.50, 0.66, 0.35])
    np.testing.assert_allclose(best["val_value"], [0.80, 0.65, 0.30])
    assert math.isclose(best["logsnr"].iloc[0], 9.0)


def test_runs_need_two_results_and_unique_names(tmp_path):
    with pytest.raises(ProbekitError, match="at least two"):
        parse_runs([tmp_path / "a.csv"])
    with pytest.raises(ProbekitError, match="given twice"):
        parse_runs([tmp_path / "a.csv", tmp_path / "b.csv"], ["x", "x"])
    with pytest.raises(ProbekitError, match="one per file"):
        parse_runs([tmp_path / "a.csv", tmp_path / "b.csv"], ["x"])


def test_a_missing_or_foreign_leaderboard_is_a_one_line_error(tmp_path):
    from probekit.evaluate.leaderboard import read_leaderboard

    with pytest.raises(ProbekitError, match="does not exist"):
        read_leaderboard(tmp_path / "none.csv")
    other = tmp_path / "other.csv"
    pd.DataFrame({"model": ["m"], "value": [0.5]}).to_csv(other, index=False)
    with pytest.raises(ProbekitError, match="not a probekit leaderboard"):
        read_leaderboard(other)
