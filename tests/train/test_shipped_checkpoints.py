"""The noise-axis guard on the shipped checkpoints: real weights, read through ``--model`` as users read them.

Each shipped model denoises 64 Fashion-MNIST test images (``tests/fixtures/fashion-mnist-test-64.npz``)
noised by this test from the sigma / alpha_bar probekit records for four grid points; the error must
rise along that axis and each noise level must be denoised better at its own point than at the
mirrored one (see ``tests/train/families/conftest.py``).
"""

from pathlib import Path

import numpy as np
import pytest
import torch

from probekit.data import fit_images
from probekit.models import load_backbone
from tests.train.families.conftest import assert_noise_axis

ROOT = Path(__file__).resolve().parents[2]
FIXTURE = ROOT / "tests" / "fixtures" / "fashion-mnist-test-64.npz"
C = ROOT / "checkpoints"

SHIPPED = {
    # folder: (--model, grid points in increasing sigma, how the test noises, what the network outputs,
    # whether the network uses its noise input)
    "fashion-mnist-ddpm": ("{f}", [30, 150, 400, 800], "vp", "eps", True),
    "fashion-mnist-dit": ("dit:{f}/dit.pt?heads=3&vae=none", [30, 150, 400, 800], "vp", "eps", True),
    "fashion-mnist-edm": ("ddae:{f}/config.yaml:{f}/model.pth", [4, 8, 11, 14], "ve", "denoised", True),
    # SiT feeds its time in [0, 1] to DiT's embedding made for 0..1000, whose features barely move
    # over that range: after 1000 steps the network ignored t (its output moved by < 1 %); by 3000
    # it has learned to read it, so the mirror condition applies.
    "fashion-mnist-flow": ("sit:{f}/sit.pt?heads=3&vae=none", [50, 200, 500, 800], "linear", "velocity", True),
}


@pytest.fixture(scope="module")
def fashion_npz(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The 64 images padded to 32 x 32 as training fitted them, in the layout the guard reads (x_test)."""
    raw = np.load(FIXTURE)["x"]
    x, _ = fit_images(raw[..., None], size=32, channels=1, value_range=(0.0, 255.0))
    path = tmp_path_factory.mktemp("fmnist") / "fmnist.npz"
    np.savez(path, x_test=x[:, 0].round().clamp(0, 255).to(torch.uint8).numpy())
    return str(path)


@pytest.mark.parametrize("name", SHIPPED)
def test_the_shipped_model_denoises_along_probekits_axis(name, fashion_npz):
    spec, timesteps, noise, output, uses_t = SHIPPED[name]
    backbone = load_backbone(spec.format(f=C / name))
    assert_noise_axis(backbone, timesteps, fashion_npz, noise, output, uses_t=uses_t)
