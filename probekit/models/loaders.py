"""Checkpoint formats -> Backbone, as a registry keyed by format name.

Each entry says whether it recognises a ``--model`` spec and how to load it. New formats register
here; nothing else in probekit branches on the checkpoint format.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from ..errors import ProbekitError
from ..schedule import DDPMSchedule
from .backbone import Backbone
from .pixels import PixelsBackbone
from .unet import UNetBackbone


@dataclass(frozen=True)
class LoadOptions:
    """``random_init``: same architecture, fresh weights drawn with ``seed`` (the control baseline)."""

    random_init: bool = False
    seed: int = 0


@dataclass(frozen=True)
class ModelFormat:
    name: str
    description: str
    recognises: Callable[[str], bool]
    load: Callable[[str, LoadOptions], Backbone]


def _is_diffusers_unet_dir(spec: str) -> bool:
    path = Path(spec)
    return path.is_dir() and ((path / "config.json").is_file() or (path / "unet" / "config.json").is_file())


def _looks_like_hub_id(spec: str) -> bool:
    parts = spec.split("/")
    return len(parts) == 2 and all(parts) and not Path(spec).exists() and not spec.startswith((".", "/", "~"))


def _unet_folder(spec: str) -> tuple[str, str | None]:
    """(where, subfolder): a pipeline folder keeps its UNet in ``unet/`` and schedule in ``scheduler/``."""
    path = Path(spec)
    if path.is_dir():
        return (spec, "unet") if (path / "unet" / "config.json").is_file() else (spec, None)
    return spec, "unet"


def _read_scheduler_config(spec: str) -> dict:
    """The checkpoint's scheduler config if it has one; DDPM defaults (linear 1e-4..0.02, T=1000) otherwise."""
    path = Path(spec)
    if path.is_dir():
        for candidate in (path / "scheduler" / "scheduler_config.json", path / "scheduler_config.json"):
            if candidate.is_file():
                try:
                    return json.loads(candidate.read_text())
                except (OSError, json.JSONDecodeError) as err:
                    raise ProbekitError(f"cannot read scheduler config {candidate}: {err}; fix or delete it") from err
        return {}
    try:
        from diffusers import DDPMScheduler

        return dict(DDPMScheduler.load_config(spec, subfolder="scheduler"))
    except Exception:  # noqa: BLE001 -- a hub model without a scheduler folder is normal
        return {}


def _load_diffusers_unet(spec: str, options: LoadOptions) -> Backbone:
    from diffusers import UNet2DModel
    from diffusers.utils import logging as diffusers_logging

    where, subfolder = _unet_folder(spec)
    kwargs = {"subfolder": subfolder} if subfolder else {}
    verbosity = diffusers_logging.get_verbosity()
    # diffusers warns on every load that `accelerate` is absent; probekit does not need it.
    diffusers_logging.set_verbosity_error()
    try:
        if options.random_init:
            config = UNet2DModel.load_config(where, **kwargs)
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(options.seed)
                net = UNet2DModel.from_config(config)
        else:
            net = UNet2DModel.from_pretrained(where, **kwargs)
    except ProbekitError:
        raise
    except Exception as err:  # diffusers raises OSError/ValueError/EnvironmentError variants
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ProbekitError(
            f"cannot load a UNet2DModel from {spec!r}: {first_line}; give a diffusers model folder "
            "(config.json + weights) or a hub id, with --random-init if it holds only a config"
        ) from err
    finally:
        diffusers_logging.set_verbosity(verbosity)
    schedule = DDPMSchedule.from_config(_read_scheduler_config(spec))
    model_id = f"{spec} (random init, seed {options.seed})" if options.random_init else spec
    return UNetBackbone(net, schedule, model_id=model_id)


def _load_pixels(spec: str, options: LoadOptions) -> Backbone:
    if options.random_init:
        raise ProbekitError("the pixels model has no weights to re-initialise: drop --random-init")
    return PixelsBackbone()


FORMATS: dict[str, ModelFormat] = {
    "pixels": ModelFormat("pixels", "raw pixels in [0, 1] (baseline)", lambda s: s == "pixels", _load_pixels),
    "diffusers-unet": ModelFormat(
        "diffusers-unet",
        "diffusers UNet2DModel folder (config.json + weights, or a pipeline with unet/ and scheduler/)",
        _is_diffusers_unet_dir,
        _load_diffusers_unet,
    ),
    "diffusers-hub": ModelFormat(
        "diffusers-hub", "hub id of a UNet2DModel, e.g. google/ddpm-cifar10-32 (needs network)", _looks_like_hub_id, _load_diffusers_unet
    ),
}


def load_backbone(spec: str, *, random_init: bool = False, seed: int = 0, device: str | torch.device = "cpu") -> Backbone:
    """Load ``spec`` with the first format that recognises it and move it to ``device``."""
    options = LoadOptions(random_init=random_init, seed=seed)
    for model_format in FORMATS.values():
        if model_format.recognises(spec):
            return model_format.load(spec, options).to(device)
    if not Path(spec).exists():
        raise ProbekitError(f"model {spec!r} not found: give a model folder, a hub id (owner/name), or 'pixels'")
    known = "; ".join(f"{f.name}: {f.description}" for f in FORMATS.values())
    raise ProbekitError(f"{spec!r} is not a model probekit can read (known formats: {known})")
