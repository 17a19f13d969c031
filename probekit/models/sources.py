"""Telling a local folder from a hub id, so that errors speak of the one the user meant."""

from __future__ import annotations

import json
from pathlib import Path

from probekit.core.errors import ProbekitError


def looks_local(source: str) -> bool:
    """True for what can only be a path: absolute, ``./``, ``../`` or ``~``, a trailing slash, a
    backslash, or more than one slash (a hub id is ``OWNER/NAME``), or anything that exists on disk.
    """
    if Path(source).expanduser().exists():
        return True
    return (
        source.startswith(("/", "./", "../", "~", ".\\"))
        or source.endswith("/")
        or "\\" in source
        or source.count("/") > 1
    )


def require_existing_folder(source: str, prefix: str, expected: str) -> None:
    """Refuse a local-looking ``source`` that does not exist, or that is a file, naming it and what to give."""
    path = Path(source).expanduser()
    if not looks_local(source):
        return
    if not path.exists():
        raise ProbekitError(f"{prefix} folder {source} not found: give the path of {expected}")
    if not path.is_dir():
        raise ProbekitError(f"{prefix}{source} is a file, not a folder: give the folder of {expected}")


def folder_contents(path: Path) -> str:
    """A short description of what a folder holds: its model class when config.json names one, and its entries."""
    entries = sorted(child.name + ("/" if child.is_dir() else "") for child in path.iterdir())
    shown = (
        ", ".join(entries[:6]) + (f" and {len(entries) - 6} more" if len(entries) > 6 else "") if entries else "nothing"
    )
    config = path / "config.json"
    if config.is_file():
        try:
            name = json.loads(config.read_text()).get("_class_name") or json.loads(config.read_text()).get("model_type")
        except (OSError, ValueError, AttributeError):
            name = None
        if name:
            return f"a {name} ({shown})"
    return shown
