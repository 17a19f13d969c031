"""A diffusers ``DiTTransformer2DModel`` plus its VAE as a Backbone (and the latent-transformer base it shares
with SiT and Stable Diffusion 3).

``encode`` maps images in [-1, 1] to VAE latents (posterior mean, times the VAE's scaling factor);
the schedule noises those latents; ``features`` reads the token sequence after each transformer
block, conditioned on the null class (DiT's unconditional branch for classifier-free guidance).
"""

from __future__ import annotations

import torch
from torch import nn

from probekit.core.errors import ProbekitError
from probekit.core.schedule import NoiseSchedule
from probekit.core.types import GridPoint, LayerInfo
from probekit.models.backbone import HookedBackbone
from probekit.models.vae import encode_mean, vae_scale_factor


class LatentTransformerBackbone(HookedBackbone):
    """A transformer over patches of VAE latents (DiT, SiT, Stable Diffusion 3).

    Layers are the token sequences after each of ``net.transformer_blocks`` (``transformer_blocks.i``,
    alias ``layer-i``), stage ``block``, ``heads x head_dim`` channels, (latent side / patch)^2 tokens.
    ``encode`` maps images in [-1, 1] to ``(posterior mean - shift_factor) * scaling_factor``.
    Adapters call :meth:`_setup` and implement :meth:`_run`.
    """

    value_range = (-1.0, 1.0)
    input_channels = 3
    #: the family's name in error messages, and how its spec chooses a VAE
    family = "transformer"
    vae_hint = ""

    def _setup(self, net: nn.Module, vae: nn.Module | None, schedule: NoiseSchedule, model_id: str) -> None:
        """``vae`` None: the transformer runs on pixels (``vae=none``), images fed at its own size and channels."""
        self.net = net.eval().requires_grad_(False)
        self.vae = vae.eval().requires_grad_(False) if vae is not None else None
        self.schedule = schedule
        self.model_id = model_id
        config = net.config
        self.latent_size = int(config.sample_size)
        if vae is None:
            self.input_channels = int(config.in_channels)
            self.input_size = (self.latent_size, self.latent_size)
        else:
            if vae.config.latent_channels != config.in_channels:
                raise ProbekitError(
                    f"the VAE makes {vae.config.latent_channels}-channel latents but the {self.family} reads "
                    f"{config.in_channels}: "
                    f"choose the VAE the {self.family} was trained with{self.vae_hint}"
                )
            side = self.latent_size * vae_scale_factor(vae)
            self.input_size = (side, side)
            self.scaling_factor = float(getattr(vae.config, "scaling_factor", None) or 0.18215)
            self.shift_factor = float(getattr(vae.config, "shift_factor", None) or 0.0)
        blocks = {f"transformer_blocks.{i}": block for i, block in enumerate(self.net.transformer_blocks)}
        tokens = (self.latent_size // int(config.patch_size)) ** 2
        hidden = int(config.num_attention_heads * config.attention_head_dim)
        layers = [
            LayerInfo(name, "block", i, hidden, f"{tokens} tokens", aliases=(f"layer-{i}",))
            for i, name in enumerate(blocks)
        ]
        self._register(blocks, layers)

    def encode(self, x0: torch.Tensor) -> torch.Tensor:
        """Images (B, 3, H, W) in [-1, 1] -> latents (B, C, H/f, W/f): ``(mean - shift) * scaling_factor``.

        The posterior mean, not a sample (the models' training samples), so features are
        deterministic and no random numbers are drawn outside :mod:`probekit.core.noise`.
        A pixel-space transformer (no VAE) diffuses the images themselves.
        """
        if self.vae is None:
            return x0
        return encode_mean(self.vae, x0, self.vae_budget)

    def _blank_input(self) -> torch.Tensor:
        channels = int(getattr(self.net, "config").in_channels)  # noqa: B009 (diffusers' config is untyped)
        return torch.zeros(1, channels, self.latent_size, self.latent_size)

    def _unknown_layer(self, name: str) -> str:
        if ":" in name:
            return f"unknown activation {name!r}: run `probekit layers --kinds --model {self.model_id}` to list them"
        return (
            f"unknown layer {name!r}: {self.family} layers are transformer_blocks.0..{len(self._layers) - 1} (or "
            "layer-i)"
        )


class DiTBackbone(LatentTransformerBackbone):
    """DiT over VAE latents. ``t`` is the DDPM index 0..T-1 and the network receives it as is.

    ``original_temb`` switches every block's sinusoidal timestep embedding to the original DiT's
    frequencies (``exp(-ln(10^4) i / 128)``); diffusers' DiT uses ``i / 127`` instead, so the same
    weights give slightly different features under the two.
    """

    framework = "dit"
    family = "DiT"
    vae_hint = " (vae=...)"

    def __init__(
        self, net: nn.Module, vae: nn.Module | None, schedule: NoiseSchedule, model_id: str, *, original_temb: bool
    ) -> None:
        self._setup(net, vae, schedule, model_id)
        self.original_temb = original_temb
        table = self.net.transformer_blocks[0].norm1.emb.class_embedder.embedding_table
        self.null_class = int(net.config.num_embeds_ada_norm)
        if table.num_embeddings != self.null_class + 1:
            raise ProbekitError(
                f"{model_id} has no null-class embedding: probekit probes DiTs trained with label dropout only"
            )
        for block in self.net.transformer_blocks:
            block.norm1.emb.time_proj.downscale_freq_shift = 0 if original_temb else 1

    def _run(self, x: torch.Tensor, point: GridPoint, labels: torch.Tensor | None = None) -> torch.Tensor:
        timesteps = torch.full((x.shape[0],), point.model_input, device=x.device, dtype=torch.float32)
        null = torch.full((x.shape[0],), self.null_class, device=x.device, dtype=torch.long)
        return self.net(x, timestep=timesteps, class_labels=null).sample

    def _weight_modules(self) -> dict[str, nn.Module]:
        """The DiT's and the VAE's tensors both decide the features."""
        return {"dit": self.net} if self.vae is None else {"dit": self.net, "vae": self.vae}


class SiTBackbone(DiTBackbone):
    """SiT (Ma et al., "Exploring Flow and Diffusion-based Generative Models with Scalable
    Interpolant Transformers"): DiT's architecture trained on the linear interpolant.

    The schedule is :class:`~probekit.core.schedule.FlowMatchingSchedule` with ``data_at_one``: probekit's
    ``t`` is a noise-fraction index 0..1000 and the network receives SiT's own time ``1 - t/1000``.
    The network predicts a velocity; :meth:`forward` returns it as is.
    """

    framework = "sit"
