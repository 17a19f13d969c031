"""FeatureCache -> every (t, layer) cell probed on a validation split -> tidy results table + test predictions."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from probekit.core import threads
from probekit.core.errors import ProbekitError
from probekit.core.specs import epoch_based_probes
from probekit.core.types import CellInfo
from probekit.evaluate import score_predictions, stratified_val_split
from probekit.evaluate.predictions import PredictionSet
from probekit.evaluate.results import scores_to_table
from probekit.features.group import CacheGroup, Cell
from probekit.probes.cell_reads import finite_cells, plan_groups, read_group
from probekit.probes.memory import probe_bytes
from probekit.probes.protocol import ProbeTask
from probekit.probes.registry import PROBES, run_probe
from probekit.probes.run_config import ProbeRunConfig
from probekit.probes.streamed_cells import check_streamable, probe_streamed

log = logging.getLogger(__name__)


def _gather(outcomes: dict[str, dict[Any, Any]], seconds: dict[str, float]) -> tuple[dict, dict]:
    """Every rank's outcomes (and summed probe times), on every rank."""
    import torch.distributed as dist

    parts: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(parts, (outcomes, seconds))
    merged: dict[str, dict[Any, Any]] = {name: {} for name in outcomes}
    total = dict.fromkeys(seconds, 0.0)
    for part_outcomes, part_seconds in parts:
        for name in merged:
            merged[name].update(part_outcomes[name])
            total[name] += part_seconds[name]
    return merged, total


@dataclass
class ProbeResults:
    """A probe run: the tidy table and every cell's test predictions (the sidecar)."""

    table: pd.DataFrame
    predictions: PredictionSet


@dataclass
class _Splits:
    """Who fits and who chooses: positions in train of the fit rows and of the validation rows
    (None: the cache's own "val" split), their labels, and the split choices are made on.
    """

    fit_pos: np.ndarray
    val_pos: np.ndarray | None
    y_fit: np.ndarray
    y_evals: dict[str, np.ndarray]
    select_on: str


def probe_cache(
    cache_path: str | Path | Sequence[str | Path],
    config: ProbeRunConfig = ProbeRunConfig(),
    *,
    progress: bool = True,
    max_memory: int | None = None,
    fit_subset: Callable[[np.ndarray], np.ndarray] | None = None,
    rank: tuple[int, int] | None = None,
) -> ProbeResults:
    """Probe every cell of one finished cache (or several caches of the same extraction).

    Probes fit on train minus the validation split, predict val and test, and choose their
    settings on val. ``max_memory`` (bytes) bounds the features held at once: cells are read from
    HDF5 and probed in groups that fit it (counting every (view, draw) slot under
    ``train_features="sample"``). Cells with NaN or inf features are skipped with a warning each.
    ``fit_subset`` maps the labels of the fit part (train minus val) to the positions within it
    that the probes fit on (a label budget, :mod:`.label_budget`); val and test stay whole.
    ``rank`` = (rank, world size) inside an initialised ``torch.distributed`` group: this process
    probes a contiguous share of the cells and every process returns the results of all of them
    (each cell's probe does not depend on the others, so the table is the single-process one).
    """
    return probe_cache_subsets(cache_path, config, [fit_subset], progress=progress, max_memory=max_memory, rank=rank)[0]


