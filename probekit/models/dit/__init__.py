"""DiT (Peebles & Xie, "Scalable Diffusion Models with Transformers") over VAE latents.

Model specs (the ``--model`` string)::

    dit:PATH.pt[?OPTIONS]          original DiT state dict (github.com/facebookresearch/DiT), or a
                                   train.py checkpoint (its 'ema' weights are used)
    dit:DiT-XL-2-256x256.pt        a published checkpoint: downloaded to the torch hub cache on first use
    dit:FOLDER[?OPTIONS]           diffusers DiTTransformer2DModel folder (config.json + weights), or a
    FOLDER                         pipeline folder with transformer/ (+ vae/, scheduler/); bare folders
                                   are recognised by their config.json
    dit:OWNER/NAME[?OPTIONS]       the same on the Hugging Face hub, e.g. dit:facebook/DiT-XL-2-256

Options, joined with ``&``:

* ``config=DiT-XL/2`` -- a published size (XL/L/B/S x patch 2/4/8) for a .pt. Depth, width, patch,
  channels, class count and latent size are read off the tensor shapes; only the head count is
  not, so it is needed only for sizes outside the published table (or give ``heads=N``).
* ``heads=N`` -- attention heads of a .pt with an unpublished size.
* ``image_size=256`` -- optional check for a .pt: the pixel size its latents come from.
* ``vae=HUB_ID_OR_FOLDER`` -- the AutoencoderKL. Default: the pipeline's own ``vae/`` when the
  source is a pipeline, else ``stabilityai/sd-vae-ft-ema`` (the VAE DiT trained with).
* ``vae=none`` -- a transformer trained on pixels rather than latents (``probekit train``'s DiT and
  flow-matching families): images are fed at the network's own size and channels, unencoded.
* ``temb=original|diffusers`` -- timestep-embedding frequencies. DiT uses ``exp(-ln(1e4) i/128)``,
  diffusers' port uses ``i/127``. Default: ``original`` for a .pt, ``diffusers`` for diffusers
  folders (as DiTPipeline runs them); ``temb=original`` on facebook/DiT-XL-2-256 reproduces the
  original network.

Images are fitted to ``latent size x 8`` pixels (256 for DiT-XL-2-256) in [-1, 1], encoded once per
batch to the VAE posterior *mean* (not a sample, so features are deterministic) times the VAE's
``scaling_factor`` (0.18215 for Stable Diffusion's VAE), and noised in latent space with DiT's
DDPM schedule: linear betas 1e-4..0.02, T = 1000, ``t`` = index 0..999 (larger = noisier), which
the network receives as is. The null class (index ``num_classes``, DiT's unconditional branch)
conditions every forward. Learned-sigma models (2x output channels) load as is; the read-out
layers do not depend on the output head.

SiT (same architecture and state-dict names, trained on the linear interpolant)::

    sit:PATH.pt[?OPTIONS]          original SiT checkpoint (github.com/willisma/SiT), same options;
                                   config=SiT-XL/2 .. SiT-S/8 name the same sizes as DiT's

runs on :class:`probekit.core.schedule.FlowMatchingSchedule`: ``t`` = index 0..1000, noise fraction
``s = t/1000``, ``x_t = (1 - s) x + s eps``; the network receives SiT's time ``1 - s`` (data at 1).

Layers: ``transformer_blocks.i`` (alias ``layer-i``), the token sequence after block ``i``,
stage ``block``, ``hidden`` channels, ``N tokens`` with N = (latent size / patch)^2. ``gap``
pooling averages over tokens (as in DDAE); ``avgK`` averages the (side x side) token grid to K x K.
"""

from probekit.models.dit.backbone import DiTBackbone, LatentTransformerBackbone, SiTBackbone
from probekit.models.dit.configs import DIT_CONFIGS, DiTSize, infer_original_shape, parse_config_name
from probekit.models.dit.convert import original_keys, original_to_diffusers
from probekit.models.dit.load import DEFAULT_VAE, load_dit, load_sit, read_original_state, recognises_sit
from probekit.models.dit.spec import DiTSpec, parse_spec, recognises

__all__ = [
    "DEFAULT_VAE",
    "DIT_CONFIGS",
    "DiTBackbone",
    "DiTSize",
    "DiTSpec",
    "infer_original_shape",
    "LatentTransformerBackbone",
    "load_dit",
    "load_sit",
    "original_keys",
    "original_to_diffusers",
    "parse_config_name",
    "parse_spec",
    "read_original_state",
    "recognises",
    "recognises_sit",
    "SiTBackbone",
]
