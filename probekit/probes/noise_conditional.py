"""Noise-conditional classifier: one MLP head for every noise level, told which level it sees.

As in DDAE's ``noisy_classifier_DDAE.py``: the head is ``Linear(C, 2C) -> SiLU -> Linear(2C,
classes)`` applied to ``features + embedding(noise level)``, where the embedding is a sinusoidal
code of the level's timestep index ``t`` mapped to width C by a small MLP. It trains with Adam and
a cosine learning rate on samples noised at random levels, and is scored at every level.

Inputs here are features already computed at a grid of levels, shaped ``(T, K, N, C)`` (T levels,
K noise draws, N images), so the network runs once per (image, level, draw) rather than once per
training step. Each training step draws, for every sample of the minibatch, one level uniformly
from the grid and one of the K draws. The features are standardised by one affine map (mean and
std over all levels and draws of train), which keeps the head the same function at every level.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from probekit.core.errors import ProbekitError
from probekit.core.verbosity import progress_enabled


@dataclass(frozen=True)
class NoiseConditionalConfig:
    """Recipe. ``epochs``: passes over the N train images (each sample at one random level per
    pass); ``lr``: peak Adam learning rate, cosine-decayed to 0 over all steps; ``batch_size`` in
    images; ``seed`` fixes the initialisation, order, levels and draws.
    """

    epochs: int = 15
    lr: float = 1e-3
    batch_size: int = 128
    seed: int = 0
    device: str = "cpu"


def timestep_code(t: torch.Tensor, dim: int) -> torch.Tensor:
    """(B, dim) sinusoidal code of timestep indices ``t`` (B,), periods from 1 to 10000 steps."""
    half = max(dim // 2, 1)
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    angles = t.float()[:, None] * freqs[None, :]
    code = torch.cat([torch.sin(angles), torch.cos(angles)], dim=1)
    return F.pad(code, (0, dim - code.shape[1]))


class NoiseConditionalHead(nn.Module):
    """``cls(x + embed(t))``: ``x`` (B, C) standardised features, ``t`` (B,) timestep indices."""

    def __init__(self, dim: int, num_classes: int) -> None:
        super().__init__()
        self.dim = dim
        self.embed = nn.Sequential(nn.Linear(dim, dim), nn.SiLU(), nn.Linear(dim, dim))
        self.cls = nn.Sequential(nn.Linear(dim, 2 * dim), nn.SiLU(), nn.Linear(2 * dim, num_classes))

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.cls(x + self.embed(timestep_code(t, self.dim)))


@dataclass
class FittedHead:
    head: NoiseConditionalHead
    mean: torch.Tensor  # (C,)
    std: torch.Tensor  # (C,)
    timesteps: list[int]
    losses: list[float]  # mean train loss per epoch


def _check(feats: np.ndarray, labels: np.ndarray, timesteps: Sequence[int], what: str) -> None:
    if feats.ndim != 4:
        raise ProbekitError(f"{what} features must be (levels, draws, images, width), got shape {feats.shape}")
    if feats.shape[0] != len(timesteps):
        raise ProbekitError(f"{what} features have {feats.shape[0]} levels but {len(timesteps)} timesteps were given")
    if feats.shape[2] != len(labels):
        raise ProbekitError(f"{what} features hold {feats.shape[2]} images but there are {len(labels)} labels")


def fit_noise_conditional(
    feats: np.ndarray,
    labels: np.ndarray,
    timesteps: Sequence[int],
    num_classes: int,
    config: NoiseConditionalConfig = NoiseConditionalConfig(),
    *,
    progress: bool = False,
) -> FittedHead:
    """Train one head on ``feats`` (T, K, N, C) with ``labels`` (N,); level i has index ``timesteps[i]``."""
    _check(feats, labels, timesteps, "train")
    if config.epochs < 1 or config.batch_size < 1 or config.lr <= 0:
        raise ProbekitError("noise-conditional classifier: epochs and batch size must be >= 1 and lr > 0")
    device = torch.device(config.device)
    levels, draws, n, dim = feats.shape
    data = torch.as_tensor(np.ascontiguousarray(feats), dtype=torch.float32)
    flat = data.reshape(-1, dim)
    mean = flat.mean(0)
    std = flat.std(0).clamp_min(1e-6)
    y = torch.as_tensor(labels, dtype=torch.long)
    t_of_level = torch.as_tensor(list(timesteps), dtype=torch.long)
    generator = torch.Generator().manual_seed(config.seed)
    torch.manual_seed(config.seed)
    head = NoiseConditionalHead(dim, num_classes).to(device)
    optimiser = torch.optim.Adam(head.parameters(), lr=config.lr)
    steps_per_epoch = math.ceil(n / config.batch_size)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, T_max=config.epochs * steps_per_epoch)
    losses = []
    mean_d, std_d = mean.to(device), std.to(device)
    for _ in tqdm(range(config.epochs), desc="noise-conditional", disable=not progress_enabled(progress)):
        order = torch.randperm(n, generator=generator)
        level = torch.randint(levels, (n,), generator=generator)
        draw = torch.randint(draws, (n,), generator=generator)
        total = 0.0
        for start in range(0, n, config.batch_size):
            rows = order[start : start + config.batch_size]
            x = data[level[rows], draw[rows], rows].to(device)
            logits = head((x - mean_d) / std_d, t_of_level[level[rows]].to(device))
            loss = F.cross_entropy(logits, y[rows].to(device))
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            schedule.step()
            total += float(loss.detach()) * len(rows)
        losses.append(total / n)
    return FittedHead(head.eval(), mean, std, list(timesteps), losses)


@torch.no_grad()
def predict_per_level(fitted: FittedHead, feats: np.ndarray, draw: int = 0, batch_size: int = 1024) -> np.ndarray:
    """(T, N) predicted classes at every level of ``feats`` (T, K, N, C), from one noise ``draw``."""
    if feats.ndim != 4 or feats.shape[0] != len(fitted.timesteps):
        raise ProbekitError(f"features must be ({len(fitted.timesteps)}, draws, images, width), got {feats.shape}")
    device = next(fitted.head.parameters()).device
    out = np.empty((feats.shape[0], feats.shape[2]), dtype=np.int64)
    for i, t in enumerate(fitted.timesteps):
        for start in range(0, feats.shape[2], batch_size):
            x = torch.as_tensor(feats[i, draw, start : start + batch_size], dtype=torch.float32)
            x = ((x - fitted.mean) / fitted.std).to(device)
            logits = fitted.head(x, torch.full((len(x),), t, dtype=torch.long, device=device))
            out[i, start : start + len(x)] = logits.argmax(1).cpu().numpy()
    return out
