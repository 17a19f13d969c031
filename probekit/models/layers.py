"""Layer selection by exact name (or alias), glob, or depth index (negative from the end), and of
activation kinds by ``HOST:KIND`` (or a glob over it, e.g. ``*attn1:q``, ``*:q``).
"""

from __future__ import annotations

import difflib
import fnmatch
import re
from collections.abc import Sequence

from probekit.core.errors import ProbekitError
from probekit.core.types import LayerInfo

#: separates a kind layer's host module from its kind (:mod:`probekit.models.kinds`)
KIND_SEPARATOR = ":"


def is_kind_item(item: str) -> bool:
    """Whether a selection item names activation kinds (``HOST:KIND``), not a depth range (``2:5``)."""
    if KIND_SEPARATOR not in item:
        return False
    kind = item.rsplit(KIND_SEPARATOR, 1)[1]
    return bool(kind) and not kind.lstrip("-").isdigit()


def wants_kinds(spec: str | Sequence[str] | None) -> bool:
    """Whether a selection names any activation kind (then the kind layers must be listed too)."""
    if spec is None:
        return False
    items = spec.split(",") if isinstance(spec, str) else [str(s) for s in spec]
    return any(is_kind_item(item.strip()) for item in items)


def select_layers(available: Sequence[LayerInfo], spec: str | Sequence[str] | None) -> list[str]:
    """Resolve a selection to canonical layer names in forward order, without duplicates.

    ``spec`` is None / ``"all"`` (every block output), or comma-separated items (or a list of items),
    each an exact name or alias (``mid_block``), a glob (``up_blocks.*``), an index (``3``, ``-1``)
    or an index range (``2:5``) into the forward-ordered block outputs, or an activation kind
    ``HOST:KIND`` or a glob over those names (``*attn1:q``, ``*:q``); ``all,*:*`` is every block
    output and every kind. Names, globs and indices
    without a kind select block outputs only; ``available`` may list kind layers too.
    """
    everything = sorted(available, key=lambda layer: layer.depth)
    kinds = [layer.name for layer in everything if KIND_SEPARATOR in layer.name]
    ordered = [layer for layer in everything if KIND_SEPARATOR not in layer.name]
    if spec is None or spec == "all" or spec == ["all"]:
        return [layer.name for layer in ordered]
    items = [s.strip() for s in spec.split(",")] if isinstance(spec, str) else [str(s).strip() for s in spec]
    items = [s for s in items if s]
    if not items:
        raise ProbekitError("empty layer selection: give names, globs or indices, or leave --layers out")

    by_name = {layer.name: layer.name for layer in ordered}
    for layer in ordered:
        for alias in layer.aliases:
            by_name[alias] = layer.name
    chosen: set[str] = set()
    for item in items:
        chosen.update(_resolve_kinds(item, kinds) if is_kind_item(item) else _resolve(item, ordered, by_name))
    return [layer.name for layer in everything if layer.name in chosen]


def _resolve_kinds(item: str, kinds: Sequence[str]) -> list[str]:
    if item in kinds:
        return [item]
    picked = fnmatch.filter(kinds, item) if any(ch in item for ch in "*?[") else []
    if picked:
        return picked
    close = difflib.get_close_matches(item, list(kinds), n=4, cutoff=0.6)
    hint = f"; close matches: {', '.join(close)}" if close else ""
    raise ProbekitError(
        f"activation {item!r} matches no kind layer of this model{hint}: run `probekit layers --kinds --model ...` "
        "to list them"
    )


def _resolve(item: str, ordered: Sequence[LayerInfo], by_name: dict[str, str]) -> list[str]:
    if item == "all":  # beside kinds: every block output
        return [layer.name for layer in ordered]
    if item in by_name:
        return [by_name[item]]
    if re.fullmatch(r"-?\d+", item):
        index = int(item)
        if not -len(ordered) <= index < len(ordered):
            raise ProbekitError(
                f"layer index {index} is out of range: this model has {len(ordered)} layers (0..{len(ordered) - 1}, or "
                "-1 for the last)"
            )
        return [ordered[index].name]
    if re.fullmatch(r"-?\d*:-?\d*", item):
        start, stop = (int(p) if p else None for p in item.split(":"))
        picked = [layer.name for layer in ordered[start:stop]]
        if not picked:
            raise ProbekitError(f"layer range {item!r} selects nothing: this model has {len(ordered)} layers")
        return picked
    if any(ch in item for ch in "*?["):
        picked = sorted({by_name[name] for name in fnmatch.filter(by_name, item)})
        if not picked:
            raise ProbekitError(
                f"layer pattern {item!r} matches no layer: run `probekit layers --model ...` to list them"
            )
        return picked
    close = difflib.get_close_matches(item, list(by_name), n=4, cutoff=0.5)
    hint = f"; close matches: {', '.join(close)}" if close else "; run `probekit layers --model ...` to list them"
    raise ProbekitError(f"unknown layer {item!r}{hint}")
