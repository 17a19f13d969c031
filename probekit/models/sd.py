"""Stable Diffusion (diffusers ``UNet2DConditionModel`` pipelines, SD 1.x / 2.x) as a Backbone.

Spec: ``sd:FOLDER_OR_HUB_ID`` -- a pipeline folder (``unet/``, ``vae/``, ``text_encoder/``,
``tokenizer/``, ``scheduler/``) or a hub id.

Images (3 channels, ``latent size x 8`` pixels, in [-1, 1]) are encoded once per image to the VAE
posterior mean times ``scaling_factor``, then noised in latent space with the pipeline's DDPM
scheduler config (``t`` = index 0..T-1, larger = noisier, fed to the UNet as is). Every forward is
conditioned on the empty prompt, embedded once at load time by the pipeline's text encoder.
``prediction_type`` (epsilon, or v_prediction for SD 2.x 768) only changes what :meth:`forward`
returns means, not the features. Layers are those of :class:`UNetBackbone`.

Random init (``random_init``) redraws the UNet only (seeded; ``unet/`` needs only its config) and
keeps the pipeline's VAE and text encoder: the twin sees the same latents and the same empty-prompt
conditioning, so the comparison isolates what denoising training put into the UNet (DiT and SiT
twins keep their VAE the same way). A random VAE would change the input space itself.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

from ..errors import ProbekitError
from ..schedule import DDPMSchedule, NoiseSchedule
from ..types import GridPoint
from .unet import UNetBackbone
from .vae import encode_mean, vae_scale_factor
from .random_init import model_id, seeded

if TYPE_CHECKING:
    from .loaders import LoadOptions

PREFIX = "sd:"


class StableDiffusionBackbone(UNetBackbone):
    """The UNet of a Stable Diffusion pipeline over VAE latents, conditioned on the empty prompt."""

    framework = "stable-diffusion"
    input_channels = 3

    def __init__(
        self, unet: nn.Module, vae: nn.Module, prompt_embeds: torch.Tensor, schedule: NoiseSchedule, model_id: str,
        *, text_encoder: nn.Module, prediction_type: str,
    ) -> None:
        if getattr(unet.config, "addition_embed_type", None) is not None:
            raise ProbekitError(f"{model_id} needs extra conditioning ({unet.config.addition_embed_type}, e.g. SDXL): not supported yet")
        self.vae = vae.eval().requires_grad_(False)
        self.text_encoder = text_encoder.eval().requires_grad_(False)
        self.prompt_embeds = prompt_embeds
        self.prediction_type = prediction_type
        super().__init__(unet, schedule, model_id)
        self.latent_size = int(unet.config.sample_size)
        side = self.latent_size * vae_scale_factor(vae)
        self.input_size = (side, side)
        self.input_channels = 3

    def _network_input_shape(self) -> tuple[int, int, int]:
        size = int(self.net.config.sample_size)
        return (int(self.net.config.in_channels), size, size)

    def encode(self, x0: torch.Tensor) -> torch.Tensor:
        """Images (B, 3, H, W) in [-1, 1] -> latents ``(posterior mean - shift) * scaling_factor``."""
        return encode_mean(self.vae, x0)

    def _run(self, x: torch.Tensor, point: GridPoint) -> torch.Tensor:
        timesteps = torch.full((x.shape[0],), point.model_input, device=x.device, dtype=torch.float32)
        context = self.prompt_embeds.to(device=x.device, dtype=x.dtype).expand(x.shape[0], -1, -1)
        return self.net(x, timesteps, encoder_hidden_states=context).sample

    def _weight_modules(self) -> dict[str, nn.Module]:
        return {"unet": self.net, "vae": self.vae, "text_encoder": self.text_encoder}

    def to(self, device: torch.device | str) -> "StableDiffusionBackbone":
        super().to(device)
        self.prompt_embeds = self.prompt_embeds.to(device)
        return self


def empty_prompt_embeds(tokenizer: object, text_encoder: nn.Module) -> torch.Tensor:
    """(1, L, D) last hidden state of the text encoder for "" padded to the tokenizer's length, as the pipelines do."""
    ids = tokenizer([""], padding="max_length", max_length=tokenizer.model_max_length, truncation=True, return_tensors="pt").input_ids
    with torch.no_grad():
        return text_encoder(ids.to(next(text_encoder.parameters()).device))[0]


def recognises(spec: str) -> bool:
    return spec.startswith(PREFIX)


def load_sd(spec: str, options: "LoadOptions") -> StableDiffusionBackbone:
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    try:
        from transformers import AutoTokenizer, CLIPTextModel
    except ImportError:
        raise ProbekitError("sd: models need the transformers package for their text encoder: pip install 'probekit[vision]'") from None

    source = spec[len(PREFIX):]
    if not source:
        raise ProbekitError(f"{spec!r} names no pipeline: write sd:FOLDER or sd:OWNER/NAME")
    try:
        if options.random_init:
            with seeded(options.seed):
                unet = UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(source, subfolder="unet"))
        else:
            unet = UNet2DConditionModel.from_pretrained(source, subfolder="unet")
        vae = AutoencoderKL.from_pretrained(source, subfolder="vae")
        text_encoder = CLIPTextModel.from_pretrained(source, subfolder="text_encoder")
        tokenizer = AutoTokenizer.from_pretrained(source, subfolder="tokenizer")
        scheduler = dict(DDPMScheduler.load_config(source, subfolder="scheduler"))
    except (OSError, ValueError) as err:
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise ProbekitError(
            f"cannot load a Stable Diffusion pipeline from {source!r} ({first}): give a folder with unet/, vae/, "
            "text_encoder/, tokenizer/ and scheduler/, or a hub id"
        ) from err
    return StableDiffusionBackbone(
        unet, vae, empty_prompt_embeds(tokenizer, text_encoder), DDPMSchedule.from_config(scheduler),
        model_id(spec, options.random_init, options.seed),
        text_encoder=text_encoder, prediction_type=str(scheduler.get("prediction_type", "epsilon")),
    )
