"""Checkpoints -> Backbones (network + noise schedule + layer registry)."""

from .backbone import Backbone, HookedBackbone, LayerInfo, state_dict_sha256
from .ddae import DDAEBackbone
from .dit import DiTBackbone
from .layers import select_layers
from .loaders import FORMATS, load_backbone
from .pixels import PixelsBackbone
from .unet import UNetBackbone
from .vision import VisionEncoderBackbone

__all__ = [
    "Backbone",
    "DDAEBackbone",
    "DiTBackbone",
    "FORMATS",
    "HookedBackbone",
    "LayerInfo",
    "PixelsBackbone",
    "UNetBackbone",
    "VisionEncoderBackbone",
    "load_backbone",
    "select_layers",
    "state_dict_sha256",
]
