import numpy as np
import pytest
import torch

from probekit.errors import ProbekitError
from probekit.pooling import Pooling


def test_gap_is_spatial_mean():
    x = torch.randn(2, 3, 4, 4)
    np.testing.assert_allclose(Pooling.parse("gap")(x).numpy(), x.numpy().mean(axis=(2, 3)), rtol=1e-6)


def test_avg2_is_quadrant_means_flattened_channel_major():
    x = torch.randn(2, 3, 4, 4)
    a = x.numpy()
    expected = a.reshape(2, 3, 2, 2, 2, 2).mean(axis=(3, 5)).reshape(2, 12)
    np.testing.assert_allclose(Pooling.parse("avg2")(x).numpy(), expected, rtol=1e-6, atol=1e-7)
    assert Pooling.parse("avg2").width(3, spatial=True) == 12


def test_tokens_pool_over_tokens_or_their_grid():
    tokens = torch.randn(2, 16, 5)
    np.testing.assert_allclose(Pooling.parse("gap")(tokens).numpy(), tokens.numpy().mean(axis=1), rtol=1e-6)
    grid = tokens.numpy().transpose(0, 2, 1).reshape(2, 5, 4, 4)
    expected = grid.reshape(2, 5, 2, 2, 2, 2).mean(axis=(3, 5)).reshape(2, 20)
    np.testing.assert_allclose(Pooling.parse("avg2")(tokens).numpy(), expected, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("bad", ["max", "avg0", "avg", "gap2"])
def test_unknown_pooling_is_refused(bad):
    with pytest.raises(ProbekitError, match="pooling"):
        Pooling.parse(bad)
