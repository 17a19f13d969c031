"""DDIM samples of a model as a PNG grid, so a person can see what it learned."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from probekit.train.config import TrainConfig


@torch.no_grad()
def ddim_sample_grid(
    model: torch.nn.Module, config: TrainConfig, out: Path, *, device: torch.device, seed: int = 0
) -> Path:
    """``config.sample_count`` deterministic DDIM samples (eta 0, ``config.sample_steps`` steps), tiled."""
    from diffusers import DDIMScheduler

    scheduler = DDIMScheduler.from_config(config.scheduler_config())
    scheduler.set_timesteps(config.sample_steps)
    size, channels = model.config.sample_size, model.config.in_channels
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn((config.sample_count, channels, size, size), generator=generator).to(device)
    was_training = model.training
    model.eval()
    for t in scheduler.timesteps:
        eps = model(x, t.to(device)).sample
        x = scheduler.step(eps, t, x).prev_sample
    model.train(was_training)
    images = ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).cpu().numpy()  # (N, C, H, W)
    columns = math.ceil(math.sqrt(len(images)))
    rows = math.ceil(len(images) / columns)
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
