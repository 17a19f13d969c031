"""Cells read for probing: groups that fit the memory budget, each cell's rows read straight into
float32 arrays, and the cells whose features are all finite.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np

from probekit.core.errors import ProbekitError
from probekit.features.group import CacheGroup, Cell
from probekit.probes.run_config import ProbeRunConfig

log = logging.getLogger(__name__)


def plan_groups(cell_bytes: dict[Cell, int], budget: int | None) -> list[list[Cell]]:
    """Consecutive cells packed into groups whose probing bytes (:func:`probekit.probes.memory.probe_bytes`) fit
    ``budget`` (all in one group when None). A cell that alone exceeds the budget is refused
    here; :func:`probekit.probes.run.probe_cache` streams such cells from the cache instead.
    """
    if budget is None:
        return [list(cell_bytes)]
    groups: list[list[Cell]] = [[]]
    used = 0
    for cell, size in cell_bytes.items():
        if size > budget:
            raise ProbekitError(
                f"one cell ({cell[1]} at t={cell[0]}) needs {size / 2**20:.0f} MiB to probe, more than "
                f"--max-memory {budget / 2**20:.0f} MiB: raise --max-memory"
            )
        if groups[-1] and used + size > budget:
            groups.append([])
            used = 0
        groups[-1].append(cell)
        used += size
    return groups


def read_group(
    group: CacheGroup,
    members: Sequence[Cell],
    config: ProbeRunConfig,
    fit_pos: np.ndarray,
    val_pos: np.ndarray | None,
    slots: int,
    block_bytes: int = 16 << 20,
) -> dict[str, dict[Cell, np.ndarray]]:
    """Train (fit rows), val and test features of ``members``, each read straight from the cache
    into its own preallocated float32 array: the validation split is taken by row index while
    reading, so no whole-cell copy exists besides the arrays returned.
    """
    features: dict[str, dict[Cell, np.ndarray]] = {"train": {}, "val": {}, "test": {}}
    sample = config.train_features == "sample"
    eval_mode = config.test_features
    n_test = len(group.labels("test"))
    for cell in members:
        width = group.caches[0].width(cell[1])
        fit = np.empty((slots, len(fit_pos), width) if sample else (len(fit_pos), width), dtype=np.float32)
        features["train"][cell] = fit
        train_targets = [] if sample else [(fit, fit_pos)]
        if val_pos is not None and len(val_pos):
            features["val"][cell] = np.empty((len(val_pos), width), dtype=np.float32)
            if eval_mode == "mean":
                train_targets.append((features["val"][cell], val_pos))
            else:
                group.fill("train", cell, [(features["val"][cell], val_pos)], eval_mode, block_bytes=block_bytes)
        elif val_pos is None:
            n_val = len(group.labels("val"))
            features["val"][cell] = np.empty((n_val, width), dtype=np.float32)
            group.fill("val", cell, [(features["val"][cell], np.arange(n_val))], eval_mode, block_bytes=block_bytes)
        if train_targets:
            group.fill("train", cell, train_targets, "mean", block_bytes=block_bytes)
        if sample:
            group.fill("train", cell, [(fit, fit_pos)], "slots", config.use_views, block_bytes)
        features["test"][cell] = np.empty((n_test, width), dtype=np.float32)
        group.fill("test", cell, [(features["test"][cell], np.arange(n_test))], eval_mode, block_bytes=block_bytes)
    return features


def finite_cells(features: dict[str, dict[Cell, np.ndarray]]) -> list[Cell]:
    """Cells with only finite features in every split; each other cell is logged and left out."""
    keep = []
    for cell in next(iter(features.values())):
        bad = {
            split: int((~np.isfinite(values[cell])).reshape(-1, values[cell].shape[-1]).any(axis=1).sum())
            for split, values in features.items()
        }
        if any(bad.values()):
            log.warning(
                "cell t=%s %s skipped: NaN/inf features in %s (the other cells are probed)",
                cell[0],
                cell[1],
                ", ".join(f"{n} {split} rows" for split, n in bad.items() if n),
            )
        else:
            keep.append(cell)
    return keep
