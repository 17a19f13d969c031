"""EDM: preconditioning, noise-level sampling and loss by hand; DDAE's layout read back by its loader."""

import math

import numpy as np
import pytest
import torch
import yaml
from torch import nn

from probekit.core.noise import noise_seed
from probekit.models import load_backbone
from probekit.models.ddae import read_config
from probekit.train.families import get_family
from probekit.train.families.edm import network_config, preconditioning
from probekit.train.loop import build_network, step_randomness
from tests.train.families.conftest import Miswired, assert_noise_axis, tiny_config, train_and_load


class _Echo(nn.Module):
    """Stand-in network: F(x, c_noise) = 0.3 x + c_noise."""

    def forward(self, x, c_noise):
        return 0.3 * x + c_noise[:, None, None, None]


def test_preconditioning_is_karras_table_1_with_ddaes_c_noise():
    sigma = torch.tensor([0.002, 0.5, 3.0, 80.0], dtype=torch.float64)
    c_skip, c_out, c_in, c_noise = preconditioning(sigma, 0.5)
    for k, s in enumerate(sigma.tolist()):
        assert c_skip[k].item() == pytest.approx(0.25 / (s * s + 0.25))
        assert c_out[k].item() == pytest.approx(s * 0.5 / math.sqrt(s * s + 0.25))
        assert c_in[k].item() == pytest.approx(1 / math.sqrt(s * s + 0.25))
        assert c_noise[k].item() == pytest.approx(math.log(s) / 4)


def test_sigma_is_log_normal_and_the_loss_is_edms_weighted_denoising_error(blobs_npz):
    config = tiny_config("edm", blobs_npz)
    family = get_family("edm")
    x0 = torch.rand(6, 1, 16, 16) * 2 - 1
    draws, _ = step_randomness(family, config, step=3, shape=tuple(x0.shape))
    generator = torch.Generator().manual_seed(noise_seed(config.seed, 3, -2, 0))
    normal = torch.randn(6, generator=generator).double().numpy()
    np.testing.assert_allclose(draws["sigma"].numpy(), np.exp(normal * 1.2 - 1.2), rtol=1e-6)
    loss = family.loss(_Echo(), x0, draws, config, torch.autocast("cpu", enabled=False))
    sigma = draws["sigma"].double().numpy()[:, None, None, None]
    x, eps = x0.double().numpy(), draws["noise"].double().numpy()
    y = x + sigma * eps
    total = sigma**2 + 0.25
    raw = 0.3 * (y / np.sqrt(total)) + np.log(sigma) / 4
    denoised = 0.25 / total * y + sigma * 0.5 / np.sqrt(total) * raw
    weight = total / (sigma * 0.5) ** 2
    assert loss.item() == pytest.approx(float(np.mean(weight * (denoised - x) ** 2)), rel=1e-5)


def test_saved_in_ddaes_layout_and_loaded_by_its_loader(blobs_npz, tmp_path):
    config = tiny_config("edm", blobs_npz, total_steps=2, checkpoint_every=2)
    backbone = train_and_load(config, tmp_path / "run")
    folder = tmp_path / "run" / "model"
    raw = yaml.safe_load((folder / "config.yaml").read_text())
    assert raw["model_type"] == "EDM" and raw["diffusion"]["sigma_data"] == 0.5
    assert read_config(folder / "config.yaml").network == network_config(config)
    checkpoint = torch.load(folder / "model.pth", weights_only=True)
    assert any(k.startswith("ema_model.nn_model.") for k in checkpoint["EMA"])
    assert all(k.startswith("nn_model.") for k in checkpoint["MODEL"])
    # the loader's denoiser at a grid point is the trained network behind the preconditioning, by hand
    net = build_network(get_family("edm"), config).eval()
    net.load_state_dict({k[len("ema_model.nn_model.") :]: v for k, v in checkpoint["EMA"].items() if "nn_model" in k})
    point = backbone.schedule.point(5)
    s = point.sigma
    x = torch.randn(2, 1, 16, 16)
    with torch.no_grad():
        raw_out = net(x / math.sqrt(s * s + 0.25), torch.full((2,), math.log(s) / 4))
        expected = 0.25 / (s * s + 0.25) * x + s * 0.5 / math.sqrt(s * s + 0.25) * raw_out
    torch.testing.assert_close(backbone.forward(x, point), expected, rtol=1e-5, atol=1e-5)
    assert load_backbone(f"ddae:{folder / 'config.yaml'}:{folder / 'model.pth'}#MODEL").layers()


def test_a_resumed_edm_run_ends_with_the_same_weights(blobs_npz, tmp_path):
    config = tiny_config("edm", blobs_npz, total_steps=4, checkpoint_every=2)
    from probekit.train import train

    train(config, tmp_path / "straight", progress=False)
    train(config, tmp_path / "resumed", progress=False, stop_at=2)
    train(config, tmp_path / "resumed", progress=False)
    straight = torch.load(tmp_path / "straight" / "model" / "model.pth", weights_only=True)
    resumed = torch.load(tmp_path / "resumed" / "model" / "model.pth", weights_only=True)
    for entry in ("MODEL", "EMA"):
        for key, tensor in straight[entry].items():
            assert torch.equal(resumed[entry][key], tensor), key


def test_noise_axis_of_a_trained_edm(blobs_npz, tmp_path):
    config = tiny_config("edm", blobs_npz, total_steps=30, checkpoint_every=30, lr=3e-3, warmup_steps=10,
                         ema_decay=0.99, log_every=30)  # fmt: skip
    backbone = train_and_load(config, tmp_path / "run")
    # DDAE's EDM index 1..18, sigma from 0.002 up: 4, 8, 11, 14 span sigma 0.06 .. 19
    assert_noise_axis(backbone, [4, 8, 11, 14], blobs_npz, "ve", "denoised")
    # the Karras list read the wrong way round (index 19 - t), the same network fails the guard
    with pytest.raises(AssertionError):
        wrong = Miswired(backbone, lambda p: backbone.schedule.point(19 - p.t))
        assert_noise_axis(wrong, [4, 8, 11, 14], blobs_npz, "ve", "denoised")
