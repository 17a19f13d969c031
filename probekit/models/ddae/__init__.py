"""DDAE's own checkpoints (github.com/FutureXiang/ddae) as probekit Backbones.

Spec syntax for ``--model``::

    ddae:CONFIG.yaml:CHECKPOINT.pth          # the EMA weights (what DDAE's linear.py probes)
    ddae:CONFIG.yaml:CHECKPOINT.pth#EMA      # the same, explicitly
    ddae:CONFIG.yaml:CHECKPOINT.pth#MODEL    # the online (non-averaged) training weights

``CONFIG.yaml`` is the training config (``model_type`` DDPM | EDM, ``net_type`` UNet, ``network``,
``diffusion``); ``CHECKPOINT.pth`` is a ``ckpts/model_EPOCH.pth`` written by DDAE's ``train.py``.
Paths must not contain ``:``. Loading is strict (every network key present, nothing extra) and
never unpickles arbitrary objects.

Timesteps (``--timesteps``) use DDAE's own numbering, larger = more noise:

* DDPM: ``t`` is the integer step ``1 .. n_T`` (the network is fed ``t / n_T``); ``t = 0`` and
  ``t > n_T`` are refused.
* EDM: ``t`` is the index ``1 .. 18`` into the Karras sigma list from ``sigma_min`` to
  ``sigma_max`` (DDAE's ``get_feature(x, t, steps=18)``); index 0 (sigma = 0) is refused.

Layers: ``stem``, ``in_1..``, ``downsample_1..``, ``mid_res1``, ``mid_attn``, ``mid``,
``out_1..`` (DDAE's own decoder names and numbering) and ``upsample_1..``; see :mod:`.unet`.
Images are fed in [-1, 1], as DDAE maps its [0, 1] inputs.
"""

from probekit.models.ddae.backbone import DDAEBackbone
from probekit.models.ddae.config import DDAEConfig, DDPMParams, EDMParams, NetworkConfig, read_config
from probekit.models.ddae.loader import DDAESpec, is_ddae_spec, load_ddae, parse_spec
from probekit.models.ddae.schedules import DDAEDDPMSchedule, DDAEEDMSchedule
from probekit.models.ddae.unet import DDAEUNet

__all__ = [
    "DDAEBackbone",
    "DDAEConfig",
    "DDAEDDPMSchedule",
    "DDAEEDMSchedule",
    "DDAESpec",
    "DDAEUNet",
    "DDPMParams",
    "EDMParams",
    "NetworkConfig",
    "is_ddae_spec",
    "load_ddae",
    "parse_spec",
    "read_config",
]
