"""A cell too large for the memory budget, probed with its train rows streamed from the cache
(:mod:`probekit.probes.streamed` holds the solvers; this module plans the blocks and runs them).
"""

from __future__ import annotations

import logging
import time
from dataclasses import replace
from typing import Any

import numpy as np

from probekit.core.errors import ProbekitError
from probekit.core.specs import streamable_probes
from probekit.features.group import CacheGroup, Cell
from probekit.probes.cell_reads import read_group
from probekit.probes.memory import STREAM_MIN_BLOCK_ROWS, streamed_block_rows
from probekit.probes.protocol import ProbeTask
from probekit.probes.registry import ProbeSettings
from probekit.probes.run_config import ProbeRunConfig

log = logging.getLogger(__name__)


def check_streamable(streamed: list[Cell], costs: dict[Cell, int], config: ProbeRunConfig, budget: int) -> None:
    cell = streamed[0]
    where = (
        f"cell {cell[1]} at t={cell[0]} needs {costs[cell] / 2**20:.0f} MiB to probe in memory, more than --max-memory "
        f"{budget / 2**20:.0f} MiB"
    )
    streamable = streamable_probes()
    others = [name for name in config.probes if name not in streamable]
    if others:
        raise ProbekitError(
            f"{where}, and {', '.join(others)} cannot stream it from disk: raise --max-memory or probe "
            f"with {', '.join(sorted(streamable))} only"
        )
    if config.train_features == "sample":
        raise ProbekitError(f"{where}, and --train-features sample is not streamed: raise --max-memory or use mean")
    if config.drop_massive:
        raise ProbekitError(f"{where}, and --drop-massive is not streamed: raise --max-memory")


def probe_streamed(
    group: CacheGroup,
    cell: Cell,
    config: ProbeRunConfig,
    settings: ProbeSettings,
    fit_pos: np.ndarray,
    val_pos: np.ndarray | None,
    y_fit: np.ndarray,
    y_evals: dict[str, np.ndarray],
    num_classes: int,
    select_on: str,
    budget: int,
) -> dict[str, dict[Cell, Any]]:
    """Probe one cell whose train rows do not fit in memory: val and test are read into memory,
    the fit rows are read block by block on every pass (:mod:`probekit.probes.streamed`).
    """
    from probekit.probes.protocol import choose_per_cell
    from probekit.probes.streamed import TrainRows, fit_linear_streamed, knn_streamed, predict_linear_streamed

    # the val and test rows are read in blocks small beside the budget: the heap keeps part of
    # what a read used, under what the probes then hold
    features = read_group(
        group, [cell], replace(config, train_features="mean"), fit_pos[:0], val_pos, 1, min(16 << 20, budget // 16)
    )
    evals = {split: values[cell] for split, values in features.items() if split != "train" and values}
    width = group.caches[0].width(cell[1])
    # The probes run one after the other, so each reads blocks sized from its own working set.
    eval_bytes = sum(values.nbytes for values in evals.values())
    block_rows = {}
    for name in config.probes:
        rows, needed = streamed_block_rows(
            budget, width, len(fit_pos), eval_bytes, num_classes, [name], after_another=name != config.probes[0]
        )
        if rows < STREAM_MIN_BLOCK_ROWS:
            raise ProbekitError(
                f"--max-memory {budget / 2**20:.0f} MiB is too small even to stream cell {cell[1]} at t={cell[0]} "
                f"with {name}: its val and test rows, its working state and blocks of {STREAM_MIN_BLOCK_ROWS} train "
                f"rows need {needed / 2**20:.0f} MiB; raise --max-memory"
            )
        block_rows[name] = min(rows, (256 << 20) // (4 * width))

    def rows_source(rows_per_block: int) -> TrainRows:
        """The fit rows of ``cell``, read in blocks of ``rows_per_block`` rows on every pass."""

        def blocks():
            # The checksums are checked on the first pass; the solver's later passes read the
            # same rows of the same open file again, and checking them each time took as long as
            # the reads themselves (benchmarks.md, "Streamed probing").
            check = source.passes <= 1
            for start, rows in group.row_chunks("train", cell, "mean", 4 * width * rows_per_block, check=check):
                lo, hi = np.searchsorted(fit_pos, [start, start + len(rows)])
                if hi > lo:
                    yield rows[fit_pos[lo:hi] - start]

        source = TrainRows(len(fit_pos), width, blocks)
        return source

    task = ProbeTask(
        train={cell: evals[select_on][:0]},
        y_train=y_fit[:0],
        evals={s: {cell: v} for s, v in evals.items()},
        y_evals=y_evals,
        num_classes=num_classes,
        select_on=select_on,
    )
    out: dict[str, dict[Cell, Any]] = {}
    for name in config.probes:
        source = rows_source(block_rows[name])
        trim_heap()
        start = time.perf_counter()
        if name == "linear":
            linear = replace(settings.linear, num_classes=num_classes)
            heads = fit_linear_streamed(cell, source, y_fit, list(settings.linear_C), linear, device=config.device)
            trim_heap()  # the blocks' memory, before the predictions' chunks
            candidates = [
                (
                    f"C={c:g}",
                    {cell: {s: predict_linear_streamed({c: heads[float(c)]}, cell, q)[c] for s, q in evals.items()}},
                )
                for c in settings.linear_C
            ]
        else:
            sweep = knn_streamed(
                source,
                y_fit,
                evals,
                list(settings.knn_k),
                list(settings.knn_temperature),
                centre=settings.knn_centre,
                num_classes=num_classes,
            )
            centred = ",centred" if settings.knn_centre else ""
            candidates = [
                (f"k={k},T={t:g}{centred}", {cell: sweep[(k, float(t))]})
                for k in settings.knn_k
                for t in settings.knn_temperature
            ]
        out[name] = choose_per_cell(task, candidates)
        log.info(
            "%s: cell t=%s %s streamed: %d passes over its train rows in %.1f s",
            name,
            cell[0],
            cell[1],
            source.passes,
            time.perf_counter() - start,
        )
    return out


def trim_heap() -> None:
    """Hand freed heap memory back to the OS (glibc's ``malloc_trim``; nothing elsewhere).

    glibc keeps freed blocks in its arenas, so the resident size after one streamed probe stays at
    its peak and the next probe's allocations land on top of it: measured on a 60 000 x 784 cell,
    linear then kNN peaked 39 MiB over the budget that each alone kept.
    """
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    if name is None:
        return
    try:
        trim = ctypes.CDLL(name).malloc_trim
    except (OSError, AttributeError):
        return
    trim(0)