def probe_cache_subsets(
    cache_path: str | Path | Sequence[str | Path],
    config: ProbeRunConfig,
    fit_subsets: Sequence[Callable[[np.ndarray], np.ndarray] | None],
    *,
    progress: bool = True,
    max_memory: int | None = None,
    rank: tuple[int, int] | None = None,
) -> list[ProbeResults]:
    """:func:`probe_cache` once per fit subset (None: the whole fit part), in one batched pass.

    The cache is opened once and each cell's rows are read once (the union of the subsets' rows,
    val and test); subsets whose fit labels are equal, in the same order (the draws of one label
    budget, :func:`.label_budget.budget_positions`), are probed as one batched problem, each
    (cell, subset) pair a cell of it. Each result is what :func:`probe_cache` with that
    ``fit_subset`` returns, up to the solvers' tolerance (a batched sum adds in another order).
    """
    if not fit_subsets:
        raise ProbekitError("no fit subset to probe: pass [None] for the whole fit part")
    unknown = [name for name in config.probes if name not in PROBES]
    if unknown or not config.probes:
        raise ProbekitError(f"unknown probe(s) {', '.join(unknown) or '(none given)'}: choose from {', '.join(PROBES)}")
    threads.configure()
    paths = [cache_path] if isinstance(cache_path, (str, Path)) else list(cache_path)
    with CacheGroup(paths) as group:
        if "train" not in group.splits or "test" not in group.splits:
            raise ProbekitError(
                f"{', '.join(map(str, paths))} need a train and a test split to be probed; found {group.splits}"
            )
        whole = _splits(group, config)
        subsets = [whole if subset is None else _narrowed(whole, subset) for subset in fit_subsets]
        cells = group.cells
        if config.timesteps is not None:
            missing = sorted(set(config.timesteps) - {t for t, _ in cells})
            if missing or not config.timesteps:
                raise ProbekitError(
                    f"--timesteps {','.join(map(str, config.timesteps))}: the cache's grid is "
                    f"{','.join(map(str, sorted({t for t, _ in cells})))}; choose timesteps from it"
                )
            cells = {cell: info for cell, info in cells.items() if cell[0] in set(config.timesteps)}
        mine = list(cells)
        if rank is not None:
            first, last = len(mine) * rank[0] // rank[1], len(mine) * (rank[0] + 1) // rank[1]
            mine = mine[first:last]
        massive = _massive(group) if config.drop_massive else {}
        outcomes, seconds = _probe_cells(
            group, mine, config, subsets, massive, max_memory=max_memory, progress=progress
        )
        attrs, test_index = group.attrs, group.index("test")
        if whole.val_pos is None:
            val_index, val_fraction = group.index("val"), float("nan")
        else:
            val_index, val_fraction = group.index("train")[whole.val_pos], config.val_fraction
    if rank is not None:
        outcomes, seconds = _gather(outcomes, seconds)
    fit_sets = f" under each of {len(subsets)} fit subsets" if len(subsets) > 1 else ""
    for name, spent in seconds.items():
        log.info("%s: %d cells%s in %.1f s", name, len({cell for cell, _ in outcomes[name]}), fit_sets, spent)
    if not any(outcomes.values()):
        raise ProbekitError("every cell has NaN/inf features: nothing to probe; check the model and --precision")
    runs = []
    for i, splits in enumerate(subsets):
        mine_only = {name: {cell: o for (cell, j), o in per.items() if j == i} for name, per in outcomes.items()}
        results = _results(mine_only, cells, attrs, splits, test_index, val_index, val_fraction)
        if config.drop_massive:
            results.table["massive_dropped"] = [
                len(massive.get((int(t), str(layer)), ()))
                for t, layer in zip(results.table["t"], results.table["layer"])
            ]
        runs.append(results)
    return runs


def _splits(group: CacheGroup, config: ProbeRunConfig) -> _Splits:
    """The validation split (the cache's own, else a stratified share of train) and the fit rows."""
    y_all = group.labels("train")
    if "val" in group.splits:
        fit_pos, val_pos = np.arange(len(y_all)), None
        log.info("choosing on the dataset's own validation split (%d images)", len(group.labels("val")))
    else:
        fit_pos, val_pos = stratified_val_split(y_all, config.val_fraction, config.seed)
        if len(val_pos):
            log.info(
                "validation split: %d of %d train images (stratified, seed %d)", len(val_pos), len(y_all), config.seed
            )
    select_on = "val" if ("val" in group.splits or len(val_pos)) else "test"
    if select_on == "test":
        log.warning(
            "no validation split (--val-fraction 0): every choice is made on test, so test scores are optimistic"
        )
    y_evals = {"test": group.labels("test")}
    if select_on == "val":
        y_evals["val"] = group.labels("val") if val_pos is None else y_all[val_pos]
    return _Splits(fit_pos, val_pos, y_all[fit_pos], y_evals, select_on)


