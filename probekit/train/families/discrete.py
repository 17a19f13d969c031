"""Epsilon prediction on the discrete DDPM schedule, shared by the DDPM UNet and the DiT."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from probekit.core.schedule import betas_for

if TYPE_CHECKING:
    from probekit.train.config import TrainConfig


def alphas_cumprod(config: TrainConfig) -> torch.Tensor:
    """``alpha_bar`` of steps 0..T-1 (index t = DDPM step t + 1, as diffusers counts), float32."""
    betas = betas_for(config.beta_schedule, config.beta_start, config.beta_end, config.num_train_timesteps)
    return torch.tensor(np.cumprod(1.0 - betas), dtype=torch.float32)


class DiscreteEpsilon:
    """Noise ``x_t = sqrt(ab_t) x0 + sqrt(1 - ab_t) eps`` at a uniform step t in 0..T-1; the target is eps."""

    objective = "epsilon prediction, t uniform over the T discrete DDPM steps"

    def predict(self, model: nn.Module, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """The network's epsilon at step ``t``: each family using this mixin says how its network is
        called (DDPM: ``UNet2DModel(x, t)``; DiT: the transformer with the null class), :meth:`sample` uses it.
        """
        raise NotImplementedError(f"{type(self).__name__} must define predict(model, x, t)")

    def draw(self, config: TrainConfig, generator: torch.Generator, shape: tuple[int, ...]) -> dict[str, torch.Tensor]:
        # Order matters: the shipped DDPM run drew its timesteps, then its noise, from this generator.
        timesteps = torch.randint(0, config.num_train_timesteps, (shape[0],), generator=generator)
        return {"timesteps": timesteps, "noise": torch.randn(shape, generator=generator)}

    def noised(
        self, x0: torch.Tensor, draws: dict[str, torch.Tensor], config: TrainConfig
    ) -> tuple[torch.Tensor, torch.Tensor]:
        ab = alphas_cumprod(config).to(x0.device)[draws["timesteps"]][:, None, None, None]
        noise = draws["noise"]
        return ab.sqrt() * x0 + (1 - ab).sqrt() * noise, noise

    @torch.no_grad()
    def sample(self, model: nn.Module, noise: torch.Tensor, config: TrainConfig) -> torch.Tensor:
        """DDIM (eta 0) over ``config.sample_steps`` evenly spaced steps, as diffusers' DDIMScheduler."""
        from diffusers import DDIMScheduler

        scheduler = DDIMScheduler.from_config(config.scheduler_config())
        scheduler.set_timesteps(config.sample_steps)
        x = noise
        for t in scheduler.timesteps:
            eps = self.predict(model, x, t.expand(x.shape[0]).to(x.device))
            x = scheduler.step(eps, t, x).prev_sample
        return x
