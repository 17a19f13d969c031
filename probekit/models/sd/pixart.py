"""PixArt-alpha and PixArt-Sigma: a diffusers ``PixArtTransformer2DModel`` over VAE latents, conditioned on T5.

Each block is a ``BasicTransformerBlock`` (``ada_norm_single``: one shared timestep embedding,
modulated per block by a learned ``scale_shift_table``), self-attention, cross-attention to the T5
tokens, feed-forward. A layer is the token sequence after block ``i``, pooled over tokens as for
DiT. The conditioning is T5's last hidden state with its attention mask (:class:`~.text.PixArtText`:
120 tokens for PixArtAlphaPipeline, 300 for PixArtSigmaPipeline); the 1024-pixel alpha models
(``sample_size`` 128) also read the image's resolution and aspect ratio, as the pipeline passes
them. Noising is the pipeline scheduler's DDPM schedule (linear betas 1e-4..0.02, T = 1000 for the
released models), ``t`` = index 0..T-1, fed to the transformer as is.
"""

from __future__ import annotations

import torch
from torch import nn

from probekit.core.schedule import NoiseSchedule
from probekit.core.types import GridPoint
from probekit.models.dit.backbone import LatentTransformerBackbone
from probekit.models.sd.prompt import PromptConditioned
from probekit.models.sd.text import TextConditioning

#: the T5 sequence length of each PixArt pipeline (its default ``max_sequence_length``)
T5_TOKENS = {"PixArtAlphaPipeline": 120, "PixArtSigmaPipeline": 300}


class PixArtBackbone(PromptConditioned, LatentTransformerBackbone):
    """The transformer of a PixArt pipeline; ``t`` is the DDPM index 0..T-1, fed as is."""

    framework = "pixart"
    family = "PixArt transformer"

    def __init__(
        self, net: nn.Module, vae: nn.Module, text: TextConditioning, schedule: NoiseSchedule, model_id: str
    ) -> None:
        self._setup(net, vae, schedule, model_id)
        self._init_prompt(text)

    def _run(self, x: torch.Tensor, point: GridPoint, labels: torch.Tensor | None = None) -> torch.Tensor:
        batch = x.shape[0]
        timesteps = torch.full((batch,), point.model_input, device=x.device, dtype=torch.float32)
        context = self._conditioning(labels, x)
        added: dict[str, torch.Tensor | None] = {"resolution": None, "aspect_ratio": None}
        if getattr(self.net, "use_additional_conditions", False):
            height, width = self.input_size  # type: ignore[misc]
            added["resolution"] = torch.tensor([[height, width]], device=x.device, dtype=x.dtype).repeat(batch, 1)
            added["aspect_ratio"] = torch.tensor([[height / width]], device=x.device, dtype=x.dtype).repeat(batch, 1)
        return self.net(
            x,
            encoder_hidden_states=context.hidden,
            encoder_attention_mask=context.mask,
            timestep=timesteps,
            added_cond_kwargs=added,
        ).sample

    def _weight_modules(self) -> dict[str, nn.Module]:
        return {"transformer": self.net, "vae": self.vae, **self.text.modules()}  # type: ignore[dict-item]

    def to(self, device: torch.device | str) -> PixArtBackbone:
        super().to(device)
        self._move_prompt(device)
        return self
