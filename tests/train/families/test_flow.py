"""Flow matching (SiT): the linear path and velocity target by hand, and probekit's axis for it."""

from dataclasses import replace

import numpy as np
import pytest
import torch
from torch import nn

from probekit.core.schedule import FlowMatchingSchedule
from probekit.train.families import get_family
from probekit.train.loop import step_randomness
from tests.train.families.conftest import Miswired, assert_noise_axis, tiny_config, train_and_load


class _Echo(nn.Module):
    def forward(self, x, t):
        return -0.7 * x + t[:, None, None, None]


def test_velocity_loss_on_the_linear_path_matches_numpy(blobs_npz):
    config = tiny_config("flow", blobs_npz)
    family = get_family("flow")
    x0 = torch.rand(5, 1, 16, 16) * 2 - 1
    draws, _ = step_randomness(family, config, step=11, shape=tuple(x0.shape))
    t = draws["time"].numpy()
    assert np.all((t >= 0) & (t < 1))
    loss = family.loss(_Echo(), x0, draws, config, torch.autocast("cpu", enabled=False))
    x, eps, t4 = x0.numpy(), draws["noise"].numpy(), t[:, None, None, None]
    x_t = t4 * x + (1 - t4) * eps  # SiT: data at t = 1
    prediction = -0.7 * x_t + t4
    assert loss.item() == pytest.approx(float(np.mean((prediction - (x - eps)) ** 2)), rel=1e-5)


def test_probekits_flow_schedule_is_the_trained_path_read_the_other_way():
    """At grid index k (noise fraction s = k / 1000) extraction noises as training did at SiT time 1 - s
    and feeds the network 1 - s.
    """
    schedule = FlowMatchingSchedule(data_at_one=True)
    x0, eps = torch.randn(2, 1, 4, 4), torch.randn(2, 1, 4, 4)
    for k in (10, 300, 900):
        point = schedule.point(k)
        t = 1 - k / 1000
        assert point.model_input == pytest.approx(t)
        torch.testing.assert_close(schedule.add_noise(x0, eps, point), t * x0 + (1 - t) * eps)


def test_noise_axis_of_a_trained_flow_transformer(blobs_npz, tmp_path):
    # SiT feeds t in [0, 1] to an embedding made for 0..1000, so t is learnt slowly: a high learning rate
    # and the latest weights (EMA 0.5) let a 300-step run tell noise levels apart.
    config = tiny_config("flow", blobs_npz, total_steps=300, checkpoint_every=300, lr=1e-2, warmup_steps=10,
                         ema_decay=0.5, log_every=300)  # fmt: skip
    backbone = train_and_load(config, tmp_path / "run")
    assert_noise_axis(backbone, [50, 200, 500, 800], blobs_npz, "linear", "velocity")
    # fed probekit's noise fraction instead of SiT's time (data at 1), the same network fails the guard
    with pytest.raises(AssertionError):
        wrong = Miswired(backbone, lambda p: replace(p, model_input=1 - p.model_input))
        assert_noise_axis(wrong, [50, 200, 500, 800], blobs_npz, "linear", "velocity")
