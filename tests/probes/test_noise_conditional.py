import numpy as np
import pytest

from probekit.core.errors import ProbekitError
from probekit.probes.noise_conditional import NoiseConditionalConfig, fit_noise_conditional, predict_per_level


def _flipped(seed, n=400):
    """Two classes whose sign code flips between the levels: only a level-aware head can get both right."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    sign = np.where(y == 1, 1.0, -1.0)
    feats = np.empty((3, 2, n, 4), dtype=np.float32)
    for level, factor in enumerate((1.0, -1.0, 0.0)):  # level 2 carries no label information
        for draw in range(2):
            feats[level, draw] = factor * sign[:, None] + 0.2 * rng.standard_normal((n, 4))
    return feats, y


def test_head_uses_the_noise_level_at_every_level():
    feats, y = _flipped(0)
    test, y_test = _flipped(1)
    fitted = fit_noise_conditional(feats, y, [0, 50, 400], 2, NoiseConditionalConfig(epochs=30, lr=1e-2, batch_size=32))
    predictions = predict_per_level(fitted, test)
    assert predictions.shape == (3, len(y_test))
    accuracy = (predictions == y_test[None]).mean(axis=1)
    # A head blind to the level would sit at 50 % on levels 0 and 1 (the code flips between them).
    assert accuracy[0] > 0.95 and accuracy[1] > 0.95, accuracy
    assert abs(accuracy[2] - 0.5) < 0.12, accuracy
    assert fitted.losses[-1] < fitted.losses[0]


def test_same_seed_same_head():
    feats, y = _flipped(0, n=100)
    config = NoiseConditionalConfig(epochs=2)
    a = fit_noise_conditional(feats, y, [0, 1, 2], 2, config)
    b = fit_noise_conditional(feats, y, [0, 1, 2], 2, config)
    assert a.losses == b.losses


def test_shape_mismatch_is_refused():
    feats, y = _flipped(0, n=50)
    with pytest.raises(ProbekitError, match="levels"):
        fit_noise_conditional(feats, y, [0, 1], 2)
    with pytest.raises(ProbekitError, match="labels"):
        fit_noise_conditional(feats, y[:10], [0, 1, 2], 2)
