"""Load a DiT (original .pt or diffusers layout) and its VAE into a :class:`DiTBackbone`."""

from __future__ import annotations

import argparse
import json
import logging
import pickle
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from probekit.core.errors import ProbekitError, first_line
from probekit.core.schedule import DDPMSchedule, FlowMatchingSchedule
from probekit.models.dit.backbone import DiTBackbone, SiTBackbone, vae_scale_factor
from probekit.models.dit.configs import OriginalShape, infer_original_shape, parse_config_name
from probekit.models.dit.convert import check_original_keys, diffusers_config, few_keys, original_to_diffusers
from probekit.models.dit.spec import NO_VAE, DiTSpec, parse_spec, transformer_folder
from probekit.models.options import LoadOptions, quiet_diffusers
from probekit.models.random_init import model_id, seeded

log = logging.getLogger(__name__)

#: the VAE DiT was trained and evaluated with (DiT's train.py default)
DEFAULT_VAE = "stabilityai/sd-vae-ft-ema"
#: checkpoints published with DiT, fetched on first use like DiT's own download.py does
OFFICIAL_CHECKPOINTS = ("DiT-XL-2-256x256.pt", "DiT-XL-2-512x512.pt")
OFFICIAL_URL = "https://dl.fbaipublicfiles.com/DiT/models/{name}"


# ----------------------------------------------------------------------------- original .pt


def _original_path(source: str) -> Path:
    path = Path(source).expanduser()
    if path.is_file():
        return path
    if source in OFFICIAL_CHECKPOINTS:
        return _download_official(source)
    raise ProbekitError(
        f"DiT checkpoint {source!r} not found: give the path of a .pt file, or one of "
        f"{', '.join(OFFICIAL_CHECKPOINTS)} to download it"
    )


def _download_official(name: str) -> Path:
    target = Path(torch.hub.get_dir()) / "checkpoints" / "DiT" / name
    if not target.is_file():
        url = OFFICIAL_URL.format(name=name)
        log.info("downloading %s -> %s", url, target)
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            torch.hub.download_url_to_file(url, str(target), progress=True)
        except Exception as err:  # noqa: BLE001 -- urllib raises many types; all mean "no file"
            raise ProbekitError(
                f"cannot download {url}: {first_line(err)}; download it by hand and give its path"
            ) from err
    return target