def _narrowed(whole: _Splits, fit_subset: Callable[[np.ndarray], np.ndarray]) -> _Splits:
    """``whole`` fitting only on the positions ``fit_subset`` picks from its fit rows' labels."""
    chosen = np.asarray(fit_subset(whole.y_fit))
    return replace(whole, fit_pos=whole.fit_pos[chosen], y_fit=whole.y_fit[chosen])


def _same_labels(subsets: Sequence[_Splits]) -> list[list[int]]:
    """Indices of ``subsets`` grouped by equal fit labels in equal order: each group is one
    batched problem (the probes take one label vector for all the cells of a task).
    """
    groups: dict[bytes, list[int]] = {}
    for i, splits in enumerate(subsets):
        groups.setdefault(np.ascontiguousarray(splits.y_fit, dtype=np.int64).tobytes(), []).append(i)
    return list(groups.values())


def _probe_cells(
    group: CacheGroup,
    cells: list[Cell],
    config: ProbeRunConfig,
    subsets: Sequence[_Splits],
    massive: Mapping[Cell, np.ndarray],
    *,
    max_memory: int | None,
    progress: bool,
) -> tuple[dict[str, dict[Any, Any]], dict[str, float]]:
    """Every probe's outcome on each of ``cells`` under each fit subset, keyed (cell, subset
    index), and each probe's wall time. Cells are read in groups that fit the memory budget, each
    cell's rows once for every subset; a cell over the budget is probed one batch of subsets at
    a time, in memory where that batch fits and streamed from the cache where it does not.
    """
    run = _CellRun(group, config, subsets, massive, progress)
    batches = _same_labels(subsets)
    costs = {cell: run.cost(cell, batches) for cell in cells}
    oversize = [cell for cell, size in costs.items() if max_memory is not None and size > max_memory]
    groups = plan_groups({cell: size for cell, size in costs.items() if cell not in oversize}, max_memory)
    groups = [members for members in groups if members]
    if len(groups) > 1:
        log.info("probing %d cells in %d groups to stay within --max-memory", len(group.cells), len(groups))
    if oversize:
        assert max_memory is not None
        streamed = {cell: [b for b in batches if run.cost(cell, [b]) > max_memory] for cell in oversize}
        streamed = {cell: parts for cell, parts in streamed.items() if parts}
        if streamed:
            check_streamable(list(streamed), costs, config, max_memory)
            log.info("%d cells exceed --max-memory: streaming their train rows from the cache", len(streamed))
        for cell in oversize:
            for batch in batches:
                if batch in streamed.get(cell, []):
                    run.streamed(cell, batch, max_memory)
                else:
                    run.in_memory([cell], [batch])
    for members in groups:
        run.in_memory(members, batches)
    return run.outcomes, run.seconds


