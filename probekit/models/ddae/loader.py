"""``--model ddae:CONFIG.yaml:CHECKPOINT.pth[#EMA|#MODEL]`` -> :class:`DDAEBackbone`."""

from __future__ import annotations

from dataclasses import dataclass

from probekit.core.errors import ProbekitError
from probekit.models.ddae.backbone import DDAEBackbone
from probekit.models.ddae.checkpoint import ENTRIES, load_strict, read_entry
from probekit.models.ddae.config import DDPMParams, read_config
from probekit.models.ddae.schedules import DDAEDDPMSchedule, DDAEEDMSchedule, DDAESchedule
from probekit.models.ddae.unet import DDAEUNet
from probekit.models.options import LoadOptions
from probekit.models.random_init import model_id, seeded

PREFIX = "ddae:"
USAGE = "use ddae:CONFIG.yaml:CHECKPOINT.pth, optionally ending in #EMA (the default) or #MODEL"


@dataclass(frozen=True)
class DDAESpec:
    """A parsed ``ddae:`` spec: which YAML, which checkpoint, which entry of it."""

    config: str
    checkpoint: str
    entry: str = "EMA"


def is_ddae_spec(spec: str) -> bool:
    return spec.startswith(PREFIX)


def parse_spec(spec: str) -> DDAESpec:
    """Split ``ddae:CFG:CKPT[#ENTRY]``; ENTRY is EMA or MODEL (any case)."""
    if not is_ddae_spec(spec):
        raise ProbekitError(f"{spec!r} is not a DDAE model spec: {USAGE}")
    body, entry = spec[len(PREFIX) :], "EMA"
    if "#" in body:
        body, _, entry = body.rpartition("#")
        entry = entry.strip().upper()
        if entry not in ENTRIES:
            raise ProbekitError(
                f"unknown checkpoint entry #{entry} in {spec!r}: use #EMA (averaged weights, the default) or #MODEL"
            )
    parts = body.split(":")
    if len(parts) != 2 or not all(parts):
        raise ProbekitError(f"cannot read {spec!r}: {USAGE}")
    return DDAESpec(config=parts[0], checkpoint=parts[1], entry=entry)


def load_ddae(spec: str, options: LoadOptions) -> DDAEBackbone:
    """Build DDAE's network from the YAML and load the checkpoint entry strictly.

    With ``options.random_init`` the checkpoint is not read: the network keeps PyTorch's default
    initialisation (as DDAE's training starts), drawn with ``options.seed``.
    """
    parsed = parse_spec(spec)
    config = read_config(parsed.config)
    if options.random_init:
        with seeded(options.seed):
            net = DDAEUNet(config.network)
        name = model_id(spec, True, options.seed)
    else:
        state = read_entry(parsed.checkpoint, parsed.entry)
        net = DDAEUNet(config.network)
        load_strict(net, state, f"the {parsed.entry} entry of {parsed.checkpoint}", parsed.config)
        name = spec
    schedule: DDAESchedule
    if isinstance(config.diffusion, DDPMParams):
        schedule = DDAEDDPMSchedule(config.diffusion)
    else:
        schedule = DDAEEDMSchedule(config.diffusion)
    return DDAEBackbone(net, schedule, model_id=name, framework=f"ddae-{config.model_type.lower()}")
