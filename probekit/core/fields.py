"""Naming what differs between two nested records (model descriptions, plans)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def changed_fields(before: Any, after: Any, prefix: str = "") -> list[str]:
    """Dotted names of the fields that differ between two descriptions (``configs.vae.scaling_factor``)."""
    if isinstance(before, Mapping) and isinstance(after, Mapping):
        names = []
        for key in sorted(set(before) | set(after), key=str):
            where = f"{prefix}.{key}" if prefix else str(key)
            if key not in before or key not in after:
                names.append(where)
            else:
                names.extend(changed_fields(before[key], after[key], where))
        return names
    return [] if before == after else [prefix or "(the whole description)"]
