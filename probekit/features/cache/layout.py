"""FeatureCache: the one on-disk format between extraction and probing (HDF5).

Layout (format ``probekit-features``, version 1; version 2 adds the spatial layout below)::

    /                       attrs: format, format_version, probekit_version, created, command,
                                   model_id, model_sha256, framework, schedule, dataset, dataset_info,
                                   fit, seed, pooling, draws, dtype, complete
                                   (+ prompt: the prompt template of sd: models)
    /grid/{t, model_input, alpha_bar, sigma, logsnr}          (T,)
    /layers/{name, stage, depth, channels, resolution, aliases, width}   (L,)
    /{split}/labels (N,) int64, /{split}/index (N,) int64     attrs: class_names
    /{split}/feats/{layer}  (T, S, N, D) float32|float16, chunked along N
    /{split}/done           (N,) uint8: 1 once every (t, draw, layer) of that sample is written
    /{split}/nonfinite      (T, L, N) uint32: NaN / inf values among a sample's pooled features
                            at (t, layer), over all its slots (absent in caches written before it)

``S`` is the number of (view, draw) slots of a split: slot ``view * draws + draw``. View 0 is the
un-augmented image; the train split of a cache extracted with ``--views A`` (attr ``views``)
also holds A augmented views (views 1..A), so S = (1 + A) * draws there and S = draws elsewhere.

``complete`` is set only after every sample of every split is done; readers refuse an incomplete
cache unless asked to show progress. ``D`` is the pooled width (``width`` in /layers).

A *master* file (multi-process extraction, :func:`write_master`) has the same layout, but its
datasets are virtual views of per-rank shard caches stored beside it; its ``shards`` attribute
lists their file names. A master whose shard is missing is refused when opened (HDF5 would read
the absent rows as zeros), and one whose shard is unfinished is not complete.

Version 2 (written only by spatial caches, ``--pooling spatialS``; every other cache is still
written as version 1, so older readers keep reading them): the root attribute ``spatial_side``
= S, and every ``/{split}/feats/{layer}`` holds the layer's (C, S, S) average-pooled grid,
flattened channel-major (index ``c * S * S + row * S + col``, row 0 at the image top), so
D = C * S * S; stored as float16 unless asked otherwise. Each chunk holds samples of one
(t, slot) of one layer, so a cell reads contiguously. Readers accept versions 1 and 2; a version 1
cache has ``spatial_side`` 0 (no grid).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import h5py
import numpy as np

from probekit.core.types import GridPoint, LayerInfo

FORMAT = "probekit-features"
FORMAT_VERSION = 2
#: the version of caches without a spatial grid (unchanged since version 1)
PLAIN_VERSION = 1
GRID_FIELDS = ("t", "model_input", "alpha_bar", "sigma", "logsnr")
STR_DTYPE = h5py.string_dtype()
#: per-split dataset counting NaN / inf pooled feature values per (t, layer, sample)
NONFINITE = "nonfinite"
#: per-split group of Fletcher-32 sums, one (T, S, N) uint32 dataset per layer (.checksum)
CHECKSUMS = "checksums"


@dataclass
class SplitLabels:
    labels: np.ndarray  # int64 (N,)
    index: np.ndarray  # int64 (N,) sample ids in the original split


@dataclass
class CacheLayout:
    """Everything needed to create an empty cache."""

    attrs: dict[str, object]
    grid: list[GridPoint]
    layers: list[LayerInfo]
    widths: dict[str, int]
    splits: dict[str, SplitLabels]
    class_names: list[str]
    draws: int
    dtype: str = "float32"
    views: int = 0  # augmented views of the train split (view 0, the clean image, is always there)
    spatial_side: int = 0  # S of a spatial cache (features are (C, S, S) grids); 0 for pooled vectors

    def slots(self, split: str) -> int:
        """(view, draw) slots stored per sample of ``split``."""
        return self.draws * (1 + self.views if split == "train" else 1)


#: Target size of one feature chunk: large enough for fast sequential reads of a cell, small
#: enough that a block of whole chunks of every layer fits the write buffer.
CHUNK_BYTES = 1 << 20
#: Default memory for samples waiting to fill whole chunks (``probekit extract --write-buffer``).
WRITE_BUFFER_BYTES = 256 << 20


def chunk_rows(layout: CacheLayout, split: str, buffer_bytes: int = WRITE_BUFFER_BYTES) -> int:
    """Samples per feature chunk of ``split``: one number for every layer of the split.

    Chunks are (1, 1, rows, D): probing reads one (t, slot) of every sample of one layer, so a
    chunk holds consecutive samples of one (t, slot). Extraction writes every (t, slot, layer) of
    a batch of samples; the writer buffers samples until they fill ``rows`` (whole chunks of
    every layer) and writes each chunk once. ``rows`` keeps the widest layer's chunk at most
    :data:`CHUNK_BYTES` and two buffered blocks (one filling, one a batch may spill into) within
    ``buffer_bytes``, counted as float32 (features arrive as float32 and are converted by HDF5),
    and is then evened out so that the split's blocks have (nearly) equal sizes.
    """
    n = len(layout.splits[split].labels)
    widths = [layout.widths[layer.name] for layer in layout.layers]
    itemsize = np.dtype(layout.dtype).itemsize
    per_sample = len(layout.grid) * layout.slots(split) * sum(widths) * 4
    rows = max(1, min(n, CHUNK_BYTES // (itemsize * max(widths)), buffer_bytes // (2 * per_sample)))
    # Blocks of equal size: the last chunk of a split is allocated whole, so a short last block
    # would leave up to a block of allocated, never-written bytes in the file.
    blocks = -(-n // rows)
    return -(-n // blocks)


def layout_plan(layout: CacheLayout) -> dict[str, object]:
    """What makes two extractions the same work: resuming requires an identical plan."""
    splits = {}
    for name, split in layout.splits.items():
        digest = hashlib.sha256(np.asarray(split.labels, dtype=np.int64).tobytes())
        digest.update(np.asarray(split.index, dtype=np.int64).tobytes())
        splits[name] = {"n": int(len(split.labels)), "labels_and_index_sha256": digest.hexdigest()}
    keys = (
        "model_sha256",
        "model_fingerprint",
        "framework",
        "schedule",
        "dataset",
        "fit",
        "seed",
        "pooling",
        "precision",
        "value_range",
    )
    return {
        **{key: layout.attrs.get(key) for key in keys},
        "draws": layout.draws,
        **({"views": layout.views} if layout.views else {}),  # absent when 0: older caches still resume
        # a class-name prompt changes the features but not the weights; absent when empty (older caches resume)
        **({"prompt": layout.attrs["prompt"]} if layout.attrs.get("prompt") else {}),
        "dtype": layout.dtype,
        "grid": [point.t for point in layout.grid],
        "layers": {layer.name: layout.widths[layer.name] for layer in layout.layers},
        "splits": splits,
    }
