"""The latent encoder shared by latent diffusion families (DiT, SiT, Stable Diffusion).

The encoder runs in batches sized by a memory budget (:func:`encode_batch`), not a constant: at
512 px one image of Stable Diffusion's VAE takes about 650 MiB of activations, so a fixed batch
either wastes a large GPU or overflows a small one.
"""

from __future__ import annotations

import torch
from torch import nn

#: float32 activations of the first stage's width at full resolution that the encoder keeps alive
#: at its peak (a ResNet block's input, normalised copy, convolution output and residual, plus the
#: input convolution's output): 5 x 128 channels x 512 x 512 x 4 bytes = 640 MiB for SD's VAE at
#: 512 px, against about 650 MiB measured on the CPU.
LIVE_ACTIVATIONS = 5
#: the budget on a CPU (on a GPU: a quarter of the free memory)
DEFAULT_BUDGET_BYTES = 4 << 30


def vae_scale_factor(vae: nn.Module) -> int:
    """Pixels per latent pixel along each side: 2 per downsampling stage (8 for Stable Diffusion's VAE)."""
    return 2 ** (len(vae.config.block_out_channels) - 1)


def encode_bytes_per_image(vae: nn.Module, height: int, width: int) -> int:
    """Estimated peak activation bytes of encoding one (3, height, width) image: the first stage's
    live activations, plus a float32 attention matrix over the latent pixels in the mid block.
    """
    first = int(vae.config.block_out_channels[0])
    tokens = (height // vae_scale_factor(vae)) * (width // vae_scale_factor(vae))
    return LIVE_ACTIVATIONS * first * height * width * 4 + tokens * tokens * 4


def default_budget(device: torch.device) -> int:
    """Bytes the encoder may use: a quarter of the GPU's free memory, or :data:`DEFAULT_BUDGET_BYTES` on a CPU."""
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return max(1, free // 4)
    return DEFAULT_BUDGET_BYTES


def encode_batch(vae: nn.Module, height: int, width: int, budget_bytes: int) -> int:
    """Images per encoder call that fit ``budget_bytes`` (at least 1)."""
    return max(1, int(budget_bytes) // encode_bytes_per_image(vae, height, width))


def encode_mean(vae: nn.Module, x0: torch.Tensor, budget_bytes: int | None = None) -> torch.Tensor:
    """Images (B, 3, H, W) in [-1, 1] -> latents ``(posterior mean - shift_factor) * scaling_factor``.

    The posterior mean, not a sample, so features are deterministic and no random numbers are drawn
    outside :mod:`probekit.core.noise`. Encoded :func:`encode_batch` images at a time within
    ``budget_bytes`` (None: :func:`default_budget` of the images' device).
    """
    scaling = float(getattr(vae.config, "scaling_factor", None) or 0.18215)
    shift = float(getattr(vae.config, "shift_factor", None) or 0.0)
    budget = default_budget(x0.device) if budget_bytes is None else budget_bytes
    batch = encode_batch(vae, int(x0.shape[-2]), int(x0.shape[-1]), budget)
    with torch.no_grad():
        means = [vae.encode(part).latent_dist.mean for part in x0.split(batch)]
    # Contiguous: the posterior mean is a strided half of the moments tensor, and a network's
    # kernels round differently on another memory layout, so stored latents (read back contiguous)
    # would not give the fresh latents' features bit for bit.
    return ((torch.cat(means) - shift) * scaling).contiguous()