class _CellRun:
    """The probes of one :func:`probe_cache_subsets` call, run on cells batch by batch, with their
    outcomes keyed (cell, subset index) and their wall times summed.
    """

    def __init__(
        self,
        group: CacheGroup,
        config: ProbeRunConfig,
        subsets: Sequence[_Splits],
        massive: Mapping[Cell, np.ndarray],
        progress: bool,
    ):
        self.group, self.config, self.subsets, self.progress = group, config, subsets, progress
        self.massive = massive  # each cell's massive channels, where --drop-massive drops them
        self.outcomes: dict[str, dict[Any, Any]] = {name: {} for name in config.probes}
        self.seconds = dict.fromkeys(config.probes, 0.0)
        self.num_classes = len(group.class_names)
        self.sample = config.train_features == "sample"
        self.slots = group.slots(config.use_views) if self.sample else 1
        self.first = subsets[0]  # val and test are the same under every subset
        self.n_eval = len(self.first.y_evals["test"]) + len(self.first.y_evals.get("val", []))
        self._rows_cache: dict[tuple, tuple[np.ndarray, dict[int, np.ndarray | None]]] = {}

    def _rows(self, batches: Sequence[list[int]]) -> tuple[np.ndarray, dict[int, np.ndarray | None]]:
        """The train rows to read for ``batches`` (every subset's fit rows, once) and each subset's
        rows within them; None for a subset that is all of them (no copy is taken).
        """
        key = tuple(tuple(batch) for batch in batches)
        if key in self._rows_cache:
            return self._rows_cache[key]
        members = [i for batch in batches for i in batch]
        union = np.unique(np.concatenate([self.subsets[i].fit_pos for i in members]))
        rows = {
            i: None
            if np.array_equal(self.subsets[i].fit_pos, union)
            else np.searchsorted(union, self.subsets[i].fit_pos)
            for i in members
        }
        self._rows_cache[key] = union, rows
        return union, rows

    def cost(self, cell: Cell, batches: Sequence[list[int]]) -> int:
        """Bytes held probing ``cell`` under ``batches``, one batch at a time: its train rows, the
        eval rows and its probes' working set, plus the rows read where the batch copies from them.
        """
        width = self.group.caches[0].width(cell[1])
        union, rows = self._rows(batches)
        return max(
            probe_bytes(
                width,
                sum(len(self.subsets[i].fit_pos) for i in batch),
                self.n_eval,
                self.num_classes,
                self.config.probes,
                self.slots,
            )
            + (0 if all(rows[i] is None for i in batch) else 4 * width * self.slots * len(union))
            for batch in batches
        )

    def in_memory(self, members: Sequence[Cell], batches: Sequence[list[int]]) -> None:
        """Read ``members`` once (the batches' fit rows, val and test) and probe every batch."""
        config, first = self.config, self.first
        union, rows = self._rows(batches)
        features = read_group(self.group, members, config, union, first.val_pos, self.slots)
        features = {split: values for split, values in features.items() if values}
        if config.drop_massive:
            features = {split: _without_massive(values, self.group, self.massive) for split, values in features.items()}
        finite = finite_cells(features)
        if not finite:
            return
        epoch_based = epoch_based_probes()
        for batch in batches:
            keys = [(cell, i) for i in batch for cell in finite]
            task = ProbeTask(
                train={(cell, i): _fit_rows(features["train"][cell], rows[i]) for cell, i in keys},
                y_train=self.subsets[batch[0]].y_fit,
                evals={
                    split: {(cell, i): values[cell] for cell, i in keys}
                    for split, values in features.items()
                    if split != "train"
                },
                y_evals=first.y_evals,
                num_classes=self.num_classes,
                select_on=first.select_on,
            )
            for name in config.probes:
                flat = (
                    task
                    if (not self.sample or name in epoch_based)
                    else ProbeTask(
                        *task.stacked(),
                        evals=task.evals,
                        y_evals=task.y_evals,
                        num_classes=self.num_classes,
                        select_on=first.select_on,
                    )
                )
                start = time.perf_counter()
                self.outcomes[name].update(
                    run_probe(name, flat, config.settings, device=config.device, progress=self.progress)
                )
                self.seconds[name] += time.perf_counter() - start
            del task

    def streamed(self, cell: Cell, batch: list[int], budget: int) -> None:
        """Probe ``cell`` under each subset of ``batch``, its fit rows streamed from the cache."""
        for i in batch:
            splits = self.subsets[i]
            # Streaming reads train in position order: hand the fit rows over sorted.
            order = np.argsort(splits.fit_pos, kind="stable")
            for name, outcome in probe_streamed(
                self.group,
                cell,
                self.config,
                self.config.settings,
                splits.fit_pos[order],
                splits.val_pos,
                splits.y_fit[order],
                splits.y_evals,
                self.num_classes,
                splits.select_on,
                budget,
            ).items():
                self.outcomes[name].update({(key, i): value for key, value in outcome.items()})


