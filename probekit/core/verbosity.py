"""One switch for how much probekit says: progress bars and log messages.

Three levels: ``quiet`` (no progress bars: the plan, the work and what was written are still
printed, as they are a command's output), ``info`` (the default: those messages with progress
bars) and ``debug`` (debug messages too, for bug reports). The level comes from
:func:`set_verbosity` (the command line's ``--quiet`` / ``--verbose``, on every command), else
from the environment variable ``PROBEKIT_VERBOSITY``; a function's own ``progress=False`` still
turns its bar off.
"""

from __future__ import annotations

import logging
import os

#: verbosity name -> level of the ``probekit`` logger
LEVELS = {"quiet": logging.INFO, "info": logging.INFO, "debug": logging.DEBUG}
#: environment variable that sets the level when no command or call does
ENV = "PROBEKIT_VERBOSITY"

_chosen: str | None = None


def verbosity() -> str:
    """The level in effect: the one set last, else ``$PROBEKIT_VERBOSITY``, else ``info``."""
    if _chosen is not None:
        return _chosen
    from_env = os.environ.get(ENV, "").strip().lower()
    return from_env if from_env in LEVELS else "info"


def set_verbosity(name: str | None) -> None:
    """Set the level for this process (None: back to the environment's); applies it to the logger."""
    global _chosen
    if name is not None and name not in LEVELS:
        from probekit.core.errors import ProbekitError

        raise ProbekitError(f"unknown verbosity {name!r}: use {', '.join(LEVELS)}")
    _chosen = name
    logging.getLogger("probekit").setLevel(LEVELS[verbosity()])


def progress_enabled(requested: bool = True) -> bool:
    """Whether to draw a progress bar: asked for by the caller and allowed by the level."""
    return requested and verbosity() != "quiet"
