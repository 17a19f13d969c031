"""Checkpoints -> Backbones (network + noise schedule + layer registry)."""

from probekit.models.backbone import Backbone, HookedBackbone, LayerInfo, state_dict_sha256
from probekit.models.ddae import DDAEBackbone
from probekit.models.dit import DiTBackbone
from probekit.models.layers import select_layers
from probekit.models.loaders import FORMATS, load_backbone
from probekit.models.pixels import PixelsBackbone
from probekit.models.unet import UNetBackbone
from probekit.models.vision import VisionEncoderBackbone

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
