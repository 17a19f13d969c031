"""Flow matching as SiT trains it: the linear path between noise and data, velocity prediction.

SiT's time ``t`` runs from noise (0) to data (1): ``x_t = t x0 + (1 - t) eps`` with ``t`` uniform
in [0, 1], and the network, fed ``t`` as is, predicts the velocity ``d x_t / dt = x0 - eps``.
In probekit's noise fraction ``s = 1 - t`` this is ``x_s = (1 - s) x0 + s eps``
(:class:`probekit.core.schedule.FlowMatchingSchedule` with ``data_at_one``). The checkpoint is an
original SiT state dict (``sit:...pt``), which has DiT's parameter names.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from probekit.train.families.base import TrainFamily
from probekit.train.families.transformer import TransformerFiles


class FlowFamily(TransformerFiles, TrainFamily):
    name = "flow"
    objective = "velocity x0 - eps on the linear path x_t = t x0 + (1 - t) eps, SiT time t uniform in [0, 1]"
    checkpoint = "sit.pt"
    prefix = "sit:"

    def draw(self, config, generator: torch.Generator, shape: tuple[int, ...]) -> dict[str, torch.Tensor]:
        time = torch.rand(shape[0], generator=generator)
        return {"time": time, "noise": torch.randn(shape, generator=generator)}

    def loss(self, model, x0, draws, config, autocast) -> torch.Tensor:
        t, noise = draws["time"].to(x0.device), draws["noise"]
        x_t = t[:, None, None, None] * x0 + (1 - t[:, None, None, None]) * noise
        with autocast:
            velocity = model(x_t, t)
        return F.mse_loss(velocity.float(), x0 - noise)

    @torch.no_grad()
    def sample(self, model: nn.Module, noise: torch.Tensor, config) -> torch.Tensor:
        """Euler steps of ``dx/dt = v(x, t)`` from t = 0 (noise) to t = 1 (data)."""
        x, steps = noise, config.sample_steps
        for i in range(steps):
            t = torch.full((x.shape[0],), i / steps, device=x.device)
            x = x + model(x, t) / steps
        return x
