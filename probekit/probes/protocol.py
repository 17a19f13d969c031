"""What a probe receives and returns under the evaluation protocol, and the choice made on val.

Every probe is called on a :class:`ProbeTask`: the train features of a group of cells, and the
features of the splits it must predict ("val", held out of train, and "test"). It returns one
:class:`ProbeOutcome` per cell: predictions for every split, and the setting it used. A probe
that searches a setting (C, k, temperature, ...) picks it per cell on ``task.select_on`` with
:func:`choose_per_cell`; that split is "val" unless the run has no validation split.

Train features come in one of two shapes per cell:
- ``(N, C)``: one vector per train image (the mean over the cache's noise draws);
- ``(S, N, C)``: S slots per image, each one (augmented view, noise draw) pair. Epoch-based
  probes draw one slot per image per epoch (DDAE's fresh noise and crop each epoch); the others
  use every slot as a training row (:meth:`ProbeTask.stacked`).
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

import numpy as np

K = TypeVar("K", bound=Hashable)
P = TypeVar("P")


@dataclass(frozen=True)
class ProbeTask(Generic[K]):
    """A group of cells to probe. Labels are int64 class ids in 0..num_classes-1.

    Attributes:
        train: cell -> train features, (N, C) or (S, N, C) (see the module docstring).
        y_train: (N,) labels of the train images.
        evals: split name ("val", "test") -> cell -> (N_split, C) features.
        y_evals: split name -> (N_split,) labels.
        num_classes: classifier outputs.
        select_on: the split every per-cell choice is made on ("val", or "test" without one).
    """

    train: Mapping[K, np.ndarray]
    y_train: np.ndarray
    evals: Mapping[str, Mapping[K, np.ndarray]]
    y_evals: Mapping[str, np.ndarray]
    num_classes: int
    select_on: str = "val"

    @property
    def cells(self) -> list[K]:
        return list(self.train)

    @property
    def has_slots(self) -> bool:
        return next(iter(self.train.values())).ndim == 3

    def stacked(self) -> tuple[dict[K, np.ndarray], np.ndarray]:
        """Train features as 2-D rows: every slot of every image a row, labels repeated."""
        if not self.has_slots:
            return dict(self.train), self.y_train
        slots = next(iter(self.train.values())).shape[0]
        rows = {key: x.reshape(-1, x.shape[-1]) for key, x in self.train.items()}
        return rows, np.tile(self.y_train, slots)


@dataclass
class ProbeOutcome:
    """One cell's result: predicted class per image of each split, and the setting used."""

    predictions: dict[str, np.ndarray]
    params: str = ""
    extra: dict[str, object] = field(default_factory=dict)


def accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    return float(np.mean(np.asarray(y_true) == np.asarray(y_pred)))


def choose_per_cell(
    task: ProbeTask[K],
    candidates: Sequence[tuple[str, Mapping[K, Mapping[str, np.ndarray]]]],
) -> dict[K, ProbeOutcome]:
    """For each cell, the candidate setting with the best ``task.select_on`` accuracy.

    ``candidates`` is a list of ``(setting label, cell -> split -> predictions)``; ties go to the
    earlier candidate, so list settings from the most to the least regularised (or the default
    first) to make ties deterministic and conservative.
    """
    y_select = task.y_evals[task.select_on]
    out: dict[K, ProbeOutcome] = {}
    for key in task.cells:
        best_label, best_preds, best_acc = None, None, -1.0
        for label, per_cell in candidates:
            acc = accuracy(y_select, per_cell[key][task.select_on])
            if acc > best_acc:
                best_label, best_preds, best_acc = label, per_cell[key], acc
        assert best_preds is not None and best_label is not None
        out[key] = ProbeOutcome(predictions=dict(best_preds), params=best_label)
    return out
