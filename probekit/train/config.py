"""Training recipe: a YAML file in experiments/train/, read into dataclasses."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from probekit.core.errors import ProbekitError

#: the values of ``family`` (each a spec in :mod:`probekit.train.families`)
FAMILY_NAMES = ("ddpm", "dit", "edm", "flow")

# 3.7 M parameters, 32 x 32 x 1: the architecture of experiments/models/unet-small.
SMALL_UNET: dict[str, Any] = {
    "sample_size": 32,
    "in_channels": 1,
    "out_channels": 1,
    "block_out_channels": [32, 64, 128],
    "down_block_types": ["DownBlock2D", "AttnDownBlock2D", "DownBlock2D"],
    "up_block_types": ["UpBlock2D", "AttnUpBlock2D", "UpBlock2D"],
    "layers_per_block": 2,
    "norm_num_groups": 16,
    "attention_head_dim": 8,
}


@dataclass
class TrainConfig:
    """Diffusion pretraining of one model family (see :mod:`probekit.train.families`). Class labels are
    never used.

    ``family``: ``ddpm`` (diffusers ``UNet2DModel``, epsilon prediction), ``dit`` (patch transformer,
    epsilon prediction on the same DDPM schedule), ``edm`` (DDAE's UNet with EDM preconditioning)
    or ``flow`` (SiT-style transformer, velocity on the linear path). ``unet`` holds the DDPM's
    ``UNet2DModel`` keyword arguments; ``network`` the other families' architecture (DiT/SiT:
    input_size, in_channels, patch_size, hidden_size, depth, num_heads; EDM: DDAE's ``network``
    keys). The image size and channels there are what images are fitted to (Fashion-MNIST 28 x 28
    is padded to 32).
    """

    family: str = "ddpm"
    data: str = "fashion-mnist"
    image_column: str | None = None  # hf: data only (see probekit.data.hf)
    label_column: str | None = None
    train_limit: int | None = None
    unet: dict[str, Any] = field(default_factory=lambda: dict(SMALL_UNET))
    network: dict[str, Any] | None = None
    num_train_timesteps: int = 1000
    beta_start: float = 1e-4
    beta_end: float = 0.02
    beta_schedule: str = "linear"
    # EDM (Karras et al. 2022, as DDAE's EDM configs): ln sigma ~ N(p_mean, p_std^2) in training,
    # Karras sigmas sigma_max..sigma_min with exponent rho for sampling; pixel scale [-1, 1].
    p_mean: float = -1.2
    p_std: float = 1.2
    sigma_data: float = 0.5
    sigma_min: float = 0.002
    sigma_max: float = 80.0
    rho: float = 7.0
    batch_size: int = 64
    total_steps: int = 10_000
    lr: float = 2e-4
    weight_decay: float = 0.0
    warmup_steps: int = 500
    grad_clip: float = 1.0
    ema_decay: float = 0.9999
    hflip: bool = True
    seed: int = 0
    precision: str = "auto"  # auto (bf16 where native and faster, see probekit.core.precision) | fp32 | bf16 (autocast)
    checkpoint_every: int = 1000
    sample_steps: int = 50  # sampler steps (DDIM, EDM Heun or Euler) for the grid written at each checkpoint
    sample_count: int = 64
    log_every: int = 50

    @classmethod
    def from_yaml(cls, path: str | Path, **overrides: Any) -> TrainConfig:
        try:
            raw = yaml.safe_load(Path(path).read_text()) or {}
        except FileNotFoundError:
            raise ProbekitError(f"training config {path} not found: see experiments/train/ for examples") from None
        except yaml.YAMLError as err:
            raise ProbekitError(f"training config {path} is not valid YAML: {str(err).splitlines()[0]}") from err
        return cls.from_dict({**raw, **{k: v for k, v in overrides.items() if v is not None}})

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise ProbekitError(
                f"unknown training setting(s) {', '.join(unknown)}: known are {', '.join(sorted(known))}"
            )
        config = cls(**raw)
        config.validate()
        return config

    def validate(self) -> None:
        if self.family not in FAMILY_NAMES:
            raise ProbekitError(f"unknown training family {self.family!r}: use one of {', '.join(FAMILY_NAMES)}")
        if self.family != "ddpm" and not self.network:
            raise ProbekitError(
                f"the {self.family} family needs a `network` mapping in the recipe (see experiments/train/)"
            )
        if self.family == "ddpm" and self.network:
            raise ProbekitError("the ddpm family takes its architecture from `unet`, not `network`: move it there")
        if self.precision not in ("auto", "fp32", "bf16"):
            raise ProbekitError(f"precision {self.precision!r} is not supported: use auto, fp32 or bf16")
        for name in ("batch_size", "total_steps", "checkpoint_every", "log_every", "sample_steps"):
            if getattr(self, name) < 1:
                raise ProbekitError(f"training setting {name} must be at least 1, got {getattr(self, name)}")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ProbekitError(f"ema_decay must be in [0, 1), got {self.ema_decay}")
        if not (0 < self.sigma_min < self.sigma_max and self.sigma_data > 0 and self.p_std > 0 and self.rho > 0):
            raise ProbekitError(
                "EDM settings need 0 < sigma_min < sigma_max and positive sigma_data, p_std and rho, got "
                f"sigma_min={self.sigma_min}, sigma_max={self.sigma_max}, sigma_data={self.sigma_data}, "
                f"p_std={self.p_std}, rho={self.rho}"
            )

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def scheduler_config(self) -> dict[str, Any]:
        """What ``probekit extract`` reads back from ``scheduler_config.json``."""
        return {
            "_class_name": "DDPMScheduler",
            "num_train_timesteps": self.num_train_timesteps,
            "beta_start": self.beta_start,
            "beta_end": self.beta_end,
            "beta_schedule": self.beta_schedule,
            "prediction_type": "epsilon",
            "clip_sample": True,
        }
