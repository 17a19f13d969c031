import numpy as np
import pytest

from probekit.core.errors import ProbekitError
from probekit.evaluate.predictions import PredictionSet, predictions_path, read_predictions, write_predictions


def test_round_trip_and_lookup(tmp_path):
    preds = np.array([[0, 1, 2, 1], [1, 1, 2, 0]], dtype=np.int32)
    p = PredictionSet(
        "m", "d", np.array([5, 6, 7, 8]), np.array([0, 1, 2, 0]), ["linear", "knn"], [10, 0], ["mid", "up.0"], preds
    )
    path = write_predictions(predictions_path(tmp_path / "r.csv"), p)
    assert path.name == "r.predictions.npz"
    back = read_predictions(path)
    assert np.array_equal(back.row("knn", 0, "up.0"), preds[1])
    assert back.correct("linear", 10, "mid").tolist() == [True, True, True, False]
    with pytest.raises(ProbekitError, match="holds no cell"):
        back.row("linear", 5, "mid")


def test_refuses_other_files(tmp_path):
    np.savez(tmp_path / "x.npz", a=np.zeros(3))
    with pytest.raises(ProbekitError, match="not a probekit predictions sidecar"):
        read_predictions(tmp_path / "x.npz")
    with pytest.raises(ProbekitError, match="no predictions sidecar"):
        read_predictions(tmp_path / "missing.npz")
