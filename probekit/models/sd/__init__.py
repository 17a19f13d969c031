"""Stable Diffusion pipelines (diffusers) as Backbones: SD 1.x / 2.x, SDXL and SD3 under one spec.

Spec: ``sd:FOLDER_OR_HUB_ID`` -- a pipeline folder or hub id. Its parts pick the generation:

* ``unet/`` (``UNet2DConditionModel``) + ``text_encoder/``: SD 1.x / 2.x, conditioned on the last
  hidden state of its CLIP text encoder;
* ``unet/`` + ``text_encoder/`` + ``text_encoder_2/``: SDXL (``addition_embed_type`` "text_time"),
  conditioned on both CLIPs' penultimate hidden states, the pooled embedding of the second, and
  ``time_ids`` (see :mod:`.unet`);
* ``transformer/`` (``SD3Transformer2DModel``): SD3 / 3.5, two CLIPs + T5 (or zeros without
  ``text_encoder_3``), flow matching (see :mod:`.mmdit`).

Images (3 channels, ``latent size x 8`` pixels, in [-1, 1]) are encoded once per image to the VAE
posterior mean, ``(mean - shift_factor) * scaling_factor``. The UNet generations noise the latents
with the pipeline's DDPM scheduler config (``t`` = index 0..T-1, larger = noisier, fed to the UNet
as is; ``prediction_type`` only changes what :meth:`forward` returns, not the features); SD3 with
flow matching, ``t`` = 0..1000, noise fraction ``t / 1000``.

Every forward is conditioned on the empty prompt, embedded once at load time, unless
:meth:`set_prompt` (``--prompt "a photo of a {class}"``) fills the class name of each image into a
template: the prompts are embedded once per class and picked per sample by its label. That puts the
label into the features: a probe on them is not a label-free measurement.

Random init (``random_init``) redraws the denoiser only (seeded; ``unet/`` or ``transformer/``
needs only its config) and keeps the pipeline's VAE and text encoder(s): the twin sees the same
latents and the same conditioning, so the comparison isolates what denoising training put into
the network (DiT and SiT twins keep their VAE the same way). A random VAE would change the input
space itself.
"""

from probekit.models.sd.load import PREFIX, load_sd, recognises
from probekit.models.sd.mmdit import SD3Backbone
from probekit.models.sd.prompt import PromptConditioned, class_prompts
from probekit.models.sd.text import CLIPText, PromptEmbeds, SD3Text, SDXLText, TextConditioning
from probekit.models.sd.unet import StableDiffusionBackbone

__all__ = [
    "CLIPText",
    "PREFIX",
    "PromptConditioned",
    "PromptEmbeds",
    "SD3Backbone",
    "SD3Text",
    "SDXLText",
    "StableDiffusionBackbone",
    "TextConditioning",
    "class_prompts",
    "load_sd",
    "recognises",
]