def _fit_rows(train: np.ndarray, rows: np.ndarray | None) -> np.ndarray:
    """A subset's rows of the train features read ((N, C), or (S, N, C) with slots); None: all."""
    return train if rows is None else np.take(train, rows, axis=-2)


def _massive(group: CacheGroup) -> dict[Cell, np.ndarray]:
    """Every cell's massive channels, as the group's first cache records them (or computed now)."""
    from probekit.features.massive import cache_massive

    return cache_massive(group.caches[0])


def _without_massive(
    values: dict[Cell, np.ndarray], group: CacheGroup, massive: Mapping[Cell, np.ndarray]
) -> dict[Cell, np.ndarray]:
    """Each cell's features without the columns of its massive channels."""
    from probekit.features.massive import keep_columns

    channels = {layer.name: layer.channels for layer in group.caches[0].layers}
    kept = {}
    for cell, array in values.items():
        found = massive.get(cell, np.zeros(0, dtype=np.int64))
        width = array.shape[-1]
        count = channels.get(cell[1]) or width
        kept[cell] = (
            array[..., keep_columns(width, count if width % count == 0 else width, found)] if len(found) else array
        )
    return kept


def _results(
    outcomes: dict[str, dict[Cell, Any]],
    cells: Mapping[Cell, CellInfo],
    attrs: dict,
    splits: _Splits,
    test_index: np.ndarray,
    val_index: np.ndarray,
    val_fraction: float,
) -> ProbeResults:
    """The tidy table (every cell's scores on val and test) and the test predictions sidecar."""
    model, dataset = str(attrs.get("model_id")), str(attrs.get("dataset"))
    scores = {
        name: {
            cell: {
                split: score_predictions(splits.y_evals[split], preds)
                for split, preds in per_cell[cell].predictions.items()
            }
            for cell in cells
            if cell in per_cell
        }
        for name, per_cell in outcomes.items()
    }
    params = {name: {cell: outcome.params for cell, outcome in per_cell.items()} for name, per_cell in outcomes.items()}
    table = scores_to_table(scores, cells, model=model, dataset=dataset, n_train=len(splits.y_fit), params=params)
    kept = [(name, cell) for name in scores for cell in scores[name]]
    predictions = PredictionSet(
        model=model,
        dataset=dataset,
        index=test_index,
        labels=splits.y_evals["test"],
        probe=[name for name, _ in kept],
        t=[cell[0] for _, cell in kept],
        layer=[cell[1] for _, cell in kept],
        predictions=np.stack([outcomes[name][cell].predictions["test"] for name, cell in kept]).astype(np.int32),
        val_index=val_index,
        val_fraction=val_fraction,
    )
    return ProbeResults(table=table, predictions=predictions)


def probe_launched(
    cache_path: str | Path | Sequence[str | Path],
    config: ProbeRunConfig,
    *,
    progress: bool = True,
    max_memory: int | None = None,
) -> ProbeResults | None:
    """:func:`probe_cache` as one process, or as this rank of a ``torchrun`` launch: each rank probes
    a share of the cells and rank 0 returns the results of all of them (other ranks return None).
    The results are small numpy arrays, gathered through gloo whatever device the probes run on.
    """
    from probekit.features.distributed import current_rank, init_process_group

    rank = current_rank()
    if rank is not None:
        init_process_group("cpu")
    results = probe_cache(
        cache_path,
        config,
        progress=progress and rank is None,
        max_memory=max_memory,
        rank=None if rank is None else (rank.rank, rank.world_size),
    )
    return results if rank is None or rank.rank == 0 else None


def run_probes(
    cache_path: str | Path | Sequence[str | Path],
    config: ProbeRunConfig = ProbeRunConfig(),
    *,
    progress: bool = True,
    max_memory: int | None = None,
) -> pd.DataFrame:
    """The results table of :func:`probe_cache` (its predictions dropped)."""
    return probe_cache(cache_path, config, progress=progress, max_memory=max_memory).table
