"""What every model family's loader takes and shares, owned below the registry that dispatches to them."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass


@dataclass(frozen=True)
class LoadOptions:
    """``random_init``: same architecture, fresh weights drawn with ``seed`` (the control baseline)."""

    random_init: bool = False
    seed: int = 0


@contextmanager
def quiet_diffusers(level: int = logging.ERROR) -> Iterator[None]:
    """Diffusers' own log at ``level`` and above only, while loading.

    diffusers warns on every load that `accelerate` is absent (probekit does not need it); real
    failures reach the caller as exceptions.
    """
    from diffusers.utils import logging as diffusers_logging

    verbosity = diffusers_logging.get_verbosity()
    diffusers_logging.set_verbosity(level)
    try:
        yield
    finally:
        diffusers_logging.set_verbosity(verbosity)
