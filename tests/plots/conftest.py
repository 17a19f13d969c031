"""A small results table built directly with pandas, and a PNG checker."""

import math
from pathlib import Path

import matplotlib.image
import numpy as np
import pandas as pd
import pytest

from probekit.evaluate.results import COLUMNS

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def make_table(models=("ddpm",), probes=("linear", "knn"), n_layers=4, seed=0) -> pd.DataFrame:
    """Every (model, probe, t, layer, split, metric) row (val and test values differ), with a clean t=0 point (sigma
    0, logSNR +inf).
    """
    rng = np.random.default_rng(seed)
    grid = [
        (0, 0.0, math.inf, 1.0),
        (50, 0.2, 3.2, 0.96),
        (100, 0.34, 2.16, 0.897),
        (300, 1.1, -0.19, 0.45),
        (600, 3.0, -2.2, 0.1),
    ]
    rows = []
    for model in models:
        for probe in probes:
            for t, sigma, logsnr, alpha_bar in grid:
                for depth in range(n_layers):
                    for split in ("val", "test"):
                        value = rng.uniform(0.2, 0.9)
                        for metric in ("top1", "mean_class_recall"):
                            rows.append(
                                dict(
                                    model=model,
                                    dataset="cifar10",
                                    t=t,
                                    sigma=sigma,
                                    logsnr=logsnr,
                                    alpha_bar=alpha_bar,
                                    layer=f"up_blocks.{depth}.resnets.0",
                                    stage="up",
                                    depth=depth,
                                    probe=probe,
                                    params="",
                                    metric=metric,
                                    split=split,
                                    value=value,
                                    ci_low=value - 0.01 if metric == "top1" else math.nan,
                                    ci_high=value + 0.01 if metric == "top1" else math.nan,
                                    n_train=1000,
                                    n_eval=500,
                                )
                            )
    return pd.DataFrame(rows, columns=list(COLUMNS))


def assert_png(path: Path, min_side: int = 100) -> None:
    """The file exists, starts with the PNG signature and decodes to an RGBA image."""
    path = Path(path)
    assert path.is_file() and path.stat().st_size > 0
    assert path.read_bytes()[:8] == PNG_MAGIC
    image = matplotlib.image.imread(path)
    assert image.ndim == 3 and image.shape[2] in (3, 4)
    assert min(image.shape[:2]) >= min_side
    assert not list(path.parent.glob(".*.png"))  # no temp file left behind


@pytest.fixture
def table() -> pd.DataFrame:
    return make_table()


@pytest.fixture
def table_factory():
    return make_table


@pytest.fixture
def check_png():
    return assert_png
