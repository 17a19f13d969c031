"""DDAE's two noise parameterisations as probekit schedules.

* :class:`DDAEDDPMSchedule` -- ``t`` is DDAE's integer step ``1 .. n_T`` (``t = 1`` is the least
  noise); ``alpha_bar(t) = prod_{i=1..t} (1 - beta_i)`` with ``beta_i`` linear from ``betas[0]``
  to ``betas[1]``; the network is fed ``t / n_T``.
* :class:`DDAEEDMSchedule` -- ``t`` is an index ``1 .. steps`` (default 18) into DDAE's Karras
  sigma list read from low to high noise (``t = 1`` is ``sigma_min``, ``t = steps`` is
  ``sigma_max``), as DDAE's ``EDM.get_feature(x, t, steps=18)`` indexes it. Noising is
  variance-exploding (``x0 + sigma * noise``) and the network is fed ``c_in * x`` with
  ``c_noise = log(sigma) / 4``.

Both act on images in [-1, 1].
"""

from __future__ import annotations

import math
from abc import abstractmethod

import numpy as np
import torch

from probekit.core.errors import ProbekitError
from probekit.core.schedule import GridPoint, NoiseSchedule
from probekit.models.ddae.config import DDPMParams, EDMParams


def _check_index(t: object, last: int, what: str, zero_hint: str) -> int:
    if isinstance(t, bool) or not isinstance(t, (int, np.integer, float)) or int(t) != t:
        raise ProbekitError(f"timestep {t!r} is not an integer: give integer indices 1..{last} for {what}")
    t = int(t)
    if t == 0:
        raise ProbekitError(f"timestep 0 is not a step of {what} ({zero_hint}): use 1..{last}")
    if not 1 <= t <= last:
        raise ProbekitError(f"timestep {t} is out of range for {what}: use 1..{last}")
    return t


class DDAESchedule(NoiseSchedule):
    """A schedule that also knows how DDAE feeds the network and reads its output."""

    @abstractmethod
    def network_inputs(self, x_noisy: torch.Tensor, point: GridPoint) -> tuple[torch.Tensor, torch.Tensor]:
        """(image input, (B,) noise input) for the UNet."""

    @abstractmethod
    def denoiser_output(self, x_noisy: torch.Tensor, raw: torch.Tensor, point: GridPoint) -> torch.Tensor:
        """What DDAE's model returns from the raw network output (eps for DDPM, D(x) for EDM)."""


class DDAEDDPMSchedule(DDAESchedule):
    """Discrete DDPM with DDAE's 1-based steps ``t = 1 .. n_T``; the network sees ``t / n_T``."""

    def __init__(self, params: DDPMParams) -> None:
        self.params = params
        self.n_T = params.n_T
        betas = np.linspace(params.beta_1, params.beta_T, params.n_T, dtype=np.float64)
        # index 0 is the clean image (alpha_bar = 1), index t the product over steps 1..t
        self.alphas_cumprod = np.concatenate([[1.0], np.cumprod(1.0 - betas)])
        self.name = "ddae-ddpm-linear"

    def point(self, t: int) -> GridPoint:
        t = _check_index(t, self.n_T, f"DDAE's {self.n_T}-step DDPM", "DDAE's steps start at 1, the least noise")
        alpha_bar = float(self.alphas_cumprod[t])
        sigma = math.sqrt((1.0 - alpha_bar) / alpha_bar)
        return GridPoint(
            t=t,
            model_input=t / self.n_T,
            alpha_bar=alpha_bar,
            sigma=sigma,
            logsnr=math.log(alpha_bar / (1.0 - alpha_bar)),
        )

    def default_grid(self) -> list[int]:
        # Fractions of n_T plus one, dense at low noise: includes DDAE's grid search points 1, 11, 21 (n_T = 1000).
        fractions = [0.0, 0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.45, 0.6, 0.8]
        return sorted({min(round(f * self.n_T) + 1, self.n_T) for f in fractions})

    def describe(self) -> str:
        return (
            f"DDAE DDPM (linear betas {self.params.beta_1:g}..{self.params.beta_T:g}), t = step 1..{self.n_T} "
            f"(network sees t/{self.n_T}), larger t = more noise"
        )

    def network_inputs(self, x_noisy: torch.Tensor, point: GridPoint) -> tuple[torch.Tensor, torch.Tensor]:
        return x_noisy, torch.full((x_noisy.shape[0],), point.model_input, dtype=torch.float32, device=x_noisy.device)

    def denoiser_output(self, x_noisy: torch.Tensor, raw: torch.Tensor, point: GridPoint) -> torch.Tensor:
        return raw  # predicted noise