def read_original_state(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of an original DiT .pt: a bare state dict, or the ``ema`` entry of a train.py checkpoint."""
    try:
        # train.py checkpoints also pickle their argparse Namespace; allow that class and nothing else.
        with torch.serialization.safe_globals([argparse.Namespace]):
            loaded = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise ProbekitError(
            f"refusing to load {path}: it holds pickled objects besides tensors; re-save its state dict with torch.save"
        ) from err
    except Exception as err:  # noqa: BLE001 -- unpickling raises many types; all mean "unreadable"
        raise ProbekitError(
            f"cannot read {path} as a weights-only torch file: {first_line(err)}; re-save its state dict with "
            "torch.save"
        ) from err
    if isinstance(loaded, Mapping) and isinstance(loaded.get("ema"), Mapping):
        loaded = loaded["ema"]  # DiT's own loader prefers the EMA weights, which it samples with
    if not isinstance(loaded, Mapping) or not all(isinstance(v, torch.Tensor) for v in loaded.values()):
        raise ProbekitError(
            f"{path} does not hold a state dict of tensors: save model.state_dict() (or DiT's 'ema' entry)"
        )
    return dict(loaded)


def _original_heads(spec: DiTSpec, shape: OriginalShape) -> int:
    known = shape.known_size()
    if spec.config is not None:
        size = parse_config_name(spec.config)
        if (size.depth, size.hidden, size.patch) != (shape.depth, shape.hidden, shape.patch):
            found = f" ({known.name})" if known else ""
            raise ProbekitError(
                f"the weights are a {shape.describe()} DiT{found}, not {size.name} "
                f"({size.depth}, {size.hidden}, {size.patch}): fix config= or leave it out"
            )
        if spec.heads is not None and spec.heads != size.heads:
            raise ProbekitError(
                f"{size.name} has {size.heads} heads but heads={spec.heads} was given: keep one of the two"
            )
        return size.heads
    if spec.heads is not None:
        return spec.heads
    if known is not None:
        return known.heads
    raise ProbekitError(
        f"cannot tell the head count of a {shape.describe()} DiT from its weights: add ?heads=N "
        "(or ?config=DiT-XL/2 for a published size) to the spec"
    )


def _load_original(spec: DiTSpec, options: LoadOptions) -> tuple[nn.Module, DDPMSchedule]:
    from diffusers import DiTTransformer2DModel

    state = read_original_state(_original_path(spec.source))
    shape = infer_original_shape(state)
    check_original_keys(state, shape.depth)
    config = diffusers_config(shape, _original_heads(spec, shape))
    if options.random_init:
        with seeded(options.seed):
            return DiTTransformer2DModel(**config), DDPMSchedule()
    mapped, pos_embed = original_to_diffusers(state, shape.depth)
    # Build on the meta device and adopt the checkpoint's tensors: no throw-away random init and
    # no second copy of the weights (DiT-XL/2 is 2.7 GB in float32).
    with torch.device("meta"):
        net = DiTTransformer2DModel(**config)
    try:
        net.load_state_dict({k: v.float() for k, v in mapped.items()}, strict=True, assign=True)
    except RuntimeError as err:
        raise ProbekitError(
            f"the weights in {spec.source} do not fit a DiT ({first_line(err)}): check the checkpoint"
        ) from err
    expected = tuple(net.pos_embed.pos_embed.shape)
    if tuple(pos_embed.shape) != expected:
        raise ProbekitError(
            f"pos_embed has shape {tuple(pos_embed.shape)}, expected {expected}: the checkpoint is damaged"
        )
    # The stored grid embedding is what the network was trained with (a non-persistent buffer in diffusers).
    net.pos_embed.pos_embed = pos_embed.float().clone()
    # DiT's diffusion: linear betas 1e-4..0.02 over 1000 steps (diffusion/__init__.py defaults).
    return net, DDPMSchedule()


# ----------------------------------------------------------------------------- diffusers layout


def _diffusers_location(source: str) -> tuple[str, str | None, bool]:
    """(where, subfolder, local) of the DiTTransformer2DModel named by ``source``."""
    path = Path(source).expanduser()
    if path.exists():
        found = transformer_folder(path)
        if found is None:
            raise ProbekitError(
                f"{source} holds no DiT config.json (DiTTransformer2DModel), neither at its top nor in transformer/: "
                "give a diffusers DiT folder or an original .pt"
            )
        return str(found[0]), found[1], True
    from diffusers import DiTTransformer2DModel

    with quiet_diffusers():
        try:
            DiTTransformer2DModel.load_config(source, subfolder="transformer")
            return source, "transformer", False
        except Exception:  # noqa: BLE001 -- not a pipeline repo: try the repo root next
            return source, None, False


def _load_diffusers(
    spec: DiTSpec, options: LoadOptions
) -> tuple[nn.Module, DDPMSchedule, tuple[str, str | None] | None]:
    from diffusers import DiTTransformer2DModel

    where, subfolder, local = _diffusers_location(spec.source)
    kwargs = {"subfolder": subfolder} if subfolder else {}
    with quiet_diffusers():
        try:
            if options.random_init:
                config = DiTTransformer2DModel.load_config(where, **kwargs)
                with seeded(options.seed):
                    net = DiTTransformer2DModel.from_config(config)
            else:
                net, info = DiTTransformer2DModel.from_pretrained(
                    where, torch_dtype=torch.float32, output_loading_info=True, **kwargs
                )
                _require_all_keys(spec.source, info)
        except ProbekitError:
            raise
        except Exception as err:  # diffusers raises OSError/ValueError/EnvironmentError variants
            raise ProbekitError(
                f"cannot load a DiTTransformer2DModel from {spec.source!r}: {first_line(err)}; give a diffusers DiT "
                "folder or hub id (add --random-init if it holds only a config)"
            ) from err
    pipeline_vae = None
    if subfolder == "transformer":
        pipeline_vae = (where, "vae") if not local or (Path(where) / "vae" / "config.json").is_file() else None
    return net, DDPMSchedule.from_config(_scheduler_config(where, subfolder, local)), pipeline_vae


def _require_all_keys(source: str, info: Mapping[str, list[str]]) -> None:
    """Diffusers only warns about absent or extra weights and leaves absent ones random: refuse that."""
    missing, unexpected = set(info.get("missing_keys", [])), set(info.get("unexpected_keys", []))
    if missing or unexpected:
        parts = ([f"missing {few_keys(missing)}"] if missing else []) + (
            [f"unexpected {few_keys(unexpected)}"] if unexpected else []
        )
        raise ProbekitError(
            f"the weights in {source} do not match its config.json ({'; '.join(parts)}): "
            "use the config.json saved with these weights"
        )


def _scheduler_config(where: str, subfolder: str | None, local: bool) -> dict:
    """A pipeline's scheduler config, or {} (DDPM's linear 1e-4..0.02 over 1000 steps, as DiT trains)."""
    if subfolder != "transformer":
        return {}
    if local:
        candidate = Path(where) / "scheduler" / "scheduler_config.json"
        if not candidate.is_file():
            return {}
        try:
            return json.loads(candidate.read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise ProbekitError(f"cannot read scheduler config {candidate}: {err}; fix or delete it") from err
    from diffusers import DDPMScheduler

    with quiet_diffusers():
        try:
            return dict(DDPMScheduler.load_config(where, subfolder="scheduler"))
        except Exception:  # noqa: BLE001 -- a pipeline without a scheduler folder keeps the defaults
            return {}


# ----------------------------------------------------------------------------- VAE


def _load_vae(where: str, subfolder: str | None) -> nn.Module:
    from diffusers import AutoencoderKL

    local = Path(where).expanduser()
    target = str(local) if local.exists() else where
    # A hub id may name a bare VAE repo or a pipeline that keeps its VAE in vae/.
    attempts = [subfolder] if subfolder or local.exists() else [None, "vae"]
    error: Exception | None = None
    with quiet_diffusers():
        for sub in attempts:
            try:
                kwargs = {"subfolder": sub} if sub else {}
                return AutoencoderKL.from_pretrained(target, torch_dtype=torch.float32, **kwargs)
            except Exception as err:  # noqa: BLE001 -- try the next layout, report the first failure
                error = error or err
    raise ProbekitError(
        f"cannot load the VAE (AutoencoderKL) from {where!r}: {first_line(error)}; give vae=HUB_ID or vae=FOLDER "
        f"(default {DEFAULT_VAE})"
    )


def _vae_location(spec: DiTSpec, pipeline_vae: tuple[str, str | None] | None) -> tuple[str, str | None]:
    if spec.vae is not None:
        path = Path(spec.vae).expanduser()
        if path.is_dir() and (path / "vae" / "config.json").is_file():
            return spec.vae, "vae"  # a pipeline folder: use its VAE
        return spec.vae, None
    return pipeline_vae or (DEFAULT_VAE, None)


# ----------------------------------------------------------------------------- entry point


def load_dit(spec: str, options: LoadOptions) -> DiTBackbone:
    """Load a DiT ``--model`` spec (see :mod:`probekit.models.dit`) into a :class:`DiTBackbone`."""
    return _load(parse_spec(spec), spec, options, sit=False)


SIT_PREFIX = "sit:"


def recognises_sit(spec: str) -> bool:
    return spec.startswith(SIT_PREFIX)


def load_sit(spec: str, options: LoadOptions) -> SiTBackbone:
    """``sit:PATH.pt[?config=SiT-XL/2&vae=...&heads=N]``: an original SiT checkpoint (DiT's state-dict
    names and sizes) on the flow-matching schedule; the options are the DiT ones.
    """
    parsed = parse_spec(spec[len(SIT_PREFIX) :])
    if not parsed.is_original:
        raise ProbekitError(
            f"{spec!r}: sit: takes an original SiT checkpoint file (.pt or .pth), e.g. sit:SiT-XL-2-256.pt"
        )
    if not Path(parsed.source).expanduser().is_file():
        raise ProbekitError(f"SiT checkpoint {parsed.source!r} not found: give the path of a .pt file")
    return _load(parsed, spec, options, sit=True)  # type: ignore[return-value]


def _load(parsed: DiTSpec, spec: str, options: LoadOptions, *, sit: bool) -> DiTBackbone:
    if parsed.is_original:
        net, schedule = _load_original(parsed, options)
        pipeline_vae = None
    else:
        net, schedule, pipeline_vae = _load_diffusers(parsed, options)
    vae = None if parsed.vae == NO_VAE else _load_vae(*_vae_location(parsed, pipeline_vae))
    if parsed.image_size is not None:
        expected = net.config.sample_size * (vae_scale_factor(vae) if vae is not None else 1)
        if parsed.image_size != expected:
            raise ProbekitError(
                f"image_size={parsed.image_size} does not fit this DiT: its "
                f"{net.config.sample_size}x{net.config.sample_size} "
                f"inputs come from {expected}x{expected} images; give image_size={expected} or leave it out"
            )
    temb = parsed.temb or ("original" if parsed.is_original else "diffusers")
    name = model_id(spec, options.random_init, options.seed)
    if sit:  # SiT embeds its time exactly as the original DiT does (same TimestepEmbedder)
        return SiTBackbone(net, vae, FlowMatchingSchedule(data_at_one=True), name, original_temb=temb == "original")
    return DiTBackbone(net, vae, schedule, name, original_temb=temb == "original")
