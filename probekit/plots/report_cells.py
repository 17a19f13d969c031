"""The report's cell panels: what a click on one (model, probe, t, layer) cell opens.

For every cell of a probe or fusion run the page holds its numbers from the results table (val and
test top-1, the Wilson interval, mean class recall, the setting chosen on val) and, from the
predictions sidecar, its test confusion matrix and per-class recall. Numbers are formatted here so
that the panel shows exactly what the tables hold.

Size budget: a confusion matrix is K x K small integers per cell (about 0.3 kB for 10 classes),
so every cell carries one; images (nearest-neighbour thumbnails, embeddings) are not embedded.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from probekit.evaluate.predictions import PredictionSet, predictions_path, read_predictions
from probekit.plots.report_figures import cell_key, noise_text
from probekit.plots.report_tables import FUSED, percent, table_kind

# Above this many classes a confusion matrix no longer reads as a table: the panel shows per-class recall only.
MAX_CONFUSION_CLASSES = 30


def confusion(labels: np.ndarray, predicted: np.ndarray, n_classes: int) -> np.ndarray:
    """(K, K) counts: row = true class, column = predicted class."""
    counts = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(counts, (labels, predicted), 1)
    return counts


def class_names(dataset: str, n_classes: int, caches: Sequence[Path] = ()) -> list[str]:
    """Class names from a cache of the same dataset, else from the built-in IDX datasets, else 0..K-1."""
    from probekit.features.cache import FeatureCache

    for path in caches:
        with FeatureCache(path) as cache:
            if cache.attrs.get("dataset") == dataset and len(cache.class_names) == n_classes:
                return [str(name) for name in cache.class_names]
    from probekit.data.idx import SOURCES

    known = SOURCES.get(dataset)
    if known is not None and len(known.class_names) == n_classes:
        return list(known.class_names)
    return [str(k) for k in range(n_classes)]


def _row(predictions: PredictionSet | None, probe: str, t: int, layer: str) -> np.ndarray | None:
    if predictions is None:
        return None
    for m, key in enumerate(zip(predictions.probe, predictions.t, predictions.layer)):
        if key == (probe, int(t), layer):
            return predictions.predictions[m]
    return None


def _metric(rows: pd.DataFrame, metric: str, split: str) -> float:
    value = rows[(rows["metric"] == metric) & (rows["split"] == split)]["value"]
    return float(value.iloc[0]) if len(value) else math.nan


def cell_panels(tables: dict[Path, pd.DataFrame], caches: Sequence[Path] = ()) -> tuple[dict[str, dict], dict]:
    """Every cell of the probe and fusion runs, keyed by :func:`cell_key`, and the class names per
    dataset. A cell's entry holds display strings (numbers as the tables print them) and, where the
    run has a predictions sidecar, ``confusion`` (K x K counts) and ``recall`` (per class, in %).
    """
    cells: dict[str, dict] = {}
    names: dict[str, list[str]] = {}
    for path, table in tables.items():
        if table_kind(table) not in ("probe", "fusion"):
            continue
        sidecar = predictions_path(path)
        predictions = read_predictions(sidecar) if sidecar.is_file() else None
        for (model, dataset, probe, t, layer), rows in table.groupby(
            ["model", "dataset", "probe", "t", "layer"], sort=False
        ):
            test = rows[(rows["metric"] == "top1") & (rows["split"] == "test")]
            if test.empty:
                continue
            first = test.iloc[0]
            fused = layer == FUSED
            entry = {
                "key": cell_key(model, probe, t, layer),
                "file": path.name,
                "model": str(model),
                "dataset": str(dataset),
                "probe": str(probe),
                "cell": str(first.get("cells", "")).replace(";", "; ") if fused else f"t={int(t)} {layer}",
                "noise": "" if fused else noise_text(t, float(first["sigma"]), float(first["logsnr"])),
                "stage": "" if fused else f"{first['stage']}, depth {int(first['depth'])}",
                "setting": "" if pd.isna(first["params"]) else str(first["params"]),
                "val": percent(_metric(rows, "top1", "val")),
                "test": percent(float(first["value"])),
                "interval": f"[{percent(first['ci_low'])}, {percent(first['ci_high'])}]",
                "recall_mean": percent(_metric(rows, "mean_class_recall", "test")),
                "n_eval": int(first["n_eval"]),
                "n_train": int(first["n_train"]),
            }
            entry["kind"] = "classify"
            entry["numbers"] = {
                "header": ["val top-1 %", "test top-1 %", "Wilson 95 %", "mean class recall %", "setting"]
                + ["test images", "fit images"],
                "row": [entry[k] for k in ("val", "test", "interval", "recall_mean", "setting", "n_eval", "n_train")],
            }
            predicted = _row(predictions, str(probe), int(t), str(layer))
            if predicted is not None and predictions is not None:
                labels = predictions.labels
                k = int(max(labels.max(), predicted.max())) + 1
                if str(dataset) not in names:
                    names[str(dataset)] = class_names(str(dataset), k, caches)
                k = max(k, len(names[str(dataset)]))
                counts = confusion(labels, predicted, k)
                support = counts.sum(axis=1)
                entry["recall"] = [f"{100 * counts[c, c] / support[c]:.1f}" if support[c] else "–" for c in range(k)]
                entry["support"] = support.tolist()
                if k <= MAX_CONFUSION_CLASSES:
                    entry["confusion"] = counts.tolist()
            cells[str(entry["key"])] = entry
    return cells, names
