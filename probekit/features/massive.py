"""Massive activations: the few channels of a cell whose magnitude dwarfs every other channel's.

DiTs (and other AdaLN transformers) carry a handful of channels with huge, nearly
image-independent values (Sun et al., "Massive Activations in Large Language Models", 2024; DiTF,
2025, traces them to AdaLN-zero in DiTs). A probe or a similarity measure on such a cell is
dominated by those channels. The rule probekit applies to every (t, layer) cell:

    a channel is *massive* when its mean |feature| over the images (and, for ``avgK`` /
    ``spatialS`` cells, over the pooled positions) exceeds ``RATIO`` (100) times the median
    channel's mean |feature|.

A cell whose median channel is exactly 0 has none (the ratio is undefined). It is computed on the
clean train images (the mean over noise draws, the first :data:`SAMPLES` of them) when the
extraction finishes, recorded in the cache's ``massive_channels`` attribute (JSON: the rule and,
per ``t|layer``, the channel indices), listed by ``probekit info``, and dropped from the features
by ``probekit probe --drop-massive``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

import numpy as np

from probekit.features.cache import FeatureCache

#: a channel is massive above this multiple of the median channel's mean |feature|
RATIO = 100.0
#: train images the rule is computed on (the first ones of the split: the mean |x| settles long before)
SAMPLES = 1024
RULE = f"channel mean |feature| > {RATIO:g} x the median channel's (train split, first {SAMPLES} images)"
ATTR = "massive_channels"


def massive_channels(features: np.ndarray, channels: int, ratio: float = RATIO) -> np.ndarray:
    """Indices of the massive channels of ``features`` (N, D), D = ``channels`` x positions, channel-major."""
    return _above_ratio(channel_sums(features, channels) / max(1, features.size // channels), ratio)


def channel_sums(features: np.ndarray, channels: int) -> np.ndarray:
    """Per channel, the float64 sum of |feature| over the rows and positions of ``features`` (N, D)."""
    if features.shape[1] % channels:
        raise ValueError(f"width {features.shape[1]} is not a multiple of {channels} channels")
    return np.abs(features.reshape(len(features), channels, -1)).sum(axis=(0, 2), dtype=np.float64)


def _above_ratio(magnitude: np.ndarray, ratio: float) -> np.ndarray:
    median = float(np.median(magnitude))
    if not np.isfinite(median) or median <= 0:
        return np.zeros(0, dtype=np.int64)
    return np.flatnonzero(magnitude > ratio * median).astype(np.int64)


def keep_columns(width: int, channels: int, massive: np.ndarray) -> np.ndarray:
    """The feature columns (of ``width``, channel-major) that do not belong to a massive channel."""
    per_channel = width // channels
    dropped = np.zeros(channels, dtype=bool)
    dropped[massive] = True
    return np.flatnonzero(~np.repeat(dropped, per_channel))


def encode(cells: Mapping[tuple[int, str], np.ndarray]) -> str:
    """The ``massive_channels`` attribute: the rule and the massive channels of every cell."""
    return json.dumps(
        {
            "rule": RULE,
            "ratio": RATIO,
            "cells": {f"{t}|{layer}": [int(c) for c in found] for (t, layer), found in cells.items()},
        },
        sort_keys=True,
    )


def decode(recorded: str | Mapping) -> dict[tuple[int, str], np.ndarray]:
    """The cells of a ``massive_channels`` attribute (its JSON text, or the dict the cache reader
    decodes), by (t, layer).
    """
    cells = (json.loads(recorded) if isinstance(recorded, str) else recorded)["cells"]
    found = {}
    for key, channels in cells.items():
        t, _, layer = key.partition("|")
        found[(int(t), layer)] = np.asarray(channels, dtype=np.int64)
    return found


def cache_massive(cache: FeatureCache) -> dict[tuple[int, str], np.ndarray]:
    """Every cell's massive channels: as recorded in the cache, else computed now from its train split."""
    recorded = cache.attrs.get(ATTR)
    if recorded:
        return decode(recorded)  # type: ignore[arg-type]
    return compute(cache)


def record(path: object) -> dict[tuple[int, str], np.ndarray]:
    """Compute every cell's massive channels of the finished cache at ``path`` and record them in it."""
    import h5py

    with FeatureCache(path) as cache:  # type: ignore[arg-type]
        found = compute(cache)
    # extraction holds the output's own lock (probekit.features.output_lock) while it records them
    with h5py.File(path, "r+", locking=False) as file:  # type: ignore[arg-type]
        file.attrs[ATTR] = encode(found)
    return found


def compute(cache: FeatureCache) -> dict[tuple[int, str], np.ndarray]:
    """The massive channels of every cell of a finished cache (the rule of this module)."""
    split = "train" if "train" in cache.splits else next(iter(cache.splits))
    rows = min(SAMPLES, len(cache.labels(split)))
    found: dict[tuple[int, str], np.ndarray] = {}
    for point in cache.grid:
        for layer in cache.layers:
            # summed block by block: the memory held is one block and one sum per channel, whatever the split's size
            sums: np.ndarray | None = None
            count = 0
            channels = 0
            for _, block in cache.row_chunks(split, layer.name, point.t, stop=rows, block_bytes=1 << 20):
                if sums is None:
                    width = block.shape[1]
                    channels = layer.channels if layer.channels and width % layer.channels == 0 else width
                    sums = np.zeros(channels)
                sums += channel_sums(block, channels)
                count += block.size // channels
            found[(point.t, layer.name)] = (
                np.zeros(0, dtype=np.int64) if sums is None else _above_ratio(sums / max(1, count), RATIO)
            )
    return found
