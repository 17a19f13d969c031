"""Noise schedules: what a grid point means for a given diffusion framework.

A grid point is addressed by ``t``, the framework's *own* timestep index (for diffusers DDPM models
an integer in ``0 .. T-1``, where larger ``t`` means more noise). Each point also records the
numbers that make grids of different frameworks comparable:

* ``alpha_bar`` -- signal fraction of the variance-preserving form, ``x_t = sqrt(ab) x0 + sqrt(1-ab) eps``
* ``sigma`` -- the equivalent variance-exploding noise level, ``sqrt((1 - ab) / ab)`` (EDM's sigma)
* ``logsnr`` -- ``log(ab / (1 - ab)) = -2 log(sigma)``; ``+inf`` for a clean input
* ``model_input`` -- the timestep value the network itself receives
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Sequence

import numpy as np
import torch

from probekit.core.errors import ProbekitError
from probekit.core.types import GridPoint  # defined torch-free in probekit.core.types


class NoiseSchedule(ABC):
    """Maps a timestep index to a :class:`GridPoint` and noises clean inputs at that point."""

    name: str

    @abstractmethod
    def point(self, t: int) -> GridPoint:
        """The grid point for timestep index ``t``; raises :class:`ProbekitError` when out of range."""

    @abstractmethod
    def default_grid(self) -> list[int]:
        """A grid spanning low to high noise, denser at low noise, where DDAE finds the best cells."""

    @abstractmethod
    def describe(self) -> str:
        """One line saying what ``t`` means for this schedule (shown by ``probekit layers``)."""

    def add_noise(self, x0: torch.Tensor, noise: torch.Tensor, point: GridPoint) -> torch.Tensor:
        """Variance-preserving noising: ``sqrt(ab) * x0 + sqrt(1 - ab) * noise``."""
        if point.alpha_bar >= 1.0:
            return x0
        return math.sqrt(point.alpha_bar) * x0 + math.sqrt(1.0 - point.alpha_bar) * noise

    def points(self, timesteps: Sequence[int]) -> list[GridPoint]:
        return [self.point(t) for t in timesteps]


def _derived(alpha_bar: float) -> tuple[float, float]:
    """(sigma, logsnr) of a variance-preserving signal fraction.

    Both ends are explicit: a clean input (``alpha_bar = 1``) has ``sigma = 0``, ``logsnr = +inf``;
    a zero-terminal-SNR point (``alpha_bar = 0``, pure noise) has ``sigma = +inf``, ``logsnr = -inf``.
    """
    if alpha_bar >= 1.0:
        return 0.0, math.inf
    if alpha_bar <= 0.0:
        return math.inf, -math.inf
    return math.sqrt((1.0 - alpha_bar) / alpha_bar), math.log(alpha_bar / (1.0 - alpha_bar))


#: beta schedules that diffusers' DDPM-family schedulers build (``beta_schedule`` in a scheduler config)
BETA_SCHEDULES = ("linear", "scaled_linear", "squaredcos_cap_v2", "sigmoid", "laplace")


def betas_for(beta_schedule: str, beta_start: float, beta_end: float, num_steps: int) -> np.ndarray:
    """Betas of the DDPM schedules diffusers names (see :data:`BETA_SCHEDULES`), in float64."""
    if beta_schedule == "linear":
        return np.linspace(beta_start, beta_end, num_steps, dtype=np.float64)
    if beta_schedule == "scaled_linear":
        return np.linspace(beta_start**0.5, beta_end**0.5, num_steps, dtype=np.float64) ** 2
    if beta_schedule == "squaredcos_cap_v2":
        # Nichol & Dhariwal's cosine schedule, betas capped at 0.999 as in diffusers.
        def f(u: float) -> float:
            return math.cos((u + 0.008) / 1.008 * math.pi / 2) ** 2

        return _betas_for_alpha_bar(f, num_steps)
    if beta_schedule == "laplace":

        def f(u: float) -> float:
            lmb = -0.5 * math.copysign(1, 0.5 - u) * math.log(1 - 2 * math.fabs(0.5 - u) + 1e-6)
            return math.sqrt(math.exp(lmb) / (1 + math.exp(lmb)))

        return _betas_for_alpha_bar(f, num_steps)
    if beta_schedule == "sigmoid":
        # GeoDiff's sigmoid schedule, as diffusers builds it.
        ramp = 1.0 / (1.0 + np.exp(-np.linspace(-6.0, 6.0, num_steps, dtype=np.float64)))
        return ramp * (beta_end - beta_start) + beta_start
    raise ProbekitError(f"unknown beta_schedule {beta_schedule!r}: use one of {', '.join(BETA_SCHEDULES)}")


def _betas_for_alpha_bar(alpha_bar_fn, num_steps: int) -> np.ndarray:
    """Discretise a continuous alpha_bar(u), u in [0, 1], into betas capped at 0.999 (as diffusers does)."""
    return np.array(
        [min(1 - alpha_bar_fn((i + 1) / num_steps) / alpha_bar_fn(i / num_steps), 0.999) for i in range(num_steps)],
        dtype=np.float64,
    )


def rescale_zero_terminal_snr(betas: np.ndarray) -> np.ndarray:
    """Lin et al. 2023 (arXiv 2305.08891, Algorithm 1): shift and scale sqrt(alpha_bar) so the last step is pure
    noise.
    """
    root = np.sqrt(np.cumprod(1.0 - betas))
    first, last = root[0], root[-1]
    root = (root - last) * (first / (first - last))
    alpha_bar = root**2
    alphas = np.concatenate([alpha_bar[:1], alpha_bar[1:] / alpha_bar[:-1]])
    return 1.0 - alphas


class DDPMSchedule(NoiseSchedule):
    """Discrete DDPM schedule with diffusers' indexing: ``t`` in ``0 .. T-1``, ``alpha_bar = prod(1 - beta[:t+1])``.

    The network receives the integer ``t`` itself (``model_input = t``), as ``UNet2DModel`` expects.
    ``trained_betas`` (explicit betas) and ``rescale_betas_zero_snr`` (zero terminal SNR: the last
    step is pure noise, ``alpha_bar = 0``) are honoured as diffusers' schedulers honour them.
    """

    def __init__(
        self,
        num_train_timesteps: int = 1000,
        beta_start: float = 1e-4,
        beta_end: float = 0.02,
        beta_schedule: str = "linear",
        *,
        trained_betas: Sequence[float] | None = None,
        rescale_betas_zero_snr: bool = False,
    ) -> None:
        self.num_train_timesteps = int(num_train_timesteps)
        self.beta_schedule = beta_schedule
        self.beta_start, self.beta_end = float(beta_start), float(beta_end)
        self.trained_betas = None if trained_betas is None else [float(b) for b in trained_betas]
        self.rescale_betas_zero_snr = bool(rescale_betas_zero_snr)
        if self.trained_betas is not None:
            betas = np.asarray(self.trained_betas, dtype=np.float64)
            if betas.ndim != 1 or not len(betas) or not np.all((betas > 0) & (betas <= 1)):
                raise ProbekitError(
                    "trained_betas must be a non-empty list of betas in (0, 1]: fix the scheduler config"
                )
            # diffusers builds the schedule from the betas given, whatever num_train_timesteps says.
            self.num_train_timesteps = len(betas)
        else:
            betas = betas_for(beta_schedule, beta_start, beta_end, self.num_train_timesteps)
        if self.rescale_betas_zero_snr:
            betas = rescale_zero_terminal_snr(betas)
        self.alphas_cumprod = np.cumprod(1.0 - betas)
        self.name = "ddpm-trained-betas" if self.trained_betas is not None else f"ddpm-{beta_schedule}"
        if self.rescale_betas_zero_snr:
            self.name += "-zero-snr"

    @classmethod
    def from_config(cls, config: dict) -> DDPMSchedule:
        """Build from a diffusers scheduler config dict (missing keys take DDPM's defaults).

        Every field that changes the training noise or what the network receives is honoured or
        refused (:func:`check_scheduler_config`); sampling-only fields (``timestep_spacing``,
        ``use_karras_sigmas``, ...) do not change a grid point and are ignored.
        """
        check_scheduler_config(config)
        return cls(
            num_train_timesteps=config.get("num_train_timesteps", 1000),
            beta_start=config.get("beta_start", 1e-4),
            beta_end=config.get("beta_end", 0.02),
            beta_schedule=config.get("beta_schedule", "linear"),
            trained_betas=config.get("trained_betas"),
            rescale_betas_zero_snr=bool(config.get("rescale_betas_zero_snr", False)),
        )

    def point(self, t: int) -> GridPoint:
        if isinstance(t, bool) or int(t) != t:
            raise ProbekitError(
                f"timestep {t!r} is not an integer: give integer indices 0..{self.num_train_timesteps - 1}"
            )
        t = int(t)
        if not 0 <= t < self.num_train_timesteps:
            raise ProbekitError(
                f"timestep {t} is out of range for this {self.num_train_timesteps}-step DDPM schedule: "
                f"use 0..{self.num_train_timesteps - 1}"
            )
        alpha_bar = float(self.alphas_cumprod[t])
        sigma, logsnr = _derived(alpha_bar)
        return GridPoint(t=t, model_input=float(t), alpha_bar=alpha_bar, sigma=sigma, logsnr=logsnr)

    def default_grid(self) -> list[int]:
        # Fractions of T, dense at low noise: DDAE's best DDPM cells sit around t ~ 10..100 of 1000.
        fractions = [0.0, 0.005, 0.01, 0.025, 0.05, 0.1, 0.15, 0.2, 0.3, 0.45, 0.6, 0.8]
        steps = sorted({min(round(f * self.num_train_timesteps), self.num_train_timesteps - 1) for f in fractions})
        return steps

    def describe(self) -> str:
        betas = (
            "trained betas"
            if self.trained_betas is not None
            else f"{self.beta_schedule} betas {self.beta_start:g}..{self.beta_end:g}"
        )
        if self.rescale_betas_zero_snr:
            betas += f", zero terminal SNR: t = {self.num_train_timesteps - 1} is pure noise (sigma = inf)"
        return f"DDPM ({betas}), t = diffusers index 0..{self.num_train_timesteps - 1}, larger t = more noise"

    def config(self) -> dict[str, object]:
        config: dict[str, object] = {
            "num_train_timesteps": self.num_train_timesteps,
            "beta_start": self.beta_start,
            "beta_end": self.beta_end,
            "beta_schedule": self.beta_schedule,
            "rescale_betas_zero_snr": self.rescale_betas_zero_snr,
        }
        if self.trained_betas is not None:
            config["trained_betas"] = list(self.trained_betas)
        return config


#: diffusers schedulers whose training noise is the discrete DDPM (variance-preserving, betas) form
VP_SCHEDULERS = frozenset(
    {
        "DDPMScheduler",
        "DDIMScheduler",
        "DDIMInverseScheduler",
        "DDIMParallelScheduler",
        "DDPMParallelScheduler",
        "PNDMScheduler",
        "EulerDiscreteScheduler",
        "EulerAncestralDiscreteScheduler",
        "HeunDiscreteScheduler",
        "LMSDiscreteScheduler",
        "DPMSolverMultistepScheduler",
        "DPMSolverSinglestepScheduler",
        "DPMSolverMultistepInverseScheduler",
        "DPMSolverSDEScheduler",
        "KDPM2DiscreteScheduler",
        "KDPM2AncestralDiscreteScheduler",
        "UniPCMultistepScheduler",
        "DEISMultistepScheduler",
        "SASolverScheduler",
        "TCDScheduler",
        "LCMScheduler",
    }
)


def check_scheduler_config(config: dict) -> None:
    """Refuse, in one line, a scheduler config whose noise this DDPM schedule would not reproduce."""
    name = config.get("_class_name")
    if name is not None and name not in VP_SCHEDULERS:
        raise ProbekitError(
            f"scheduler {name} does not use the discrete DDPM (betas) noise that probekit reads from diffusers "
            "folders: features at a grid point would be noised wrongly; use a DDPM-family scheduler config"
        )
    schedule = config.get("beta_schedule", "linear")
    if config.get("trained_betas") is None and schedule not in BETA_SCHEDULES:
        raise ProbekitError(
            f"unknown beta_schedule {schedule!r} in the scheduler config: use one of {', '.join(BETA_SCHEDULES)}"
        )
    if config.get("timestep_type", "discrete") != "discrete":
        raise ProbekitError(
            f"timestep_type {config['timestep_type']!r} feeds the network a continuous noise level, not the step "
            "index: "
            "not supported; use a scheduler config with timestep_type 'discrete'"
        )
    if config.get("prediction_type", "epsilon") not in ("epsilon", "v_prediction", "sample"):
        raise ProbekitError(
            f"prediction_type {config['prediction_type']!r} is not one diffusers' DDPM schedulers define: "
            "use epsilon, v_prediction or sample"
        )


class CleanSchedule(NoiseSchedule):
    """No noise at all: the single point ``t = 0`` is the clean input (used by the ``pixels`` baseline)."""

    name = "clean"

    def point(self, t: int) -> GridPoint:
        if isinstance(t, bool) or int(t) != t or int(t) != 0:
            raise ProbekitError(
                f"timestep {t!r} is not available: this model sees clean inputs only, use --timesteps 0"
            )
        return GridPoint(t=0, model_input=0.0, alpha_bar=1.0, sigma=0.0, logsnr=math.inf)

    def default_grid(self) -> list[int]:
        return [0]

    def describe(self) -> str:
        return "clean inputs only: t = 0 means no noise"


class FlowMatchingSchedule(NoiseSchedule):
    """Linear-interpolant (rectified-flow) noising: ``x_t = (1 - s) x0 + s eps`` with ``s = t / T``.

    Grid convention: ``t`` is an integer index ``0 .. T`` (default ``T = 1000``); the noise
    fraction is ``s = t / T`` in [0, 1], ``t = 0`` is the clean input and ``t = T`` pure noise.
    On the shared axis: ``sigma = s / (1 - s)`` (dividing ``x_t`` by ``1 - s`` gives
    ``x0 + sigma eps``), ``logsnr = 2 log((1 - s) / s)``, and ``alpha_bar = 1 / (1 + sigma^2)``,
    the signal fraction of the variance-preserving process at the same SNR.

    What the network receives differs by codebase: SiT's time runs the other way (data at 1,
    noise at 0) and is fed as is, so ``data_at_one=True`` gives ``model_input = 1 - s``;
    otherwise ``model_input = s * input_scale`` (diffusers' flow-matching scheduler: ``s * 1000``).
    """

    def __init__(self, steps: int = 1000, *, data_at_one: bool = False, input_scale: float = 1.0) -> None:
        if steps < 1:
            raise ProbekitError(f"a flow-matching grid needs at least 1 step, got {steps}")
        self.steps = int(steps)
        self.data_at_one = data_at_one
        self.input_scale = float(input_scale)
        self.name = "flow-linear"

    def point(self, t: int) -> GridPoint:
        if isinstance(t, bool) or int(t) != t or not 0 <= int(t) <= self.steps:
            raise ProbekitError(
                f"timestep {t!r} is not a flow-matching grid index: use integers 0..{self.steps} (noise fraction "
                f"t/{self.steps})"
            )
        t = int(t)
        s = t / self.steps
        if s == 0.0:
            sigma, logsnr, alpha_bar = 0.0, math.inf, 1.0
        elif s == 1.0:
            sigma, logsnr, alpha_bar = math.inf, -math.inf, 0.0
        else:
            sigma = s / (1.0 - s)
            logsnr = 2.0 * math.log((1.0 - s) / s)
            alpha_bar = 1.0 / (1.0 + sigma * sigma)
        model_input = 1.0 - s if self.data_at_one else s * self.input_scale
        return GridPoint(t=t, model_input=model_input, alpha_bar=alpha_bar, sigma=sigma, logsnr=logsnr)

    def add_noise(self, x0: torch.Tensor, noise: torch.Tensor, point: GridPoint) -> torch.Tensor:
        """``(1 - s) x0 + s noise`` with ``s = t / T``."""
        s = point.t / self.steps
        if s == 0.0:
            return x0
        return (1.0 - s) * x0 + s * noise

    def default_grid(self) -> list[int]:
        # Noise fractions dense at low noise, where probes of diffusion features peak.
        fractions = [0.0, 0.01, 0.025, 0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.6, 0.8]
        return sorted({round(f * self.steps) for f in fractions})

    def describe(self) -> str:
        fed = "1 - t/T (SiT's time, data at 1)" if self.data_at_one else f"t/T x {self.input_scale:g}"
        return (
            f"flow matching x_t = (1 - s) x + s eps, s = t/{self.steps}; t = grid index 0..{self.steps}, "
            f"larger t = more noise; the network receives {fed}"
        )
