"""Pretraining a diffusion model whose checkpoints ``probekit extract`` loads."""

from probekit.train.config import SMALL_UNET, TrainConfig
from probekit.train.export import export_checkpoint
from probekit.train.loop import train

__all__ = ["SMALL_UNET", "TrainConfig", "export_checkpoint", "train"]
