"""Layer selection by exact name (or alias), glob, or depth index (negative from the end)."""

from __future__ import annotations

import difflib
import fnmatch
import re
from collections.abc import Sequence

from probekit.core.errors import ProbekitError
from probekit.core.types import LayerInfo


def select_layers(available: Sequence[LayerInfo], spec: str | Sequence[str] | None) -> list[str]:
    """Resolve a selection to canonical layer names in forward order, without duplicates.

    ``spec`` is None / ``"all"`` (every layer), or comma-separated items (or a list of items), each
    an exact name or alias (``mid_block``), a glob (``up_blocks.*``), an index (``3``, ``-1``) or an
    index range (``2:5``) into the forward-ordered list.
    """
    ordered = sorted(available, key=lambda layer: layer.depth)
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
        chosen.update(_resolve(item, ordered, by_name))
    return [layer.name for layer in ordered if layer.name in chosen]


def _resolve(item: str, ordered: Sequence[LayerInfo], by_name: dict[str, str]) -> list[str]:
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
