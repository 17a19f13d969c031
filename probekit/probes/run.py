"""FeatureCache -> every (t, layer) cell probed -> tidy results table (and the t-SNE of one cell)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from ..cache import FeatureCache
from ..errors import ProbekitError
from ..results import CellInfo, best_cells, read_table, scores_to_table
from . import PROBES, run_probe

Cell = tuple[int, str]  # (t, layer)
log = logging.getLogger(__name__)


@dataclass
class ProbeRunConfig:
    """Which probes to run and their settings; None keeps a probe's own default."""

    probes: Sequence[str] = field(default=("linear", "knn"))
    epochs: int | None = None
    lr: float | None = None
    weight_decay: float | None = None
    batch_size: int | None = None
    knn_k: int = 20
    knn_temperature: float = 0.07
    device: str = "cpu"
    seed: int = 0

    def probe_config(self, name: str, num_classes: int) -> Any:
        """The config dataclass of probe ``name`` with the overrides that apply to it."""
        config = PROBES[name].config_type()
        overrides: dict[str, Any] = {"num_classes": num_classes}
        if name == "linear":
            overrides.update(epochs=self.epochs, lr=self.lr, weight_decay=self.weight_decay, batch_size=self.batch_size, seed=self.seed)
        elif name == "knn":
            overrides.update(k=self.knn_k, temperature=self.knn_temperature)
        known = config.__dataclass_fields__
        return replace(config, **{k: v for k, v in overrides.items() if v is not None and k in known})


def cell_infos(cache: FeatureCache) -> dict[Cell, CellInfo]:
    """Metadata of every cell, keyed by (t, layer), in grid x depth order."""
    return {
        (point.t, layer.name): CellInfo(
            t=point.t, sigma=point.sigma, logsnr=point.logsnr, alpha_bar=point.alpha_bar,
            layer=layer.name, stage=layer.stage, depth=layer.depth,
        )
        for point in cache.grid
        for layer in cache.layers
    }


def load_cells(cache: FeatureCache, split: str, cells: Sequence[Cell]) -> dict[Cell, np.ndarray]:
    """(N, D) float32 features of each cell (mean over noise draws)."""
    return {cell: cache.features(split, cell[1], cell[0]) for cell in cells}


#: what must agree for caches to be probed together, with the word used to name it in errors
_SAME_WORK = {"model_sha256": "model", "dataset": "dataset", "pooling": "pooling", "draws": "draws",
              "seed": "seed", "precision": "precision", "fit": "image fitting"}


class CacheGroup:
    """One or more finished caches of the same extraction read as one (e.g. train and test run apart).

    Splits present in several caches are concatenated in the order given; a sample id may appear
    once per split only. Caches whose model, dataset, grid, layers or extraction settings differ
    are refused, naming what differs.
    """

    def __init__(self, paths: Sequence[str | Path]) -> None:
        if not paths:
            raise ProbekitError("no cache given: pass --cache FILE [FILE ...]")
        self.caches: list[FeatureCache] = []
        try:
            for path in paths:
                cache = FeatureCache(path)
                self.caches.append(cache)
                cache.require_complete()
            self._check_same_work()
        except BaseException:
            self.close()
            raise
        first = self.caches[0]
        self.attrs = first.attrs
        self.cells = cell_infos(first)
        self.class_names = first.class_names
        self.splits = [s for s in ("train", "test") if any(s in c.splits for c in self.caches)]
        self._parts = {split: [c for c in self.caches if split in c.splits] for split in self.splits}
        for split, parts in self._parts.items():
            ids = np.concatenate([c.index(split) for c in parts])
            if len(np.unique(ids)) != len(ids):
                raise ProbekitError(
                    f"the {split} split appears in {len(parts)} caches with overlapping samples: give each sample once"
                )

    def _check_same_work(self) -> None:
        first = self.caches[0]
        for other in self.caches[1:]:
            a, b = first.attrs, other.attrs
            differing = [word for key, word in _SAME_WORK.items() if a.get(key) != b.get(key)]
            if first.timesteps != other.timesteps:
                differing.append(f"grid ({first.timesteps} vs {other.timesteps})")
            if [l.name for l in first.layers] != [l.name for l in other.layers]:
                differing.append("layers")
            if first.class_names != other.class_names:
                differing.append("class names")
            if differing:
                raise ProbekitError(
                    f"{first.path} and {other.path} come from different extractions (they differ in "
                    f"{', '.join(differing)}): probe them separately"
                )

    def labels(self, split: str) -> np.ndarray:
        return np.concatenate([c.labels(split) for c in self._parts[split]])

    def features(self, split: str, cell: Cell) -> np.ndarray:
        parts = [c.features(split, cell[1], cell[0]) for c in self._parts[split]]
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    def cell_bytes(self, cell: Cell) -> int:
        """float32 bytes of one cell's train + test features."""
        width = self.caches[0].width(cell[1])
        return 4 * width * sum(len(self.labels(split)) for split in self.splits)

    def close(self) -> None:
        for cache in self.caches:
            cache.close()

    def __enter__(self) -> "CacheGroup":
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


def plan_groups(cell_bytes: dict[Cell, int], budget: int | None) -> list[list[Cell]]:
    """Consecutive cells packed into groups whose features fit ``budget`` bytes (all in one when None).

    Probing needs about twice the features' bytes (the linear grid stacks them), so a group's
    features are held to half the budget.
    """
    if budget is None:
        return [list(cell_bytes)]
    groups: list[list[Cell]] = [[]]
    used = 0
    for cell, size in cell_bytes.items():
        if 2 * size > budget:
            raise ProbekitError(
                f"one cell ({cell[1]} at t={cell[0]}) needs {2 * size / 2**20:.0f} MiB to probe, more than "
                f"--max-memory {budget / 2**20:.0f} MiB: raise --max-memory"
            )
        if groups[-1] and 2 * (used + size) > budget:
            groups.append([])
            used = 0
        groups[-1].append(cell)
        used += size
    return groups


