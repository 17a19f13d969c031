"""Pretraining a diffusion model whose checkpoints ``probekit extract`` loads."""

from .config import SMALL_UNET, TrainConfig
from .export import export_checkpoint
from .loop import train

__all__ = ["SMALL_UNET", "TrainConfig", "export_checkpoint", "train"]
