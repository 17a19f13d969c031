"""Random-init twins: the same architecture with fresh weights, drawn under a seed.

Every loader builds its twin's network inside :func:`seeded` (the module constructors' default
initialisation, as training starts) and names it with :func:`model_id`; no weights file is read.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch


@contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Construct modules under ``seed`` without touching the caller's global RNG (CPU generator)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def model_id(spec: str, random_init: bool, seed: int) -> str:
    """``spec``, or ``"SPEC (random init, seed S)"`` for a twin: what caches and results record."""
    return f"{spec} (random init, seed {seed})" if random_init else spec
