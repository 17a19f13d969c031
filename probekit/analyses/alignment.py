"""Alignment and uniformity of cached features (Wang & Isola 2020), per (timestep, layer) cell.

Both are computed on L2-normalised features, as DDAE's ``contrastive.py`` does:

* alignment  = mean over images x of ``||f(x, e1) - f(x, e2)||^2`` where ``e1``, ``e2`` are two
  independent noise draws (or views) of the same image. Range [0, 4]; lower = more invariant to
  the noise draw. With K > 2 draws it is the mean over all K(K-1)/2 pairs of draws.
* uniformity = ``log mean_{x != y} exp(-2 ||f(x) - f(y)||^2)`` over pairs of distinct images of
  one draw, averaged over the draws. Range [-4, 0]; lower = features spread more evenly on the
  sphere.

Uniformity needs every pair of images. Above ``max_points`` images a seeded random subset of
``max_points`` images is used (all pairs inside it); the rows then record ``n_eval`` as the
subset size. DDAE itself averages per-batch values over batches of 128 images, which is a
coarser subsample of the same quantity.

Torch-free (numpy only): it reads the cache and writes the results table.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from probekit.core.errors import ProbekitError
from probekit.features.cache import FeatureCache

METRICS = ("alignment", "uniformity")
#: the ``probe`` column of the rows this module writes
PROBE = "geometry"

_ROW_BLOCK = 1024  # rows of the pairwise-distance matrix held in memory at once


@dataclass
class AlignConfig:
    """``split``: the cache split to measure (rows record it in the ``split`` column);
    ``max_points``: images kept for uniformity.
    """

    split: str = "test"
    max_points: int = 4096
    seed: int = 0


def normalise(x: np.ndarray) -> np.ndarray:
    """Rows of ``x`` scaled to unit L2 norm (float64); an all-zero row stays zero."""
    x = np.asarray(x, dtype=np.float64)
    norms = np.linalg.norm(x, axis=-1, keepdims=True)
    return x / np.where(norms > 0, norms, 1.0)


def alignment(a: np.ndarray, b: np.ndarray) -> float:
    """Mean squared distance between matching rows of ``a`` and ``b`` after L2 normalisation."""
    if a.shape != b.shape or a.ndim != 2:
        raise ProbekitError(f"alignment needs two (N, D) arrays of one shape, got {a.shape} and {b.shape}")
    diff = normalise(a) - normalise(b)
    return float(np.mean(np.sum(diff * diff, axis=1)))


def uniformity(x: np.ndarray, t: float = 2.0) -> float:
    """``log mean exp(-t ||xi - xj||^2)`` over all pairs i < j of L2-normalised rows of ``x``."""
    if x.ndim != 2 or len(x) < 2:
        raise ProbekitError(f"uniformity needs at least two images, got features of shape {x.shape}")
    z = normalise(x)
    sq = np.sum(z * z, axis=1)
    # Log-sum-exp over the strict upper triangle, block by block so memory stays O(block x N).
    running_max, running_sum, count = -math.inf, 0.0, 0
    for start in range(0, len(z) - 1, _ROW_BLOCK):
        stop = min(start + _ROW_BLOCK, len(z) - 1)
        block = z[start:stop]
        d2 = np.maximum(sq[start:stop, None] + sq[None, :] - 2.0 * block @ z.T, 0.0)
        rows, cols = np.triu_indices(stop - start, k=1, m=len(z) - start)
        values = -t * d2[:, start:][rows, cols]
        if values.size == 0:
            continue
        block_max = float(values.max())
        new_max = max(running_max, block_max)
        running_sum = running_sum * math.exp(running_max - new_max) + float(np.exp(values - new_max).sum())
        running_max, count = new_max, count + values.size
    return running_max + math.log(running_sum) - math.log(count)


def subsample(n: int, max_points: int, seed: int) -> np.ndarray:
    """Sorted positions of a seeded random subset of ``max_points`` of ``n`` images (all when n <= max_points)."""
    if n <= max_points:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=max_points, replace=False))


def cell_metrics(draws: np.ndarray, positions: np.ndarray) -> tuple[float, float]:
    """(alignment, uniformity) of one cell from its (K, N, D) draws; uniformity on ``positions``."""
    k = draws.shape[0]
    if k < 2:
        raise ProbekitError("alignment needs at least two noise draws per image: extract with --draws 2 or more")
    pairs = [(i, j) for i in range(k) for j in range(i + 1, k)]
    align = float(np.mean([alignment(draws[i], draws[j]) for i, j in pairs]))
    uniform = float(np.mean([uniformity(draws[i][positions]) for i in range(k)]))
    return align, uniform


def measure(
    cache_path: str | Path, config: AlignConfig = AlignConfig(), *, cells: Iterable[tuple[int, str]] | None = None
) -> pd.DataFrame:
    """Alignment and uniformity of every (t, layer) cell of a cache as results-table rows.

    Rows have ``probe`` = ``geometry``, ``metric`` in {alignment, uniformity}, ``split`` = the
    measured split, ``value`` in the units of the module docstring, NaN intervals, ``n_train`` =
    images in the split and ``n_eval`` = images in the uniformity subset. Only the clean image's
    noise draws are used (view 0), never augmented views.
    """
    with FeatureCache(cache_path) as cache:
        cache.require_complete()
        if config.split not in cache.splits:
            raise ProbekitError(
                f"split {config.split!r} is not in {cache_path} (its splits: {', '.join(cache.splits)})"
            )
        if config.max_points < 2:
            raise ProbekitError(f"--max-points must be at least 2, got {config.max_points}")
        draws = cache.draws
        if draws < 2:
            raise ProbekitError(
                f"{cache_path} holds {draws} noise draw per image; alignment needs two: re-extract with --draws 2"
            )
        n = len(cache.labels(config.split))
        positions = subsample(n, config.max_points, config.seed)
        attrs = cache.attrs
        grid = {point.t: point for point in cache.grid}
        layers = {layer.name: layer for layer in cache.layers}
        wanted = list(cells) if cells is not None else [(t, name) for t in grid for name in layers]
        rows = []
        for t, name in wanted:
            stack = np.stack([cache.draw_features(config.split, name, t, d) for d in range(draws)])
            align, uniform = cell_metrics(stack, positions)
            point, layer = grid[t], layers[name]
            for metric, value in (("alignment", align), ("uniformity", uniform)):
                rows.append(
                    {
                        "model": str(attrs.get("model_id")),
                        "dataset": str(attrs.get("dataset")),
                        "t": t,
                        "sigma": point.sigma,
                        "logsnr": point.logsnr,
                        "alpha_bar": point.alpha_bar,
                        "layer": name,
                        "stage": layer.stage,
                        "depth": layer.depth,
                        "probe": PROBE,
                        "params": "",
                        "metric": metric,
                        "split": config.split,
                        "value": value,
                        "ci_low": math.nan,
                        "ci_high": math.nan,
                        "n_train": n,
                        "n_eval": len(positions),
                    }
                )
    return pd.DataFrame(rows)
