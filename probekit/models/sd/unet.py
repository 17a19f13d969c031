"""The UNet generations of Stable Diffusion (1.x, 2.x, XL): a ``UNet2DConditionModel`` over VAE latents.

SDXL's UNet (``addition_embed_type == "text_time"``) also receives ``added_cond_kwargs``: the pooled
text embedding and six ``time_ids`` -- original size (H, W), crop top-left (0, 0), target size
(H, W), with H = W = the pixel size the UNet's latents come from (``sample_size x 8``, 1024 for
SDXL base), as the SDXL pipeline builds them by default.
"""

from __future__ import annotations

import torch
from torch import nn

from probekit.core.errors import ProbekitError
from probekit.core.schedule import NoiseSchedule
from probekit.core.types import GridPoint
from probekit.models.sd.prompt import PromptConditioned
from probekit.models.sd.text import SDXLText, TextConditioning
from probekit.models.unet import UNetBackbone
from probekit.models.vae import encode_mean, vae_scale_factor

#: the number of SDXL ``time_ids``: original size, crop top-left, target size
TIME_IDS = 6


class StableDiffusionBackbone(PromptConditioned, UNetBackbone):
    """The UNet of a Stable Diffusion 1.x / 2.x / XL pipeline over VAE latents, text-conditioned.

    ``t`` is the pipeline scheduler's DDPM index 0..T-1, fed to the UNet as is. Layers are those of
    :class:`~probekit.models.unet.UNetBackbone`.
    """

    framework = "stable-diffusion"
    input_channels = 3

    def __init__(
        self,
        unet: nn.Module,
        vae: nn.Module,
        text: TextConditioning,
        schedule: NoiseSchedule,
        model_id: str,
        *,
        prediction_type: str,
    ) -> None:
        self.vae = vae.eval().requires_grad_(False)
        self.prediction_type = prediction_type
        side = int(unet.config.sample_size) * vae_scale_factor(vae)
        self.time_ids = _time_ids(unet, text, side, model_id)
        if self.time_ids is not None:
            self.framework = "stable-diffusion-xl"
        self._init_prompt(text)
        super().__init__(unet, schedule, model_id)
        self.latent_size = int(unet.config.sample_size)
        self.input_size = (side, side)
        self.input_channels = 3

    def _network_input_shape(self) -> tuple[int, int, int]:
        size = int(self.net.config.sample_size)
        return (int(self.net.config.in_channels), size, size)

    def encode(self, x0: torch.Tensor) -> torch.Tensor:
        """Images (B, 3, H, W) in [-1, 1] -> latents ``(posterior mean - shift) * scaling_factor``."""
        return encode_mean(self.vae, x0, self.vae_budget)

    def _run(self, x: torch.Tensor, point: GridPoint, labels: torch.Tensor | None = None) -> torch.Tensor:
        timesteps = torch.full((x.shape[0],), point.model_input, device=x.device, dtype=torch.float32)
        context = self._conditioning(labels, x)
        extra = {}
        if self.time_ids is not None:
            time_ids = self.time_ids.to(device=x.device, dtype=x.dtype).expand(x.shape[0], -1)
            extra["added_cond_kwargs"] = {"text_embeds": context.pooled, "time_ids": time_ids}
        return self.net(x, timesteps, encoder_hidden_states=context.hidden, **extra).sample

    def _weight_modules(self) -> dict[str, nn.Module]:
        return {"unet": self.net, "vae": self.vae, **self.text.modules()}

    def to(self, device: torch.device | str) -> StableDiffusionBackbone:
        super().to(device)
        self._move_prompt(device)
        return self


def _time_ids(unet: nn.Module, text: TextConditioning, side: int, model_id: str) -> torch.Tensor | None:
    """SDXL's (1, 6) ``time_ids`` (side, side, 0, 0, side, side); None for a UNet without added conditioning."""
    kind = getattr(unet.config, "addition_embed_type", None)
    if kind is None:
        return None
    if kind != "text_time":
        raise ProbekitError(
            f"{model_id} needs {kind!r} added conditioning: sd: reads SD 1.x/2.x/XL UNets (none or text_time) only"
        )
    if not isinstance(text, SDXLText):
        raise ProbekitError(
            f"{model_id} is an SDXL UNet (text_time conditioning) but the pipeline lacks text_encoder or "
            "text_encoder_2: "
            "give an SDXL base pipeline with both text encoders (the refiner is not supported)"
        )
    expected = int(unet.config.addition_time_embed_dim) * TIME_IDS + text.pooled_dim
    if int(unet.config.projection_class_embeddings_input_dim) != expected:
        raise ProbekitError(
            f"{model_id}: the UNet's added embedding takes {unet.config.projection_class_embeddings_input_dim} inputs, "
            "not "
            f"{TIME_IDS} time ids x {unet.config.addition_time_embed_dim} + {text.pooled_dim} pooled text features: "
            "only SDXL base conditioning (no aesthetic score) is supported"
        )
    return torch.tensor([[side, side, 0, 0, side, side]], dtype=torch.float32)
