"""Flux: a diffusers ``FluxTransformer2DModel`` (double- then single-stream blocks) over packed VAE latents.

Latents ``(B, C, H, W)`` (C = 16 for FLUX.1) are packed as FluxPipeline packs them: each 2 x 2
patch becomes one token of ``4 C`` features, row-major, ``(H / 2) (W / 2)`` image tokens, with
position ids ``(0, row, col)``; text tokens get ids ``(0, 0, 0)``. Conditioning is T5's hidden
states (512 tokens) and the CLIP text encoder's pooled output (:class:`~.text.FluxText`).
Guidance-distilled checkpoints (``guidance_embeds``, FLUX.1-dev) also read a guidance scale:
3.5, FluxPipeline's default.

Noising is flow matching, ``x_t = (1 - s) x + s eps`` with ``s = t / 1000``; the transformer
receives ``timestep = s`` (it multiplies by 1000 itself), as FluxPipeline feeds it. The
scheduler's (dynamic) shift re-spaces the sampler's steps, not what a noise level means, so it
does not enter the grid.

Layers: ``transformer_blocks.i`` (the double-stream blocks, alias ``layer-i``) and
``single_transformer_blocks.j`` (alias ``layer-(D + j)``), each the image-token stream after the
block; the single-stream blocks' text tokens are dropped. The input side is not in the
transformer's config: it is FluxPipeline's default, 1024 pixels (128 latents), unless the spec
says ``sd:FOLDER?size=PIXELS``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from probekit.core.errors import ProbekitError
from probekit.core.schedule import NoiseSchedule
from probekit.core.types import GridPoint, LayerInfo
from probekit.models.dit.backbone import LatentTransformerBackbone
from probekit.models.kinds import KindContext
from probekit.models.sd.prompt import PromptConditioned
from probekit.models.sd.text import TextConditioning
from probekit.models.vae import vae_scale_factor

#: FluxPipeline's default guidance scale, fed to guidance-distilled transformers
GUIDANCE = 3.5
#: FluxPipeline's default image side in pixels (``default_sample_size`` 128 latents x 8)
DEFAULT_SIZE = 1024


def pack(latents: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> (B, H/2 * W/2, 4C): every 2 x 2 patch one token, channels then the patch's rows and columns."""
    batch, channels, height, width = latents.shape
    patches = latents.reshape(batch, channels, height // 2, 2, width // 2, 2).permute(0, 2, 4, 1, 3, 5)
    return patches.reshape(batch, (height // 2) * (width // 2), channels * 4)


def unpack(tokens: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """The inverse of :func:`pack` for latents of ``height`` x ``width``."""
    batch, _, features = tokens.shape
    channels = features // 4
    patches = tokens.reshape(batch, height // 2, width // 2, channels, 2, 2).permute(0, 3, 1, 4, 2, 5)
    return patches.reshape(batch, channels, height, width)


def image_ids(height: int, width: int) -> torch.Tensor:
    """(H/2 * W/2, 3) position ids of the packed tokens: (0, row, column)."""
    rows, cols = torch.meshgrid(torch.arange(height // 2), torch.arange(width // 2), indexing="ij")
    return torch.stack([torch.zeros_like(rows), rows, cols], dim=-1).reshape(-1, 3).float()


class FluxBackbone(PromptConditioned, LatentTransformerBackbone):
    """The transformer of a FluxPipeline; ``t`` is the noise-fraction index 0..1000 (flow matching)."""

    framework = "flux"
    family = "Flux transformer"

    def __init__(
        self,
        net: nn.Module,
        vae: nn.Module,
        text: TextConditioning,
        schedule: NoiseSchedule,
        model_id: str,
        *,
        size: int = DEFAULT_SIZE,
    ) -> None:
        config: Any = net.config  # diffusers' configs are untyped
        vae_config: Any = vae.config
        factor = vae_scale_factor(vae)
        if size % (2 * factor):
            raise ProbekitError(
                f"size={size} does not pack: Flux needs an image side divisible by {2 * factor} (VAE factor {factor} x "
                "2 x 2 patches)"
            )
        self.latent_channels = int(vae_config.latent_channels)
        if 4 * self.latent_channels != int(config.in_channels):
            raise ProbekitError(
                f"the VAE makes {self.latent_channels}-channel latents, which pack to "
                f"{4 * self.latent_channels} features, but the Flux transformer reads {config.in_channels}: "
                "give the pipeline's own vae/"
            )
        self.net = net.eval().requires_grad_(False)
        self.vae = self.flux_vae = vae.eval().requires_grad_(False)
        self.schedule = schedule
        self.model_id = model_id
        self.latent_size = size // factor
        self.input_size = (size, size)
        self.guidance = GUIDANCE if config.guidance_embeds else None
        self.image_tokens = (self.latent_size // 2) ** 2
        hidden = int(config.num_attention_heads * config.attention_head_dim)
        modules: dict[str, nn.Module] = {}
        layers: list[LayerInfo] = []
        for group in ("transformer_blocks", "single_transformer_blocks"):
            for i, block in enumerate(getattr(net, group)):
                name = f"{group}.{i}"
                modules[name] = block
                depth = len(layers)
                layers.append(
                    LayerInfo(name, "block", depth, hidden, f"{self.image_tokens} tokens", (f"layer-{depth}",))
                )
        self._register(modules, layers)
        self._init_prompt(text)

    def _output(self, output: object) -> torch.Tensor:
        """The image-token stream: the second entry of a block's (text, image) output."""
        return output[1]  # type: ignore[index]

    def _kind_context(self) -> KindContext:
        return KindContext(image_tokens=self.image_tokens)

    def _blank_input(self) -> torch.Tensor:
        return torch.zeros(1, self.latent_channels, self.latent_size, self.latent_size)

    def _unknown_layer(self, name: str) -> str:
        if ":" in name:
            return f"unknown activation {name!r}: run `probekit layers --kinds --model {self.model_id}` to list them"
        double = sum(layer.name.startswith("transformer_blocks.") for layer in self._layers)
        return (
            f"unknown layer {name!r}: Flux layers are transformer_blocks.0..{double - 1} and "
            f"single_transformer_blocks.0..{len(self._layers) - double - 1} (or layer-i)"
        )

    def _run(self, x: torch.Tensor, point: GridPoint, labels: torch.Tensor | None = None) -> torch.Tensor:
        batch, _, height, width = x.shape
        context = self._conditioning(labels, x)
        timesteps = torch.full((batch,), point.model_input, device=x.device, dtype=x.dtype)
        guidance = None
        if self.guidance is not None:
            guidance = torch.full((batch,), self.guidance, device=x.device, dtype=torch.float32)
        out = self.net(
            hidden_states=pack(x),
            encoder_hidden_states=context.hidden,
            pooled_projections=context.pooled,
            timestep=timesteps,
            img_ids=image_ids(height, width).to(device=x.device, dtype=x.dtype),
            txt_ids=x.new_zeros(context.hidden.shape[1], 3),
            guidance=guidance,
        ).sample
        return unpack(out, height, width)

    def cache_attrs(self) -> dict[str, object]:
        return {**super().cache_attrs(), **({"guidance": self.guidance} if self.guidance is not None else {})}

    def _weight_modules(self) -> dict[str, nn.Module]:
        return {"transformer": self.net, "vae": self.flux_vae, **self.text.modules()}

    def to(self, device: torch.device | str) -> FluxBackbone:
        super().to(device)
        self._move_prompt(device)
        return self
