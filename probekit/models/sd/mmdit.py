"""Stable Diffusion 3 / 3.5: a diffusers ``SD3Transformer2DModel`` (MMDiT) over VAE latents.

Each ``JointTransformerBlock`` returns ``(text tokens, image tokens)``; a layer is the image-token
stream after block ``i`` (the last block returns no text tokens), pooled over tokens as for DiT.
Noising is flow matching, ``x_t = (1 - s) x + s eps`` with ``s = t / 1000``, and the transformer
receives ``timestep = s x num_train_timesteps`` (1000), as the SD3 pipeline feeds it. The
scheduler's ``shift`` re-spaces the *sampler's* steps (``s' = shift s / (1 + (shift - 1) s)``)
but not what a noise level means to the network, so it does not enter the grid.
"""

from __future__ import annotations

import torch
from torch import nn

from probekit.core.schedule import NoiseSchedule
from probekit.core.types import GridPoint
from probekit.models.dit.backbone import LatentTransformerBackbone
from probekit.models.sd.prompt import PromptConditioned
from probekit.models.sd.text import TextConditioning


class SD3Backbone(PromptConditioned, LatentTransformerBackbone):
    """The MMDiT of an SD3 pipeline; ``t`` is the noise-fraction index 0..1000 (flow matching)."""

    framework = "stable-diffusion-3"
    family = "SD3 transformer"

    def __init__(
        self, net: nn.Module, vae: nn.Module, text: TextConditioning, schedule: NoiseSchedule, model_id: str
    ) -> None:
        self._setup(net, vae, schedule, model_id)
        self._init_prompt(text)

    def _output(self, output: object) -> torch.Tensor:
        """The image-token stream: the second entry of a block's (text, image) output."""
        return output[1]  # type: ignore[index]

    def _run(self, x: torch.Tensor, point: GridPoint, labels: torch.Tensor | None = None) -> torch.Tensor:
        timesteps = torch.full((x.shape[0],), point.model_input, device=x.device, dtype=torch.float32)
        context = self._conditioning(labels, x)
        return self.net(
            hidden_states=x, encoder_hidden_states=context.hidden, pooled_projections=context.pooled, timestep=timesteps
        ).sample

    def _weight_modules(self) -> dict[str, nn.Module]:
        return {"transformer": self.net, "vae": self.vae, **self.text.modules()}

    def to(self, device: torch.device | str) -> SD3Backbone:
        super().to(device)
        self._move_prompt(device)
        return self
