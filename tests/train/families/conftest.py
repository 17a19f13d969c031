"""Tiny training runs of each family on structured images, and the noise-axis measurements on them."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from probekit.core.types import GridPoint
from probekit.models import load_backbone
from probekit.train import TrainConfig, train

TINY_TRANSFORMER = {"input_size": 16, "in_channels": 1, "patch_size": 4, "hidden_size": 32, "depth": 2, "num_heads": 2}
TINY_EDM = {
    "image_shape": [1, 16, 16],
    "n_channels": 32,
    "ch_mults": [1, 1],
    "is_attn": [False, True],
    "n_blocks": 1,
    "dropout": 0.0,
    "use_res_for_updown": True,
}
TINY_UNET = {
    "sample_size": 16,
    "in_channels": 1,
    "out_channels": 1,
    "block_out_channels": [8, 16],
    "down_block_types": ["DownBlock2D", "AttnDownBlock2D"],
    "up_block_types": ["AttnUpBlock2D", "UpBlock2D"],
    "layers_per_block": 1,
    "norm_num_groups": 4,
    "attention_head_dim": 8,
}
NETWORKS = {"ddpm": {"unet": TINY_UNET}, "dit": {"network": TINY_TRANSFORMER}, "flow": {"network": TINY_TRANSFORMER},
            "edm": {"network": TINY_EDM}}  # fmt: skip


@pytest.fixture(scope="session")
def blobs_npz(tmp_path_factory: pytest.TempPathFactory) -> str:
    """256 + 32 16x16 images of one bright Gaussian blob each (random centre and width): data with
    structure to denoise, in the npz layout ``probekit.data`` reads.
    """
    rng = np.random.default_rng(0)
    grid = np.arange(16)[None, :, None], np.arange(16)[None, None, :]

    def blobs(n: int) -> np.ndarray:
        cy, cx = rng.uniform(3, 12, (2, n, 1, 1))
        width = rng.uniform(1.5, 4.0, (n, 1, 1))
        return (255 * np.exp(-((grid[0] - cy) ** 2 + (grid[1] - cx) ** 2) / (2 * width**2))).astype(np.uint8)

    path = tmp_path_factory.mktemp("blobs") / "blobs.npz"
    np.savez(path, x=blobs(256), y=np.zeros(256, dtype=int), x_test=blobs(32), y_test=np.zeros(32, dtype=int))
    return str(path)


def tiny_config(family: str, data: str, **overrides) -> TrainConfig:
    settings = dict(
        family=family,
        data=data,
        batch_size=32,
        total_steps=6,
        checkpoint_every=3,
        warmup_steps=2,
        ema_decay=0.9,
        log_every=1,
        sample_count=4,
        sample_steps=3,
        precision="fp32",
        hflip=True,
        **NETWORKS[family],
    )
    settings.update(overrides)
    return TrainConfig.from_dict(settings)


def train_and_load(config: TrainConfig, out: Path):
    """Train into ``out`` and load the result through ``--model`` as a downloaded checkpoint would be."""
    train(config, out, progress=False)
    spec = json.loads((out / "record.json").read_text())["model_spec"]
    return load_backbone(spec)


def clean_batch(data: str, n: int = 64) -> torch.Tensor:
    """The first ``n`` test images of an npz (``x_test``, uint8 (N, H, W)) in [-1, 1], (n, 1, H, W)."""
    x = np.load(data)["x_test"][:n].astype(np.float32) / 127.5 - 1.0
    return torch.from_numpy(x)[:, None]


def noised(x0: torch.Tensor, eps: torch.Tensor, point: GridPoint, kind: str) -> torch.Tensor:
    """Noise ``x0`` at the level the point *records*, computed here from its sigma / alpha_bar alone:
    variance preserving (``vp``), exploding (``ve``) or the linear path (``linear``).
    """
    if kind == "vp":
        return math.sqrt(point.alpha_bar) * x0 + math.sqrt(1 - point.alpha_bar) * eps
    if kind == "ve":
        return x0 + point.sigma * eps
    s = point.sigma / (1 + point.sigma)  # sigma = s / (1 - s) on the linear path
    return (1 - s) * x0 + s * eps


def target(x0: torch.Tensor, eps: torch.Tensor, kind: str) -> torch.Tensor:
    """What a perfect model outputs: the noise, the clean image, or SiT's velocity ``x0 - eps``."""
    return {"eps": eps, "denoised": x0, "velocity": x0 - eps}[kind]


