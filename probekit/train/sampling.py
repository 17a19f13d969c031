"""Samples of a model as a PNG grid, so a person can see what it learned."""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from PIL import Image

from probekit.train.config import TrainConfig

if TYPE_CHECKING:
    from probekit.train.families import TrainFamily


@torch.no_grad()
def sample_grid(
    family: TrainFamily, model: torch.nn.Module, config: TrainConfig, out: Path, *, device: torch.device, seed: int = 0
) -> Path:
    """``config.sample_count`` deterministic samples from the family's sampler (``config.sample_steps``
    steps, from the same seeded noise at every checkpoint), tiled into ``out``.
    """
    size, channels = family.image_shape(config)
    generator = torch.Generator().manual_seed(seed)
    noise = torch.randn((config.sample_count, channels, size, size), generator=generator).to(device)
    was_training = model.training
    model.eval()
    try:
        x = family.sample(model, noise, config)
    finally:
        model.train(was_training)
    return write_grid(x, out)


def write_grid(x: torch.Tensor, out: Path) -> Path:
    """Images (N, C, H, W) in [-1, 1] tiled with a 1-pixel border, written atomically as PNG."""
    images = ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).cpu().numpy()
    n, channels, size = images.shape[0], images.shape[1], images.shape[2]
    columns = math.ceil(math.sqrt(n))
    rows = math.ceil(n / columns)
    grid = np.zeros((rows * (size + 2), columns * (size + 2), channels), dtype=np.uint8)
    for i, image in enumerate(images):
        r, c = divmod(i, columns)
        grid[r * (size + 2) + 1 : r * (size + 2) + 1 + size, c * (size + 2) + 1 : c * (size + 2) + 1 + size] = (
            image.transpose(1, 2, 0)
        )
    picture = Image.fromarray(grid[..., 0] if channels == 1 else grid)
    tmp = out.with_name(out.name + ".tmp.png")
    picture.save(tmp)
    tmp.replace(out)
    return out