class DDAEEDMSchedule(DDAESchedule):
    """Karras sigmas indexed ``1 .. steps`` from ``sigma_min`` up to ``sigma_max``; VE noising."""

    def __init__(self, params: EDMParams, steps: int = 18) -> None:
        if steps < 2:
            raise ProbekitError(f"an EDM grid needs at least 2 steps, got {steps}")
        self.params = params
        self.steps = int(steps)
        ramp = np.arange(self.steps, dtype=np.float64) / (self.steps - 1)
        hi, lo = params.sigma_max ** (1 / params.rho), params.sigma_min ** (1 / params.rho)
        decreasing = (hi + ramp * (lo - hi)) ** params.rho  # sigma_max .. sigma_min, the sampling order
        # DDAE reverses [sigmas..., 0]: index 0 is sigma = 0, index k the k-th smallest sigma.
        self.sigmas = np.concatenate([[0.0], decreasing[::-1]])
        self.name = "ddae-edm-karras"

    def point(self, t: int) -> GridPoint:
        t = _check_index(
            t,
            self.steps,
            f"DDAE's {self.steps}-step EDM grid",
            "index 0 is sigma = 0, where c_noise = log(sigma)/4 is undefined",
        )
        sigma = float(self.sigmas[t])
        return GridPoint(
            t=t,
            model_input=math.log(sigma) / 4,
            alpha_bar=1.0 / (1.0 + sigma**2),
            sigma=sigma,
            logsnr=-2.0 * math.log(sigma),
        )

    def default_grid(self) -> list[int]:
        # Every index whose sigma is at most 10 (signal-to-noise above 1 %): 1..12 of 18, already
        # dense at low noise because rho = 7 packs the Karras steps there; DDAE's best is index 4.
        return [t for t in range(1, self.steps + 1) if self.sigmas[t] <= 10.0] or [1]

    def describe(self) -> str:
        p = self.params
        return (
            f"DDAE EDM (Karras sigma {p.sigma_min:g}..{p.sigma_max:g}, rho {p.rho:g}), t = index 1..{self.steps} "
            f"from sigma_min to sigma_max, larger t = more noise"
        )

    def add_noise(self, x0: torch.Tensor, noise: torch.Tensor, point: GridPoint) -> torch.Tensor:
        """Variance-exploding noising, as EDM trains: ``x0 + sigma * noise``."""
        return x0 + point.sigma * noise

    def preconditioning(self, sigma: float) -> tuple[float, float, float, float]:
        """EDM's (c_skip, c_out, c_in, c_noise) at noise level ``sigma``."""
        data = self.params.sigma_data
        total = sigma**2 + data**2
        return data**2 / total, sigma * data / math.sqrt(total), 1.0 / math.sqrt(total), math.log(sigma) / 4

    def network_inputs(self, x_noisy: torch.Tensor, point: GridPoint) -> tuple[torch.Tensor, torch.Tensor]:
        _, _, c_in, c_noise = self.preconditioning(point.sigma)
        return c_in * x_noisy, torch.full((x_noisy.shape[0],), c_noise, dtype=torch.float32, device=x_noisy.device)

    def denoiser_output(self, x_noisy: torch.Tensor, raw: torch.Tensor, point: GridPoint) -> torch.Tensor:
        c_skip, c_out, _, _ = self.preconditioning(point.sigma)
        return c_skip * x_noisy + c_out * raw  # the denoised image D(x)
