"""Cell panels of the dense runs (``segment``, ``correspond``), from their results table and sidecar.

A segmentation cell's panel holds its val and test mIoU and pixel accuracy, the pixel confusion
matrix summed over the test images and each class's IoU; a correspondence cell's panel holds its
PCK per pair and per keypoint and the test pairs where it goes most wrong (fewest keypoints
within the threshold). Numbers are formatted here, as the tables print them.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from probekit.plots.report_figures import cell_key, noise_text
from probekit.plots.report_tables import DENSE, percent, table_kind

# A correspondence panel lists this many of its worst test pairs.
WORST_PAIRS = 8


def _value(rows: pd.DataFrame, metric: str, split: str) -> str:
    value = rows[(rows["metric"] == metric) & (rows["split"] == split)]["value"]
    return percent(float(value.iloc[0])) if len(value) else ""


def segment_classes(dataset: str, n_classes: int) -> list[str]:
    """Mask class names from the segmentation folder's ``classes.txt`` when it is here, else 0..K-1."""
    names = Path(dataset) / "classes.txt"
    if names.is_file():
        lines = [line.strip() for line in names.read_text().splitlines() if line.strip()]
        if len(lines) == n_classes:
            return lines
    return [str(k) for k in range(n_classes)]


def iou_per_class(confusion: np.ndarray) -> list[str]:
    """Each class's IoU in % (true positives over the union of its true and predicted pixels); "–" if absent."""
    hits = np.diag(confusion).astype(np.float64)
    union = confusion.sum(axis=0) + confusion.sum(axis=1) - hits
    return [f"{100 * h / u:.1f}" if u > 0 else "–" for h, u in zip(hits, union)]


def dense_panels(tables: dict[Path, pd.DataFrame]) -> tuple[dict[str, dict], dict[str, list[str]]]:
    """Every cell of the dense runs keyed by :func:`cell_key`, and the mask class names per dataset."""
    from probekit.evaluate.dense_sidecar import sidecar_path

    cells: dict[str, dict] = {}
    names: dict[str, list[str]] = {}
    for path, table in tables.items():
        kind = table_kind(table)
        if kind not in DENSE:
            continue
        metric, second = DENSE[kind].metric, DENSE[kind].second
        sidecar = sidecar_path(path)
        values: dict[tuple[int, str], np.ndarray] = {}
        index = np.zeros(0, dtype=np.int64)
        if sidecar.is_file():
            with np.load(sidecar, allow_pickle=False) as z:
                index = z["index"]
                values = {(int(t), str(layer)): v for t, layer, v in zip(z["t"], z["layer"], z["values"])}
        for (model, dataset, probe, t, layer), rows in table.groupby(
            ["model", "dataset", "probe", "t", "layer"], sort=False
        ):
            test = rows[(rows["metric"] == metric) & (rows["split"] == "test")]
            if test.empty:
                continue
            first = test.iloc[0]
            entry: dict[str, object] = {
                "key": cell_key(model, probe, t, layer),
                "kind": kind,
                "file": path.name,
                "model": str(model),
                "dataset": str(dataset),
                "probe": str(probe),
                "cell": f"t={int(t)} {layer}",
                "noise": noise_text(t, float(first["sigma"]), float(first["logsnr"])),
                "stage": f"{first['stage']}, depth {int(first['depth'])}",
                "numbers": {
                    "header": [f"val {metric} %", f"test {metric} %", f"val {second} %", f"test {second} %", "setting"]
                    + ["test units"],
                    "row": [
                        _value(rows, metric, "val"),
                        _value(rows, metric, "test"),
                        _value(rows, second, "val"),
                        _value(rows, second, "test"),
                        "" if pd.isna(first["params"]) else str(first["params"]),
                        int(first["n_eval"]) if math.isfinite(first["n_eval"]) else "",
                    ],
                },
            }
            units = values.get((int(t), str(layer)))
            if units is not None and DENSE[kind].sidecar_kind == "confusion":
                summed = units.sum(axis=0)
                if str(dataset) not in names:
                    names[str(dataset)] = segment_classes(str(dataset), len(summed))
                entry["confusion"] = summed.tolist()
                entry["support"] = summed.sum(axis=1).tolist()
                entry["iou"] = iou_per_class(summed)
            elif units is not None:
                per_pair = units[:, 0] / np.maximum(units[:, 1], 1)
                worst = np.argsort(per_pair, kind="stable")[:WORST_PAIRS]
                entry["worst"] = [
                    [int(index[i]), f"{int(units[i, 0])} / {int(units[i, 1])}", f"{100 * per_pair[i]:.1f}"]
                    for i in worst
                ]
            cells[str(entry["key"])] = entry
    return cells, names
