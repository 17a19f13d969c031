"""The epsilon families (DDPM UNet, DiT): one step's noising and loss, computed independently."""

from dataclasses import replace

import numpy as np
import pytest
import torch
from torch import nn

from probekit.train.families import get_family
from probekit.train.loop import step_randomness
from tests.train.families.conftest import Miswired, assert_noise_axis, tiny_config, train_and_load


class _Echo(nn.Module):
    """A stand-in network whose output is a known function of its inputs: 0.5 x + t / 1000."""

    def forward(self, x, t):
        return 0.5 * x + t.float()[:, None, None, None] / 1000


@pytest.mark.parametrize("name", ["dit"])
def test_epsilon_step_loss_matches_a_numpy_computation(name, blobs_npz):
    config = tiny_config(name, blobs_npz, num_train_timesteps=1000, beta_start=1e-4, beta_end=0.02)
    family = get_family(name)
    x0 = torch.rand(4, 1, 16, 16) * 2 - 1
    draws, flips = step_randomness(family, config, step=7, shape=tuple(x0.shape))
    # the same draws again from a generator seeded the same way (pure function of seed and step)
    again, flips_again = step_randomness(family, config, step=7, shape=tuple(x0.shape))
    assert torch.equal(draws["timesteps"], again["timesteps"]) and torch.equal(flips, flips_again)
    loss = family.loss(_Echo(), x0, draws, config, torch.autocast("cpu", enabled=False))
    alpha_bar = np.cumprod(1 - np.linspace(1e-4, 0.02, 1000))[draws["timesteps"].numpy()][:, None, None, None]
    eps, x = draws["noise"].numpy(), x0.numpy()
    x_t = np.sqrt(alpha_bar) * x + np.sqrt(1 - alpha_bar) * eps
    prediction = 0.5 * x_t + draws["timesteps"].numpy()[:, None, None, None] / 1000
    assert loss.item() == pytest.approx(float(np.mean((prediction - eps) ** 2)), rel=1e-5)


def test_ddpm_draws_keep_the_shipped_runs_order(blobs_npz):
    """Timesteps, then noise, then flips from one generator: the shipped DDPM run resumes exactly."""
    from probekit.core.noise import noise_seed

    config = tiny_config("ddpm", blobs_npz)
    draws, flips = step_randomness(get_family("ddpm"), config, 5, (4, 1, 16, 16))
    generator = torch.Generator().manual_seed(noise_seed(config.seed, 5, -2, 0))
    assert torch.equal(draws["timesteps"], torch.randint(0, config.num_train_timesteps, (4,), generator=generator))
    assert torch.equal(draws["noise"], torch.randn((4, 1, 16, 16), generator=generator))
    assert torch.equal(flips, torch.rand(4, generator=generator) < 0.5)


@pytest.mark.parametrize(("name", "steps"), [("ddpm", 60), ("dit", 60)])
def test_noise_axis_of_a_trained_epsilon_model(name, steps, blobs_npz, tmp_path):
    config = tiny_config(name, blobs_npz, total_steps=steps, checkpoint_every=steps, lr=3e-3, warmup_steps=10,
                         ema_decay=0.99, log_every=steps)  # fmt: skip
    backbone = train_and_load(config, tmp_path / "run")
    # diffusers index 0..999: 30 .. 800 spans sigma 0.11 .. 26
    assert_noise_axis(backbone, [30, 150, 400, 800], blobs_npz, "vp", "eps")
    # the guard catches what it is for: the same network fed a reversed t, or t rescaled to [0, 1]
    for wrong in (lambda p: replace(p, model_input=999 - p.model_input), lambda p: replace(p, model_input=p.t / 1000)):
        with pytest.raises(AssertionError):
            assert_noise_axis(Miswired(backbone, wrong), [30, 150, 400, 800], blobs_npz, "vp", "eps")


def test_a_resumed_dit_run_ends_with_the_same_weights(blobs_npz, tmp_path):
    from probekit.train import train

    config = tiny_config("dit", blobs_npz, total_steps=4, checkpoint_every=2)
    train(config, tmp_path / "straight", progress=False)
    train(config, tmp_path / "resumed", progress=False, stop_at=2)
    train(config, tmp_path / "resumed", progress=False)
    straight = torch.load(tmp_path / "straight" / "model" / "dit.pt", weights_only=True)
    resumed = torch.load(tmp_path / "resumed" / "model" / "dit.pt", weights_only=True)
    assert straight.keys() == resumed.keys()
    assert all(torch.equal(resumed[k], v) for k, v in straight.items())
