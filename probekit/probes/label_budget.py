"""Label efficiency: every cell probed on a few labelled train images per class.

For each budget ``k`` (labels per class) and each draw ``d``, the probes fit on ``k`` images of
every class drawn from the fit part of train (train minus the validation split), stratified and
seeded by ``(seed, k, d)``; the validation split and the test split stay the same for every budget
and draw, so val-chosen cells and test scores are comparable across budgets. Budget ``None``
("all") fits on the whole fit part once.

Every budget and draw is probed in one pass over the cache (:func:`probe_cache_subsets`): each
cell is read once, and the draws of one budget, whose fit rows are grouped by class and so carry
the same labels in the same order, are solved as one batched problem with every cell.

The results table is :func:`probekit.probes.run.probe_cache`'s, with two more columns:
``labels_per_class`` ("1", "5", ..., "all") and ``budget_draw`` (0-based draw number).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from probekit.core.errors import ProbekitError
from probekit.evaluate.results import with_kind
from probekit.probes.run import ProbeRunConfig, probe_cache_subsets

ALL = "all"


def parse_budgets(text: str) -> list[int | None]:
    """``"1,5,10,all"`` -> ``[1, 5, 10, None]`` (None: every fit image), in the order given."""
    budgets: list[int | None] = []
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        if item == ALL:
            budgets.append(None)
            continue
        try:
            value = int(item)
        except ValueError:
            raise ProbekitError(
                f"--labels-per-class {text!r}: write positive integers or 'all', e.g. 1,5,10,50,all"
            ) from None
        if value < 1:
            raise ProbekitError(f"--labels-per-class {text!r}: each budget must be at least 1 label per class")
        budgets.append(value)
    if not budgets:
        raise ProbekitError("--labels-per-class is empty: write e.g. 1,5,10,50,all")
    if len(set(budgets)) != len(budgets):
        raise ProbekitError(f"--labels-per-class {text!r} repeats a budget: list each once")
    return budgets


def budget_positions(labels: np.ndarray, per_class: int, seed: int, draw: int) -> np.ndarray:
    """Positions into ``labels`` of ``per_class`` samples of every class, grouped by class.

    Drawn without replacement by ``numpy.random.default_rng([seed, per_class, draw])``: the
    same arguments give the same positions; each draw is an independent choice. The positions
    come class by class (classes ascending, positions ascending within each), so every draw of a
    budget has the same labels in the same order and the draws batch into one problem.
    """
    labels = np.asarray(labels)
    classes, counts = np.unique(labels, return_counts=True)
    short = [(int(c), int(n)) for c, n in zip(classes, counts) if n < per_class]
    if short:
        label, count = short[0]
        raise ProbekitError(
            f"--labels-per-class {per_class}: class {label} has only {count} train images outside the validation "
            "split; lower the budget or extract more train images"
        )
    rng = np.random.default_rng([seed, per_class, draw])
    chosen = [rng.choice(np.flatnonzero(labels == label), size=per_class, replace=False) for label in classes]
    return np.concatenate([np.sort(part) for part in chosen]).astype(np.int64)


def probe_label_budgets(
    cache_path: str | Path | Sequence[str | Path],
    config: ProbeRunConfig,
    budgets: Sequence[int | None],
    *,
    draws: int = 3,
    progress: bool = True,
    max_memory: int | None = None,
) -> pd.DataFrame:
    """Probe every cell under every label budget (``draws`` seeded draws each; one for "all")."""
    if draws < 1:
        raise ProbekitError(f"--budget-draws must be at least 1, got {draws}")
    plan = [(per_class, draw) for per_class in budgets for draw in range(1 if per_class is None else draws)]
    subsets = [
        None
        if per_class is None
        else functools.partial(budget_positions, per_class=per_class, seed=config.seed, draw=draw)
        for per_class, draw in plan
    ]
    runs = probe_cache_subsets(cache_path, config, subsets, progress=progress, max_memory=max_memory)
    tables = []
    for (per_class, draw), run in zip(plan, runs):
        table = run.table
        table["labels_per_class"] = ALL if per_class is None else str(per_class)
        table["budget_draw"] = draw
        tables.append(table)
    return with_kind(pd.concat(tables, ignore_index=True), "labels")
