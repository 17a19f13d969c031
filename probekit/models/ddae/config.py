"""DDAE's YAML training config -> typed dataclasses (only what the network and the noise need).

A DDAE config (``config/*.yaml`` in github.com/FutureXiang/ddae) has top-level ``model_type``
(``DDPM`` | ``EDM``), ``net_type`` (``UNet``; the "DDPM++" variants are the same class with
``use_res_for_updown: True``), a ``network`` mapping passed to the UNet as keyword arguments and a
``diffusion`` mapping passed to the diffusion wrapper. Training, sampling and probing keys
(``n_epoch``, ``linear``, ...) are ignored here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import yaml

from probekit.core.errors import ProbekitError

#: every GroupNorm inside DDAE's residual and attention blocks uses 32 groups
NORM_GROUPS = 32
#: the GroupNorm before the output convolution uses 8 groups
FINAL_NORM_GROUPS = 8


@dataclass(frozen=True)
class NetworkConfig:
    """The ``network`` section; defaults are those of DDAE's UNet constructor."""

    image_shape: tuple[int, int, int] = (3, 32, 32)  # (channels, height, width)
    n_channels: int = 128  # width after the stem; stage i has n_channels * ch_mults[i]
    ch_mults: tuple[int, ...] = (1, 2, 2, 2)
    is_attn: tuple[bool, ...] = (False, True, False, False)
    attn_channels_per_head: int | None = None  # None: one head spanning all channels
    dropout: float = 0.1
    n_blocks: int = 2  # residual blocks per resolution on the way down (n_blocks + 1 on the way up)
    use_res_for_updown: bool = False  # True: BigGAN-style residual resampling (DDPM++ variant)
    augment_dim: int = 0  # > 0: an (unused at probe time) augmentation-label embedding exists

    @property
    def time_channels(self) -> int:
        return 4 * self.n_channels

    def stage_channels(self) -> list[int]:
        return [self.n_channels * mult for mult in self.ch_mults]


@dataclass(frozen=True)
class DDPMParams:
    """``diffusion`` of a DDPM model: ``n_T`` steps, linear betas from ``betas[0]`` to ``betas[1]``."""

    n_T: int
    beta_1: float
    beta_T: float


@dataclass(frozen=True)
class EDMParams:
    """``diffusion`` of an EDM model (noise levels in the [-1, 1] pixel scale)."""

    sigma_data: float
    sigma_min: float
    sigma_max: float
    rho: float


@dataclass(frozen=True)
class DDAEConfig:
    model_type: str  # "DDPM" | "EDM"
    net_type: str  # "UNet"
    network: NetworkConfig
    diffusion: DDPMParams | EDMParams
    path: str = ""


