"""Where named datasets are looked for on disk, and where downloads go.

Without an explicit ``root``, a dataset stored in folder ``F`` is searched, in order, at
``$PROBEKIT_DATA/F``, ``~/.cache/probekit/F`` and ``/usr/share/datasets/F`` (Debian's dataset
packages install there). With ``root``, only ``root/F`` and ``root`` itself are tried, so both
``root="~/data"`` and ``root="~/data/fashion-mnist"`` work.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from probekit.core.errors import ProbekitError

# Read-only locations that system packages populate; a module constant so tests can replace it.
SYSTEM_DATA_DIRS: tuple[Path, ...] = (Path("/usr/share/datasets"),)


def candidate_dirs(folder: str, root: str | os.PathLike | None) -> list[Path]:
    """The directories that may hold dataset folder ``folder``, in search order."""
    if root is not None:
        root = Path(root).expanduser()
        return [root / folder, root]
    return [base / folder for base in _default_bases()] + [d / folder for d in SYSTEM_DATA_DIRS]


def find_dataset_dir(folder: str, root: str | os.PathLike | None, is_complete: Callable[[Path], bool]) -> Path | None:
    """The first candidate directory for which ``is_complete`` holds, or None."""
    for candidate in candidate_dirs(folder, root):
        if candidate.is_dir() and is_complete(candidate):
            return candidate
    return None


def require_dataset_dir(
    name: str,
    folder: str,
    root: str | os.PathLike | None,
    is_complete: Callable[[Path], bool],
    how_to_get: str,
) -> Path:
    """Like :func:`find_dataset_dir` but raise a message listing the places tried."""
    found = find_dataset_dir(folder, root, is_complete)
    if found is None:
        tried = ", ".join(str(d) for d in candidate_dirs(folder, root))
        raise ProbekitError(f"{name} not found (looked in {tried}); {how_to_get}")
    return found


def download_dir(folder: str, root: str | os.PathLike | None) -> Path:
    """Where a download of dataset folder ``folder`` is written (the first writable location)."""
    if root is not None:
        return Path(root).expanduser() / folder
    return _default_bases()[0] / folder


def _default_bases() -> list[Path]:
    # Read at call time, not import time, so a changed $PROBEKIT_DATA or $HOME takes effect.
    bases = [Path(os.environ["PROBEKIT_DATA"]).expanduser()] if os.environ.get("PROBEKIT_DATA") else []
    return bases + [Path.home() / ".cache" / "probekit"]
