import numpy as np
import pytest
import torch

from probekit.core.errors import ProbekitError
from probekit.core.pooling import Pooling


def test_gap_is_spatial_mean():
    x = torch.randn(2, 3, 4, 4)
    # atol: float32 sums in another order differ by ~1e-8 absolute, which rtol alone fails near zero
    np.testing.assert_allclose(Pooling.parse("gap")(x).numpy(), x.numpy().mean(axis=(2, 3)), rtol=1e-6, atol=1e-7)


def test_avg2_is_quadrant_means_flattened_channel_major():
    x = torch.randn(2, 3, 4, 4)
    a = x.numpy()
    expected = a.reshape(2, 3, 2, 2, 2, 2).mean(axis=(3, 5)).reshape(2, 12)
    np.testing.assert_allclose(Pooling.parse("avg2")(x).numpy(), expected, rtol=1e-6, atol=1e-7)
    assert Pooling.parse("avg2").width(3, spatial=True) == 12


def test_tokens_pool_over_tokens_or_their_grid():
    tokens = torch.randn(2, 16, 5)
    np.testing.assert_allclose(Pooling.parse("gap")(tokens).numpy(), tokens.numpy().mean(axis=1), rtol=1e-6, atol=1e-7)
    grid = tokens.numpy().transpose(0, 2, 1).reshape(2, 5, 4, 4)
    expected = grid.reshape(2, 5, 2, 2, 2, 2).mean(axis=(3, 5)).reshape(2, 20)
    np.testing.assert_allclose(Pooling.parse("avg2")(tokens).numpy(), expected, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("bad", ["max", "avg0", "avg", "gap2"])
def test_unknown_pooling_is_refused(bad):
    with pytest.raises(ProbekitError, match="pooling"):
        Pooling.parse(bad)


@pytest.mark.parametrize("name", ["gap", "avg2"])
@pytest.mark.parametrize("shape", [(2, 3, 4, 4), (2, 16, 5), (2, 7)])
def test_pooling_under_autocast_is_float32_not_rounded_to_bf16(name, shape):
    # Values whose means need more than bf16's 8 significant bits.
    x = (1.0 + torch.arange(int(np.prod(shape)), dtype=torch.float32).reshape(shape) * 2.0**-7).to(torch.bfloat16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        pooled = Pooling.parse(name)(x)
    assert pooled.dtype == torch.float32
    a = x.float().numpy().astype(np.float64)
    if len(shape) == 2:
        expected = a
    else:
        if len(shape) == 3:
            a = a.transpose(0, 2, 1).reshape(2, 5, 4, 4)
        expected = (
            a.mean(axis=(2, 3))
            if name == "gap"
            else a.reshape(*a.shape[:2], 2, 2, 2, 2).mean(axis=(3, 5)).reshape(2, -1)
        )
    np.testing.assert_allclose(pooled.numpy(), expected, rtol=1e-6)
    # The same means rounded to bf16 would be off by far more than the tolerance above.
    rounded = torch.from_numpy(expected).to(torch.bfloat16).double().numpy()
    if len(shape) > 2:
        assert np.abs(rounded - expected).max() > 1e-4


def test_spatial_pooling_keeps_the_grid_and_refuses_vectors():
    x = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    pooling = Pooling.parse("spatial4")
    assert pooling.spatial and pooling.name == "spatial4" and pooling.k == 4
    expected = x.numpy().reshape(2, 3, 4, 2, 4, 2).mean(axis=(3, 5)).reshape(2, 48)
    np.testing.assert_allclose(pooling(x).numpy(), expected, rtol=1e-6, atol=1e-7)
    one = Pooling.parse("spatial1")(x).numpy()  # a 1 x 1 map is the global mean, flagged spatial
    np.testing.assert_allclose(one, x.numpy().mean(axis=(2, 3)), rtol=1e-6, atol=1e-7)
    with pytest.raises(ProbekitError, match="spatial4 pooling needs spatial layers"):
        pooling(torch.randn(2, 5))
    with pytest.raises(ProbekitError, match="spatialS"):
        Pooling.parse("spatial")