def read_config(path: str | Path) -> DDAEConfig:
    """Parse a DDAE YAML config; every problem is a one-line :class:`ProbekitError`."""
    path = Path(path)
    if not path.is_file():
        raise ProbekitError(
            f"DDAE config {path} not found: give the YAML the checkpoint was trained with (config/*.yaml)"
        )
    try:
        raw = yaml.safe_load(path.read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ProbekitError(f"cannot parse DDAE config {path}: {first}; fix the YAML") from err
    if not isinstance(raw, dict):
        raise ProbekitError(f"DDAE config {path} is not a YAML mapping: give a DDAE config/*.yaml file")
    where = str(path)
    model_type = raw.get("model_type")
    if model_type not in ("DDPM", "EDM"):
        raise ProbekitError(f"{where}: model_type is {model_type!r}; DDAE configs use 'DDPM' or 'EDM'")
    net_type = raw.get("net_type", "UNet")
    if net_type != "UNet":
        raise ProbekitError(f"{where}: net_type {net_type!r} is not supported: DDAE's networks are all 'UNet'")
    network = _network(_section(raw, "network", where), where)
    section = _section(raw, "diffusion", where)
    diffusion = _ddpm(section, where) if model_type == "DDPM" else _edm(section, where)
    return DDAEConfig(model_type=model_type, net_type=net_type, network=network, diffusion=diffusion, path=where)


def _section(raw: Mapping[str, Any], key: str, where: str) -> Mapping[str, Any]:
    value = raw.get(key)
    if not isinstance(value, dict):
        raise ProbekitError(f"{where}: the '{key}' section is missing or not a mapping; give a DDAE config/*.yaml file")
    return value


def _number(section: Mapping[str, Any], key: str, where: str, *, integer: bool = False) -> Any:
    if key not in section:
        raise ProbekitError(f"{where}: '{key}' is missing; add it (see DDAE's config/*.yaml)")
    value = section[key]
    try:
        if isinstance(value, bool):
            raise ValueError
        number = float(value)  # PyYAML reads 1e-4 (no dot) as a string; float() accepts it
        if integer:
            if number != int(number):
                raise ValueError
            return int(number)
        return number
    except (TypeError, ValueError):
        kind = "an integer" if integer else "a number"
        raise ProbekitError(f"{where}: '{key}' is {value!r}, expected {kind}") from None


def _int_list(value: Any, key: str, where: str) -> tuple[int, ...]:
    if (
        not isinstance(value, (list, tuple))
        or not value
        or not all(isinstance(v, int) and not isinstance(v, bool) for v in value)
    ):
        raise ProbekitError(f"{where}: network.{key} is {value!r}, expected a list of integers")
    return tuple(value)


def _network(section: Mapping[str, Any], where: str) -> NetworkConfig:
    known = {f.name for f in fields(NetworkConfig)}
    unknown = sorted(set(section) - known)
    if unknown:
        raise ProbekitError(f"{where}: unknown network keys {unknown}; DDAE's UNet takes {sorted(known)}")
    defaults = NetworkConfig()
    values: dict[str, Any] = {}
    values["image_shape"] = _int_list(section.get("image_shape", defaults.image_shape), "image_shape", where)
    if len(values["image_shape"]) != 3:
        raise ProbekitError(
            f"{where}: network.image_shape must be [channels, height, width], got {list(values['image_shape'])}"
        )
    values["ch_mults"] = _int_list(section.get("ch_mults", defaults.ch_mults), "ch_mults", where)
    is_attn = section.get("is_attn", defaults.is_attn)
    if not isinstance(is_attn, (list, tuple)) or not all(isinstance(v, bool) for v in is_attn):
        raise ProbekitError(f"{where}: network.is_attn is {is_attn!r}, expected a list of true/false")
    values["is_attn"] = tuple(is_attn)
    for key in ("n_channels", "n_blocks", "augment_dim"):
        values[key] = _number(section, key, where, integer=True) if key in section else getattr(defaults, key)
    values["dropout"] = _number(section, "dropout", where) if "dropout" in section else defaults.dropout
    head = section.get("attn_channels_per_head")
    values["attn_channels_per_head"] = (
        None if head is None else _number(section, "attn_channels_per_head", where, integer=True)
    )
    values["use_res_for_updown"] = bool(section.get("use_res_for_updown", defaults.use_res_for_updown))
    config = NetworkConfig(**values)
    _check_network(config, where)
    return config


def _check_network(config: NetworkConfig, where: str) -> None:
    """Refuse configs DDAE's own code could not build, before any tensor is allocated."""
    levels = len(config.ch_mults)
    if len(config.is_attn) < levels:
        raise ProbekitError(
            f"{where}: network.is_attn has {len(config.is_attn)} entries for {levels} ch_mults; give one per resolution"
        )
    if config.n_blocks < 1 or config.n_channels < 1 or min(config.ch_mults) < 1:
        raise ProbekitError(f"{where}: n_channels, n_blocks and ch_mults must be positive")
    for width in [config.n_channels, *config.stage_channels()]:
        if width % NORM_GROUPS:
            raise ProbekitError(
                f"{where}: stage width {width} is not a multiple of {NORM_GROUPS} (DDAE's GroupNorm groups); fix "
                "n_channels/ch_mults"
            )
    head = config.attn_channels_per_head
    if head is not None and any(attn and width < head for attn, width in zip(config.is_attn, config.stage_channels())):
        raise ProbekitError(f"{where}: attn_channels_per_head {head} exceeds an attention stage's width; lower it")
    _, height, width = config.image_shape
    factor = 2 ** (levels - 1)
    if height % factor or width % factor:
        raise ProbekitError(
            f"{where}: image_shape {list(config.image_shape)} is not divisible by {factor} ({levels} resolutions)"
        )


def _ddpm(section: Mapping[str, Any], where: str) -> DDPMParams:
    n_T = _number(section, "n_T", where, integer=True)
    betas = section.get("betas")
    if not isinstance(betas, (list, tuple)) or len(betas) != 2:
        raise ProbekitError(f"{where}: diffusion.betas is {betas!r}, expected [beta_1, beta_T]")
    beta_1, beta_T = (_number({"betas": b}, "betas", where) for b in betas)
    if n_T < 1 or not 0.0 < beta_1 < beta_T < 1.0:
        raise ProbekitError(
            f"{where}: need n_T >= 1 and 0 < betas[0] < betas[1] < 1, got n_T={n_T}, betas={list(betas)}"
        )
    return DDPMParams(n_T=n_T, beta_1=beta_1, beta_T=beta_T)


def _edm(section: Mapping[str, Any], where: str) -> EDMParams:
    values = {key: _number(section, key, where) for key in ("sigma_data", "sigma_min", "sigma_max", "rho")}
    if not 0.0 < values["sigma_min"] < values["sigma_max"] or values["sigma_data"] <= 0 or values["rho"] <= 0:
        raise ProbekitError(f"{where}: need 0 < sigma_min < sigma_max, sigma_data > 0 and rho > 0, got {values}")
    return EDMParams(**values)