def clean_estimate(output: torch.Tensor, x: torch.Tensor, point: GridPoint, kind: str) -> torch.Tensor:
    """The clean image implied by the model's output at ``point`` (eps, denoised image or SiT velocity)."""
    if kind == "eps":
        return (x - math.sqrt(1 - point.alpha_bar) * output) / math.sqrt(point.alpha_bar)
    if kind == "denoised":
        return output
    s = point.sigma / (1 + point.sigma)
    return x + s * output  # x_s = (1 - s) x0 + s eps and v = x0 - eps


def error_matrices(
    backbone, points: list[GridPoint], x0: torch.Tensor, noise_kind: str, output_kind: str
) -> tuple[np.ndarray, np.ndarray]:
    """(clean, output) errors: ``[i, j]`` is the mean squared error of the clean-image estimate (of
    the raw output against its exact target) when the images carry the noise of ``points[i]`` and
    the backbone is run at ``points[j]``.
    """
    eps = torch.randn(x0.shape, generator=torch.Generator().manual_seed(1))
    clean, output = np.zeros((len(points), len(points))), np.zeros((len(points), len(points)))
    for i, actual in enumerate(points):
        x = noised(x0, eps, actual, noise_kind)
        for j, told in enumerate(points):
            raw = backbone.forward(x, told)
            clean[i, j] = float(((clean_estimate(raw, x, told, output_kind) - x0) ** 2).mean())
            output[i, j] = float(((raw - target(x0, eps, output_kind)) ** 2).mean())
    return clean, output


def assert_noise_axis(
    backbone, timesteps: list[int], data: str, noise_kind: str, output_kind: str, *, uses_t: bool = True
) -> None:
    """The guard: along probekit's recorded axis (the points of ``timesteps``, in increasing recorded
    sigma) the trained model's denoising error rises, and each noise level is denoised better when
    the network is run at its own point than at the mirrored point of the grid (what a reversed t
    would feed it). A reversed or rescaled t, or recorded numbers that do not match the noise the
    network learned, fail one of the two.

    ``uses_t=False`` states that the network ignores its noise input (it reads the noise level off
    the image instead), so no t, right or wrong, changes its output by 1 %: that is asserted in
    place of the mirror condition, and fails as soon as the network starts to use t.
    """
    points = [backbone.schedule.point(t) for t in timesteps]
    sigmas = [p.sigma for p in points]
    assert sigmas == sorted(sigmas) and len(set(sigmas)) == len(sigmas), f"recorded sigma does not rise: {sigmas}"
    clean, output = error_matrices(backbone, points, clean_batch(data), noise_kind, output_kind)
    diagonal = np.diag(clean)
    assert np.all(np.diff(diagonal) > 0), f"denoising error does not rise with recorded sigma {sigmas}: {diagonal}"
    if not uses_t:
        spread = (output.max(axis=1) - output.min(axis=1)) / output.min(axis=1)
        assert np.all(spread < 0.01), f"the network uses its noise input (spread {spread}): guard it with uses_t=True"
        return
    n = len(points)
    for i in range(n):
        mirror = n - 1 - i
        if mirror != i:
            assert output[i, i] < output[i, mirror], f"noise of {points[i]} fits its mirror's point better: {output}"


class Miswired:
    """A backbone run at a wrong grid point (a reversed or rescaled t): the bug the guard is for."""

    def __init__(self, backbone, wrong: Callable[[GridPoint], GridPoint]) -> None:
        self.backbone, self.wrong, self.schedule = backbone, wrong, backbone.schedule

    def forward(self, x: torch.Tensor, point: GridPoint) -> torch.Tensor:
        return self.backbone.forward(x, self.wrong(point))
