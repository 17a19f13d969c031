"""The latent encoder shared by latent diffusion families (DiT, SiT, Stable Diffusion)."""

from __future__ import annotations

import torch
from torch import nn

#: images per VAE encoder call: bounds the encoder's activation memory (about 0.3 GiB per image at 256 px)
VAE_BATCH = 16


def vae_scale_factor(vae: nn.Module) -> int:
    """Pixels per latent pixel along each side: 2 per downsampling stage (8 for Stable Diffusion's VAE)."""
    return 2 ** (len(vae.config.block_out_channels) - 1)


def encode_mean(vae: nn.Module, x0: torch.Tensor) -> torch.Tensor:
    """Images (B, 3, H, W) in [-1, 1] -> latents ``(posterior mean - shift_factor) * scaling_factor``.

    The posterior mean, not a sample, so features are deterministic and no random numbers are drawn
    outside :mod:`probekit.noise`.
    """
    scaling = float(getattr(vae.config, "scaling_factor", None) or 0.18215)
    shift = float(getattr(vae.config, "shift_factor", None) or 0.0)
    with torch.no_grad():
        means = [vae.encode(part).latent_dist.mean for part in x0.split(VAE_BATCH)]
    return (torch.cat(means) - shift) * scaling
