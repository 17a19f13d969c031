"""The ``--model`` spec of a DiT: ``dit:SOURCE[?key=value&...]``, or a bare DiT folder.

See the package docstring (:mod:`probekit.models.dit`) for the syntax and every option.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from probekit.core.errors import ProbekitError

PREFIX = "dit:"
TEMB_CHOICES = ("original", "diffusers")
#: options that only make sense for an original .pt (a diffusers folder carries its own config)
_ORIGINAL_ONLY = ("config", "heads", "image_size")
_KNOWN = (*_ORIGINAL_ONLY, "vae", "temb")
_ORIGINAL_SUFFIXES = (".pt", ".pth")
#: ``vae=none``: a transformer trained on pixels (no latent encoder)
NO_VAE = "none"


@dataclass(frozen=True)
class DiTSpec:
    """A parsed DiT spec. ``source`` is a .pt path, a folder, or a hub id; the rest are options."""

    source: str
    config: str | None = None
    heads: int | None = None
    image_size: int | None = None
    vae: str | None = None
    temb: str | None = None

    @property
    def is_original(self) -> bool:
        """True for an original DiT checkpoint (a .pt / .pth file), False for diffusers layouts."""
        return self.source.lower().endswith(_ORIGINAL_SUFFIXES)


def _positive_int(key: str, value: str) -> int:
    if not value.isdigit() or int(value) < 1:
        raise ProbekitError(f"DiT option {key}={value!r} is not a positive integer: give e.g. {key}=16")
    return int(value)


def parse_spec(spec: str) -> DiTSpec:
    """``dit:SOURCE?config=DiT-XL/2&vae=ID`` (or a bare folder) -> :class:`DiTSpec`."""
    body = spec[len(PREFIX) :] if spec.startswith(PREFIX) else spec
    source, _, query = body.partition("?")
    if not source:
        raise ProbekitError(f"{spec!r} names no checkpoint: write dit:PATH.pt, dit:FOLDER or dit:OWNER/NAME")
    options: dict[str, str] = {}
    for item in filter(None, query.split("&")):
        key, sep, value = item.partition("=")
        if not sep or not value:
            raise ProbekitError(
                f"DiT option {item!r} in {spec!r} has no value: write key=value, e.g. vae=stabilityai/sd-vae-ft-mse"
            )
        if key not in _KNOWN:
            raise ProbekitError(f"unknown DiT option {key!r} in {spec!r}: use {', '.join(_KNOWN)}")
        options[key] = value
    parsed = DiTSpec(
        source=source,
        config=options.get("config"),
        heads=_positive_int("heads", options["heads"]) if "heads" in options else None,
        image_size=_positive_int("image_size", options["image_size"]) if "image_size" in options else None,
        vae=options.get("vae"),
        temb=options.get("temb"),
    )
    if parsed.temb is not None and parsed.temb not in TEMB_CHOICES:
        raise ProbekitError(f"DiT option temb={parsed.temb!r} is not one of {', '.join(TEMB_CHOICES)}")
    if not parsed.is_original:
        given = [key for key in _ORIGINAL_ONLY if key in options]
        if given:
            raise ProbekitError(
                f"DiT option(s) {', '.join(given)} apply to original .pt checkpoints only; "
                f"{source!r} carries its own config.json: drop them"
            )
    return parsed


def _dit_config(path: Path) -> bool:
    """Whether ``path`` (a config.json) describes a DiT transformer."""
    try:
        config = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return False
    name = config.get("_class_name")
    if name == "DiTTransformer2DModel":
        return True
    # Early diffusers saved DiTs as a patched, class-conditional Transformer2DModel.
    return (
        name == "Transformer2DModel"
        and config.get("patch_size") is not None
        and config.get("num_embeds_ada_norm") is not None
        and config.get("cross_attention_dim") is None
        and config.get("norm_type") in (None, "ada_norm_zero")
    )


def transformer_folder(path: Path) -> tuple[Path, str | None] | None:
    """(folder, subfolder) of the DiT in a transformer folder or a pipeline folder, else None."""
    if not path.is_dir():
        return None
    if _dit_config(path / "transformer" / "config.json"):
        return path, "transformer"
    if _dit_config(path / "config.json"):
        return path, None
    return None


def recognises(spec: str) -> bool:
    """``dit:...`` specs, and bare folders holding a DiT transformer or a DiT pipeline."""
    return spec.startswith(PREFIX) or transformer_folder(Path(spec)) is not None
