"""What pretraining (:mod:`probekit.train.loop`) and fine-tuning (:mod:`probekit.analyses.finetune`)
share: the data order of an epoch, the randomness of a step, the learning-rate schedule, and the
atomic save and checked load of a training state.

Every random choice is a pure function of (seed, epoch) or (seed, step) through
:func:`probekit.core.noise.noise_seed`, on a *stream* of its own per use (a negative number, so it
never meets a sample's noise), which is what makes a resumed run replay an uninterrupted one.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import torch

from probekit.core.errors import ProbekitError
from probekit.core.noise import noise_seed


class EpochOrder:
    """Data order: a fresh permutation of ``n`` images per epoch, drawn from (seed, epoch) on ``stream``.

    ``drop_last``: the last partial batch of an epoch is dropped (fewer than one batch is refused),
    else kept as a shorter batch.
    """

    def __init__(self, n: int, batch_size: int, seed: int, *, stream: int, drop_last: bool) -> None:
        if drop_last and n < batch_size:
            raise ProbekitError(f"{n} training images is fewer than one batch of {batch_size}: lower batch_size")
        self.n, self.batch_size, self.seed, self.stream = n, batch_size, seed, stream
        self.steps_per_epoch = n // batch_size if drop_last else math.ceil(n / batch_size)
        self._epoch, self._perm = -1, torch.empty(0, dtype=torch.long)

    def batch(self, step: int) -> torch.Tensor:
        """Positions of the images of optimiser step ``step`` (counted from the run's start)."""
        epoch, position = divmod(step, self.steps_per_epoch)
        if epoch != self._epoch:
            generator = torch.Generator().manual_seed(noise_seed(self.seed, epoch, self.stream, 0))
            self._epoch, self._perm = epoch, torch.randperm(self.n, generator=generator)
        return self._perm[position * self.batch_size : (position + 1) * self.batch_size]


def step_generator(seed: int, step: int, stream: int) -> torch.Generator:
    """The generator of every random draw of optimiser step ``step``: a pure function of (seed, step)."""
    return torch.Generator().manual_seed(noise_seed(seed, step, stream, 0))


def lr_factor(step: int, warmup: int, total: int | None = None) -> float:
    """The learning rate's multiplier at ``step``: linear warm-up over ``warmup`` steps, then 1
    (``total`` None) or a cosine decay to 0 at step ``total``.
    """
    if step < warmup:
        return (step + 1) / warmup
    if total is None:
        return 1.0
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))


def atomic_save(obj: object, path: Path) -> None:
    """``torch.save`` to a temporary file beside ``path``, then renamed into place (never half-written)."""
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def load_state(path: Path, device: torch.device | str) -> dict:
    """A saved training state (tensors only: ``weights_only``), or a one-line error saying what to do."""
    try:
        return torch.load(path, map_location=device, weights_only=True)
    except Exception as err:  # noqa: BLE001 -- truncated zip, refused pickle, ...: all mean "unusable"
        raise ProbekitError(
            f"cannot resume from {path} ({str(err).splitlines()[0][:160]}): delete it to start the run over, "
            "or choose another --out"
        ) from err


__all__ = ["EpochOrder", "step_generator", "lr_factor", "atomic_save", "load_state"]
