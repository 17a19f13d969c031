"""Helpers shared by the figures: picking one probe's rows, labels, and atomic PNG writes."""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from probekit.core.atomic import publish
from probekit.core.errors import ProbekitError
from probekit.evaluate.results import best_cells, check_columns

METRIC_LABELS = {
    "top1": "top-1 accuracy",
    "mean_class_recall": "mean class recall",
    "alignment": "alignment (lower = more noise-invariant)",
    "uniformity": "uniformity (lower = more uniform)",
    "miou": "mIoU",
    "pixel_accuracy": "pixel accuracy",
    "pck": "PCK (per pair)",
    "pck_point": "PCK (per keypoint)",
}
#: metrics that are fractions in [0, 1], drawn in %
PERCENT_METRICS = ("top1", "mean_class_recall", "miou", "pixel_accuracy", "pck", "pck_point")


def new_figure(width: float, height: float) -> Figure:
    """A figure drawn by the Agg canvas directly.

    Going through ``matplotlib.figure.Figure`` instead of pyplot never touches the interactive
    backend (no display needed) and leaves no global figure state behind to leak memory.
    """
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def grid_figure(layer_labels: Sequence[object], n_rows: int, n_cols: int) -> Figure:
    """A figure sized for a layers x noise-levels heatmap: wider for long layer names and many
    columns, taller for many rows, each side clipped to a readable range.
    """
    longest = max(len(str(label)) for label in layer_labels)
    return new_figure(
        width=float(np.clip(2.5 + 0.07 * longest + 0.75 * n_cols, 5.0, 32.0)),
        height=float(np.clip(2.0 + 0.32 * n_rows, 3.5, 32.0)),
    )


def save_figure(fig: Figure, out_path: str | os.PathLike) -> Path:
    """Write ``fig`` as PNG to ``out_path`` atomically (temp file in the same folder, renamed)."""
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{out_path.stem}.", suffix=".png", dir=out_path.parent)
    os.close(fd)
    try:
        fig.savefig(tmp, format="png", dpi=150)
        publish(tmp, out_path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return out_path


def select_rows(
    table: pd.DataFrame,
    probe: str,
    metric: str,
    *,
    model: str | None = None,
    dataset: str | None = None,
) -> pd.DataFrame:
    """The test rows of one (model, dataset, probe, metric), one per cell.

    ``model`` / ``dataset`` may be omitted when the table holds only one of them. Figures show
    test values; the cell they mark is the val-chosen one (:func:`chosen_cell`).
    """
    check_columns(table)
    rows = table[(table["probe"] == probe) & (table["metric"] == metric)]
    if rows.empty:
        have = sorted(set(zip(table["probe"], table["metric"])))
        raise ProbekitError(f"no rows for probe={probe!r}, metric={metric!r}; the table has {have}")
    for column, wanted in (("model", model), ("dataset", dataset)):
        present = sorted(rows[column].unique())
        if wanted is None and len(present) > 1:
            raise ProbekitError(f"the table holds several {column}s {present}; pass {column}=...")
        if wanted is not None:
            if wanted not in present:
                raise ProbekitError(f"{column} {wanted!r} not in the table; it has {present}")
            rows = rows[rows[column] == wanted]
    rows = rows[rows["split"] == "test"]
    if rows.duplicated(["t", "layer"]).any():
        raise ProbekitError("the table has several rows for the same (t, layer) cell; merge or filter it first")
    return rows


def chosen_cell(
    table: pd.DataFrame, probe: str, metric: str, *, model: str | None = None, dataset: str | None = None
) -> pd.Series:
    """The val-chosen cell of one (model, dataset, probe), as its test row (see ``best_cells``)."""
    rows = table[(table["probe"] == probe) & (table["metric"] == metric)]
    model = model if model is not None else select_rows(table, probe, metric, dataset=dataset)["model"].iloc[0]
    rows = rows[rows["model"] == model]
    if dataset is not None:
        rows = rows[rows["dataset"] == dataset]
    return best_cells(rows, metric).iloc[0]


def chosen_label(best: pd.Series) -> str:
    """The label "val-chosen" or, for a table without val rows, a warning that the cell was chosen on test."""
    return "val-chosen" if best.get("chosen_on", "val") == "val" else "chosen on test"


def sanitise(name: str) -> str:
    """A file-name-safe version of ``name`` (letters, digits, '.', '_', '-')."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_") or "model"