def _finite_cells(train: dict[Cell, np.ndarray], test: dict[Cell, np.ndarray]) -> list[Cell]:
    """Cells with only finite features; each other cell is reported on the log and left out."""
    keep = []
    for cell in train:
        bad = {split: int((~np.isfinite(values[cell])).any(axis=1).sum()) for split, values in (("train", train), ("test", test))}
        if any(bad.values()):
            log.warning(
                "cell t=%s %s skipped: NaN/inf features in %d train and %d test samples (the other cells are probed)",
                cell[0], cell[1], bad["train"], bad["test"],
            )
        else:
            keep.append(cell)
    return keep


def run_probes(
    cache_path: str | Path | Sequence[str | Path],
    config: ProbeRunConfig = ProbeRunConfig(),
    *,
    progress: bool = True,
    max_memory: int | None = None,
) -> pd.DataFrame:
    """Probe every cell of one finished cache (or several caches of the same extraction).

    ``max_memory`` (bytes) bounds the features held at once: cells are read from HDF5 and probed
    in groups that fit it. Cells with NaN or inf features are skipped with a warning each.
    """
    unknown = [name for name in config.probes if name not in PROBES]
    if unknown or not config.probes:
        raise ProbekitError(f"unknown probe(s) {', '.join(unknown) or '(none given)'}: choose from {', '.join(PROBES)}")
    paths = [cache_path] if isinstance(cache_path, (str, Path)) else list(cache_path)
    scores: dict[str, dict[Cell, Any]] = {name: {} for name in config.probes}
    with CacheGroup(paths) as group:
        if group.splits != ["train", "test"]:
            raise ProbekitError(f"{', '.join(map(str, paths))} need a train and a test split to be probed; found {group.splits}")
        y_train, y_test = group.labels("train"), group.labels("test")
        num_classes = len(group.class_names)
        cells = group.cells
        groups = plan_groups({cell: group.cell_bytes(cell) for cell in cells}, max_memory)
        if len(groups) > 1:
            log.info("probing %d cells in %d groups to stay within --max-memory", len(cells), len(groups))
        for members in groups:
            train = {cell: group.features("train", cell) for cell in members}
            test = {cell: group.features("test", cell) for cell in members}
            finite = _finite_cells(train, test)
            if not finite:
                continue
            train = {cell: train[cell] for cell in finite}
            test = {cell: test[cell] for cell in finite}
            for name in config.probes:
                scores[name].update(run_probe(
                    name, train, y_train, test, y_test, config.probe_config(name, num_classes),
                    device=config.device, progress=progress,
                ))
            del train, test
        attrs = group.attrs
    if not any(scores.values()):
        raise ProbekitError("every cell has NaN/inf features: nothing to probe; check the model and --precision")
    ordered = {name: {cell: per_cell[cell] for cell in cells if cell in per_cell} for name, per_cell in scores.items()}
    return scores_to_table(
        ordered, cells, model=str(attrs.get("model_id")), dataset=str(attrs.get("dataset")), n_train=len(y_train)
    )


def best_cell(table: pd.DataFrame, *, probe: str = "linear", model: str | None = None) -> Cell:
    """(t, layer) of the best top-1 cell of ``probe`` (of ``model`` when the table holds several)."""
    rows = table if model is None or model not in set(table["model"]) else table[table["model"] == model]
    best = best_cells(rows)
    best = best[best["probe"] == probe] if probe in set(best["probe"]) else best
    if best.empty:
        raise ProbekitError("the results table has no top-1 rows to pick a best cell from")
    row = best.sort_values("value", ascending=False).iloc[0]
    return int(row["t"]), str(row["layer"])


def tsne_of_cell(
    cache_path: str | Path,
    out: str | Path,
    *,
    t: int | None = None,
    layer: str | None = None,
    results: str | Path | None = None,
    split: str = "test",
    max_points: int = 2000,
    seed: int = 0,
) -> Path:
    """t-SNE scatter of one cell; the cell defaults to the best linear-probe cell.

    The best cell comes from ``results`` when given, otherwise from a linear probe run on the cache.
    """
    from ..plots import plot_tsne

    if t is None or layer is None:
        with FeatureCache(cache_path) as cache:
            model = str(cache.attrs.get("model_id"))
        table = read_table(results) if results else run_probes(cache_path, ProbeRunConfig(probes=("linear",)), progress=False)
        best_t, best_layer = best_cell(table, probe="linear", model=model)
        t = best_t if t is None else t
        layer = best_layer if layer is None else layer
    with FeatureCache(cache_path) as cache:
        cache.require_complete()
        if split not in cache.splits:
            raise ProbekitError(f"{cache_path} has no split {split!r}; it has {', '.join(cache.splits)}")
        features = cache.features(split, layer, t)
        labels = cache.labels(split)
        point = next(p for p in cache.grid if p.t == t)
        title = f"{cache.attrs.get('model_id')} | {cache.attrs.get('dataset')} {split}\nt={t} (sigma={point.sigma:.3g})  {layer}"
        class_names = cache.class_names
    return plot_tsne(features, labels, class_names, out, title=title, max_points=max_points, seed=seed)
