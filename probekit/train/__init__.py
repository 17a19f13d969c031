"""Pretraining a diffusion model whose checkpoints ``probekit extract`` loads."""

from .config import SMALL_UNET, TrainConfig
from .loop import train

__all__ = ["SMALL_UNET", "TrainConfig", "train"]
