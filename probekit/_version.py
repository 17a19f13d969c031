"""The package version, in a module of its own so that any layer can read it without importing the package root.

``RELEASE`` is the release this code is (git tag ``v{RELEASE}``; CHANGELOG.md). Run from a git
checkout (an editable install, the way this project is run from a clone), ``__version__`` adds the
commit as a PEP 440 local label, and ``dirty`` for uncommitted changes (``0.2.0+g1a2b3c4.dirty``),
so the ``probekit_version`` stamped into every cache and report identifies the code that wrote
it. Installed from a wheel, it is ``RELEASE`` alone.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

RELEASE = "0.2.0"


def _build_label() -> str:
    """``gHASH[.dirty]`` of the checkout this module lives in, or "" outside a git checkout."""
    root = Path(__file__).resolve().parent.parent
    if not (root / ".git").exists():
        return ""
    try:
        commit = subprocess.run(
            ["git", "describe", "--always", "--dirty", "--abbrev=7", "--exclude", "*"],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""
    dirty = commit.endswith("-dirty")
    return f"g{commit.removesuffix('-dirty')}" + (".dirty" if dirty else "")


_label = _build_label()
__version__ = f"{RELEASE}+{_label}" if _label else RELEASE
