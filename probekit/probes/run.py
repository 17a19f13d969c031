"""FeatureCache -> every (t, layer) cell probed -> tidy results table (and the t-SNE of one cell)."""

from __future__ import annotations

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


def run_probes(cache_path: str | Path, config: ProbeRunConfig = ProbeRunConfig(), *, progress: bool = True) -> pd.DataFrame:
    """Probe every cell of a finished cache with each probe in ``config.probes``."""
    unknown = [name for name in config.probes if name not in PROBES]
    if unknown or not config.probes:
        raise ProbekitError(f"unknown probe(s) {', '.join(unknown) or '(none given)'}: choose from {', '.join(PROBES)}")
    with FeatureCache(cache_path) as cache:
        cache.require_complete()
        if "train" not in cache.splits or "test" not in cache.splits:
            raise ProbekitError(f"{cache_path} needs a train and a test split to be probed; it has {cache.splits}")
        cells = cell_infos(cache)
        train = load_cells(cache, "train", list(cells))
        test = load_cells(cache, "test", list(cells))
        y_train, y_test = cache.labels("train"), cache.labels("test")
        num_classes = len(cache.class_names)
        attrs = cache.attrs
    scores = {
        name: run_probe(
            name, train, y_train, test, y_test, config.probe_config(name, num_classes), device=config.device, progress=progress
        )
        for name in config.probes
    }
    return scores_to_table(
        scores, cells, model=str(attrs.get("model_id")), dataset=str(attrs.get("dataset")), n_train=len(y_train)
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
