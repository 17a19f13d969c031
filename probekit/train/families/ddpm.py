"""DDPM: a diffusers ``UNet2DModel`` predicting the noise (epsilon) on the discrete DDPM schedule.

Saved with ``save_pretrained`` plus ``scheduler_config.json``: the layout of diffusers' DDPM
checkpoints (google/ddpm-cifar10-32), which ``probekit.models`` loads from the folder itself.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from probekit.core.errors import ProbekitError
from probekit.train.families.base import TrainFamily
from probekit.train.families.discrete import DiscreteEpsilon

if TYPE_CHECKING:
    from probekit.train.config import TrainConfig

WEIGHTS = "diffusion_pytorch_model.safetensors"


class DDPMFamily(DiscreteEpsilon, TrainFamily):
    name = "ddpm"

    def build(self, config: TrainConfig) -> nn.Module:
        from diffusers import UNet2DModel

        try:
            return UNet2DModel(**config.unet)
        except (TypeError, ValueError) as err:
            raise ProbekitError(f"cannot build the UNet from the config's `unet` settings: {err}") from err

    def image_shape(self, config: TrainConfig) -> tuple[int, int]:
        return int(config.unet.get("sample_size", 32)), int(config.unet.get("in_channels", 3))

    def predict(self, model: nn.Module, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return model(x, t).sample

    def loss(self, model, x0, draws, config, autocast) -> torch.Tensor:
        x_t, noise = self.noised(x0, draws, config)
        with autocast:
            prediction = self.predict(model, x_t, draws["timesteps"])
        return F.mse_loss(prediction.float(), noise)

    def save(self, ema, model, config, folder: Path, step: int) -> None:
        ema.save_pretrained(folder)
        (folder / "scheduler_config.json").write_text(json.dumps(config.scheduler_config(), indent=2))

    def load_weights(self, model: nn.Module, folder: Path) -> None:
        model.load_state_dict({k: v.float() for k, v in load_file(str(folder / WEIGHTS)).items()})

    def model_spec(self, folder: Path, config: TrainConfig) -> str:
        return str(folder)

    def export(self, source: Path, dest: Path, dtype: torch.dtype | None) -> list[str]:
        dest.mkdir(parents=True, exist_ok=True)
        for name in ("config.json", "scheduler_config.json"):
            shutil.copy2(source / name, dest / name)
        if dtype is None:
            shutil.copy2(source / WEIGHTS, dest / WEIGHTS)
        else:  # diffusers loads these back as float32 (values rounded to `dtype`)
            save_file({k: v.to(dtype) for k, v in load_file(str(source / WEIGHTS)).items()}, str(dest / WEIGHTS))
        return ["config.json", WEIGHTS, "scheduler_config.json"]

    def describe_network(self, config: TrainConfig) -> str:
        unet = config.unet
        side = unet.get("sample_size")
        return (
            f"diffusers UNet2DModel, channels {unet.get('block_out_channels')}, {unet.get('layers_per_block')} layers "
            f"per block, {side}x{side}x{unet.get('in_channels')}"
        )
