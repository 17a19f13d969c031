"""Dense scores as rows of the results table (:mod:`probekit.evaluate.results`), so heatmaps and summaries read them."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict

import pandas as pd

from probekit.core.types import CellInfo
from probekit.evaluate.results import COLUMNS

Cell = tuple[int, str]


def dense_rows(
    scores: Mapping[Cell, Mapping[str, Mapping[str, float]]],
    cells: Mapping[Cell, CellInfo],
    *,
    probe: str,
    metrics: Sequence[str],
    model: str,
    dataset: str,
    n_train: int,
    params: str = "",
) -> pd.DataFrame:
    """``scores[cell][split][metric]`` (fractions; ``n_eval`` per split) -> tidy rows, val before test.

    No interval is computed per cell (ci_low / ci_high are NaN): pixels and keypoints of one image
    are not independent, so intervals come from the paired image-level bootstrap instead.
    """
    rows = []
    for cell, per_split in scores.items():
        info = cells[cell]
        for split in ("val", "test"):
            if split not in per_split:
                continue
            for metric in metrics:
                rows.append(
                    {
                        "model": model,
                        "dataset": dataset,
                        **asdict(info),  # t, sigma, logsnr, alpha_bar, layer, stage, depth
                        "probe": probe,
                        "params": params,
                        "metric": metric,
                        "split": split,
                        "value": per_split[split][metric],
                        "ci_low": math.nan,
                        "ci_high": math.nan,
                        "n_train": n_train,
                        "n_eval": int(per_split[split]["n_eval"]),
                    }
                )
    return pd.DataFrame(rows, columns=list(COLUMNS))
