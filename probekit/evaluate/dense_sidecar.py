"""Per-unit test outcomes of the dense analyses, beside their results CSV, and paired comparisons.

``OUT.dense.npz`` (numpy, no pickles) holds, for every cell, what each test unit contributed:

========== ===============================================================================
kind        "confusion" (segment: a (K, K) confusion matrix per test image) or
            "pck" (correspond: (correct, total) keypoints per test pair)
index       (n,) int64 test unit ids (image sample ids, or pair numbers)
t, layer    (G,) the cells
values      (G, n, K, K) int64 or (G, n, 2) int64
========== ===============================================================================

Two runs on the same test units (same images / pairs) are compared at their val-chosen cells by
a paired bootstrap: units are resampled with replacement, the same draw for both runs, and the
metric (mIoU of the summed confusions, or per-pair mean PCK) is recomputed on each draw.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from probekit.core.errors import ProbekitError
from probekit.core.specs import DENSE_TASKS
from probekit.evaluate.dense import segmentation_scores
from probekit.evaluate.results import best_cells, table_kind

Cell = tuple[int, str]
#: what each sidecar kind's units sum to: the metric recomputed on every bootstrap draw
METRIC_OF_KIND = {"confusion": "miou", "pck": "pck"}


def sidecar_path(results: str | Path) -> Path:
    results = Path(results)
    return results.with_name(results.stem + ".dense.npz")


def write_dense_sidecar(
    results: str | Path, table: pd.DataFrame, kind: str, values: dict[Cell, np.ndarray], index: np.ndarray
) -> Path:
    path = sidecar_path(results)
    cells = list(values)
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez_compressed(
        tmp,
        kind=np.array(kind),
        index=np.asarray(index, dtype=np.int64),
        t=np.array([c[0] for c in cells], dtype=np.int64),
        layer=np.array([c[1] for c in cells]),
        values=np.stack([values[c] for c in cells]).astype(np.int64),
    )
    tmp.replace(path)
    return path


@dataclass(frozen=True)
class DenseComparison:
    metric: str
    n: int
    cell_a: Cell
    cell_b: Cell
    value_a: float
    value_b: float
    diff: float
    ci_low: float
    ci_high: float
    n_boot: int


def _metric(kind: str, values: np.ndarray) -> float:
    """The split's metric from the units in ``values`` (n, ...)."""
    if kind == "confusion":
        return segmentation_scores(values.sum(axis=0))["miou"]
    return float(np.mean(values[:, 0] / values[:, 1]))


def _selection_metric(table: pd.DataFrame, kind: str) -> str:
    """The metric the table's cells are chosen on: its dense task's (:data:`DENSE_TASKS`), or, for a
    table that records no task, the metric of its sidecar's kind.
    """
    task = DENSE_TASKS.get(table_kind(table))
    return task.metric if task is not None else METRIC_OF_KIND[kind]


def _chosen(results: str | Path, table: pd.DataFrame) -> tuple[str, Cell, np.ndarray, np.ndarray]:
    path = sidecar_path(results)
    if not path.is_file():
        raise ProbekitError(f"{path} is missing: it is written beside {results} by `probekit segment` / `correspond`")
    with np.load(path, allow_pickle=False) as data:
        kind, index = str(data["kind"]), data["index"]
        cells = list(zip(data["t"].tolist(), data["layer"].tolist()))
        best = best_cells(table, _selection_metric(table, kind)).iloc[0]
        cell = (int(best["t"]), str(best["layer"]))
        return kind, cell, index, data["values"][cells.index(cell)]


def compare_dense(
    results_a: str | Path, results_b: str | Path, *, n_boot: int = 10_000, seed: int = 0, level: float = 0.95
) -> DenseComparison:
    """A minus B at each run's val-chosen cell, with a paired bootstrap interval over test units."""
    from probekit.evaluate.results import read_table

    kind_a, cell_a, index_a, values_a = _chosen(results_a, read_table(results_a))
    kind_b, cell_b, index_b, values_b = _chosen(results_b, read_table(results_b))
    if kind_a != kind_b:
        raise ProbekitError(f"{results_a} holds {kind_a} results and {results_b} {kind_b}: compare like with like")
    if not np.array_equal(index_a, index_b):
        raise ProbekitError(
            f"{results_a} and {results_b} were scored on different test units: run both on the same data"
        )
    rng = np.random.default_rng(seed)
    n = len(index_a)
    diffs = np.empty(n_boot)
    for b in range(n_boot):
        draw = rng.integers(0, n, size=n)
        diffs[b] = _metric(kind_a, values_a[draw]) - _metric(kind_a, values_b[draw])
    tail = (1 - level) / 2
    low, high = np.quantile(diffs, [tail, 1 - tail])
    value_a, value_b = _metric(kind_a, values_a), _metric(kind_a, values_b)
    return DenseComparison(
        METRIC_OF_KIND[kind_a], n, cell_a, cell_b, value_a, value_b, value_a - value_b, float(low), float(high), n_boot
    )


def format_dense_comparison(c: DenseComparison, name_a: str, name_b: str) -> str:
    return (
        f"{c.metric} on {c.n} test units: {name_a} (t={c.cell_a[0]} {c.cell_a[1]}) {100 * c.value_a:.1f} %  vs  "
        f"{name_b} (t={c.cell_b[0]} {c.cell_b[1]}) {100 * c.value_b:.1f} %  difference {100 * c.diff:+.1f} "
        f"[{100 * c.ci_low:+.1f}, {100 * c.ci_high:+.1f}] (paired bootstrap, {c.n_boot} draws)"
    )
