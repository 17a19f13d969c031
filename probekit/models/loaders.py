"""Checkpoint formats -> Backbone, as a registry keyed by format name.

Each entry says whether it recognises a ``--model`` spec and how to load it. New formats register
here; nothing else in probekit branches on the checkpoint format.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from probekit.core.errors import ProbekitError, first_line
from probekit.core.schedule import DDPMSchedule
from probekit.models.backbone import Backbone
from probekit.models.ddae import is_ddae_spec, load_ddae
from probekit.models.dit import load_dit, load_sit, recognises_sit
from probekit.models.dit import recognises as recognises_dit
from probekit.models.options import LoadOptions, quiet_diffusers
from probekit.models.pixels import PixelsBackbone
from probekit.models.random_init import model_id, seeded
from probekit.models.sd import load_sd
from probekit.models.sd import recognises as recognises_sd
from probekit.models.unet import UNetBackbone
from probekit.models.vision import load_vision
from probekit.models.vision import recognises as recognises_vision
from probekit.models.weight_hash import files_key, local_sources


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

    where, subfolder = _unet_folder(spec)
    kwargs = {"subfolder": subfolder} if subfolder else {}
    # CRITICAL: diffusers also logs an error line for a folder with .bin weights only; real
    # failures reach us as exceptions.
    with quiet_diffusers(logging.CRITICAL):
        try:
            if options.random_init:
                config = UNet2DModel.load_config(where, **kwargs)
                with seeded(options.seed):
                    net = UNet2DModel.from_config(config)
            else:
                net, loading_info = UNet2DModel.from_pretrained(where, output_loading_info=True, **kwargs)
                _require_matching_keys(spec, loading_info)
        except ProbekitError:
            raise
        except Exception as err:  # diffusers raises OSError/ValueError/EnvironmentError variants
            raise ProbekitError(_explain_unet_error(spec, err)) from err
    schedule = DDPMSchedule.from_config(_read_scheduler_config(spec))
    return UNetBackbone(net, schedule, model_id=model_id(spec, options.random_init, options.seed))


_SIZE_MISMATCH = re.compile(
    r"size mismatch for (\S+): copying a param with shape torch\.Size\(\[([^\]]*)\]\) from checkpoint, "
    r"the shape in current model is torch\.Size\(\[([^\]]*)\]\)"
)
_MATCH_CONFIG = "use the config.json saved with these weights, or fix its settings to match them"


def _require_matching_keys(spec: str, loading_info: dict[str, list[str]]) -> None:
    """Diffusers only warns about absent or extra weights and leaves absent ones random: refuse that."""
    missing, unexpected = sorted(loading_info.get("missing_keys", [])), sorted(loading_info.get("unexpected_keys", []))
    if not missing and not unexpected:
        return
    parts = [
        f"{label} {', '.join(keys[:2])}{f' and {len(keys) - 2} more' if len(keys) > 2 else ''}"
        for label, keys in (("the weights lack", missing), ("the config has no place for", unexpected))
        if keys
    ]
    raise ProbekitError(f"the weights in {spec} do not match its config.json: {'; '.join(parts)}; {_MATCH_CONFIG}")


def _error_chain(err: BaseException) -> list[BaseException]:
    chain: list[BaseException] = []
    current: BaseException | None = err
    while current is not None and current not in chain:
        chain.append(current)
        current = current.__cause__ or current.__context__
    return chain


def _explain_unet_error(spec: str, err: Exception) -> str:
    """One line saying why diffusers could not load ``spec`` and what to do about it."""
    text, chain = str(err), _error_chain(err)
    if mismatches := _SIZE_MISMATCH.findall(text):
        shown = ", ".join(
            f"{key} is [{have}] in the weights but [{want}] by the config" for key, have, want in mismatches[:2]
        )
        more = f" and {len(mismatches) - 2} more" if len(mismatches) > 2 else ""
        return f"the weights in {spec} do not match its config.json: {shown}{more}; {_MATCH_CONFIG}"
    if denied := next((e for e in chain if isinstance(e, PermissionError)), None):
        return (
            f"cannot read {denied.filename or spec}: permission denied; make the model files readable (chmod -R u+rX)"
        )
    if "not a valid JSON file" in text:
        config = re.search(r"config file at '([^']+)'", text)
        detail = next((first_line(e) for e in chain if isinstance(e, json.JSONDecodeError)), "")
        return (
            f"{config.group(1) if config else spec} is not valid JSON ({detail}); restore the model's "
            "original config.json"
        )
    if "Unable to load weights from checkpoint file" in text:
        found = re.search(r"checkpoint file for '([^']+)'", text)
        weights = found.group(1) if found else spec
        blocked = next(
            (re.search(r"GLOBAL (\S+)", str(e)) for e in chain if "Weights only load failed" in str(e)), None
        )
        if blocked is not None or any("Weights only load failed" in str(e) for e in chain):
            what = f"would import {blocked.group(1)}" if blocked else "holds objects other than tensors"
            return (
                f"refusing to load {weights}: the pickle in it {what} when loaded, which could run code; "
                "use a .safetensors copy of the weights from a source you trust"
            )
        cause = first_line(chain[-1]) if len(chain) > 1 else "unreadable"
        return (
            f"cannot read the weights {weights} ({cause}): the file is corrupt, truncated or not a weights "
            "file; re-download or re-export the model"
        )
    return (
        f"cannot load a UNet2DModel from {spec!r}: {first_line(err)}; give a diffusers model folder "
        "(config.json + weights) or a hub id, with --random-init if it holds only a config"
    )


def _require_readable(spec: str) -> None:
    """An unreadable folder looks empty to the format tests, so say what is really wrong first."""
    path = Path(spec)
    try:
        readable = not path.exists() or os.access(path, os.R_OK | (os.X_OK if path.is_dir() else 0))
    except PermissionError:  # a parent folder that may not be searched
        readable = False
    if not readable:
        raise ProbekitError(
            f"cannot read model {spec}: permission denied; make it readable (chmod -R u+rX {spec}) or copy it "
            "somewhere you can read"
        )


def _load_pixels(spec: str, options: LoadOptions) -> Backbone:
    if options.random_init:
        raise ProbekitError("the pixels model has no weights to re-initialise: drop --random-init")
    return PixelsBackbone()


FORMATS: dict[str, ModelFormat] = {
    "pixels": ModelFormat("pixels", "raw pixels in [0, 1] (baseline)", lambda s: s == "pixels", _load_pixels),
    # Before the hub entry: ddae:dir/cfg.yaml:ckpt.pth has one '/' and would look like a hub id.
    "ddae": ModelFormat(
        "ddae", "DDAE's own checkpoints: ddae:CONFIG.yaml:CHECKPOINT.pth[#EMA|#MODEL]", is_ddae_spec, load_ddae
    ),
    # Before the UNet entries: a DiT folder also has a config.json, and dit:OWNER/NAME looks like a hub id.
    "dit": ModelFormat(
        "dit",
        "DiT over VAE latents: dit:PATH.pt[?config=DiT-XL/2&vae=...], dit:OWNER/NAME, or a DiT transformer/pipeline "
        "folder",
        recognises_dit,
        load_dit,
    ),
    "hf-vision": ModelFormat(
        "hf-vision",
        "transformers vision encoder, noise-free (DINOv2, CLIP vision, ViT): hf-vision:FOLDER_OR_HUB_ID",
        recognises_vision,
        load_vision,
    ),
    "sd": ModelFormat(
        "sd",
        "Stable Diffusion pipeline, 1.x/2.x/XL (UNet2DConditionModel) or 3 (SD3Transformer2DModel), over VAE latents: "
        "sd:FOLDER_OR_HUB_ID",
        recognises_sd,
        load_sd,
    ),
    "sit": ModelFormat(
        "sit", "SiT (flow matching) over VAE latents: sit:PATH.pt[?config=SiT-XL/2&vae=...]", recognises_sit, load_sit
    ),
    "diffusers-unet": ModelFormat(
        "diffusers-unet",
        "diffusers UNet2DModel folder (config.json + weights, or a pipeline with unet/ and scheduler/)",
        _is_diffusers_unet_dir,
        _load_diffusers_unet,
    ),
    "diffusers-hub": ModelFormat(
        "diffusers-hub",
        "hub id of a UNet2DModel, e.g. google/ddpm-cifar10-32 (needs network)",
        _looks_like_hub_id,
        _load_diffusers_unet,
    ),
}


def _weights_key(spec: str, options: LoadOptions, backbone: Backbone) -> str | None:
    """The key weight hashes are remembered under (:mod:`.weight_hash`), or None when some weights
    may come from the hub: a latent transformer whose VAE is neither ``vae=PATH`` nor a pipeline's.
    """
    sources = local_sources(spec)
    if getattr(backbone, "vae", None) is not None and not backbone.framework.startswith("stable-diffusion"):
        named = re.search(r"vae=([^&,]+)", spec)
        local_vae = named is not None and Path(named.group(1)).expanduser().exists()
        if not local_vae and not any(source.is_dir() and (source / "vae").is_dir() for source in sources):
            return None
    return files_key(spec, sources, f"random_init={options.random_init},seed={options.seed},{type(backbone).__name__}")


def load_backbone(
    spec: str, *, random_init: bool = False, seed: int = 0, device: str | torch.device = "cpu"
) -> Backbone:
    """Load ``spec`` with the first format that recognises it and move it to ``device``."""
    options = LoadOptions(random_init=random_init, seed=seed)
    _require_readable(spec)
    for model_format in FORMATS.values():
        if model_format.recognises(spec):
            backbone = model_format.load(spec, options)
            backbone.weights_key = _weights_key(spec, options, backbone)
            return backbone.to(device)
    if not Path(spec).exists():
        raise ProbekitError(
            f"model {spec!r} not found: give a model folder, a hub id (owner/name), "
            "ddae:CONFIG.yaml:CHECKPOINT.pth, dit:CHECKPOINT.pt, sit:CHECKPOINT.pt, hf-vision:FOLDER, sd:PIPELINE, or "
            "'pixels'"
        )
    known = "; ".join(f"{f.name}: {f.description}" for f in FORMATS.values())
    raise ProbekitError(f"{spec!r} is not a model probekit can read (known formats: {known})")
