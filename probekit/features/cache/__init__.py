"""The feature cache: the one on-disk format between extraction and probing (HDF5).

The format and its plan live in :mod:`.layout` (read its docstring for the layout), writing and
resuming in :mod:`.writer` (its disk errors in :mod:`.disk`), reading in :mod:`.reader`, and the
master file of a multi-process extraction in :mod:`.master`. The names below are the public API.
"""

from probekit.features.cache.layout import (
    CHECKSUMS,
    CHUNK_BYTES,
    FORMAT,
    FORMAT_VERSION,
    NONFINITE,
    WRITE_BUFFER_BYTES,
    CacheLayout,
    SplitLabels,
    chunk_rows,
    layout_plan,
)
from probekit.features.cache.master import write_master
from probekit.features.cache.reader import FeatureCache
from probekit.features.cache.writer import CacheWriter, unfinished_precision

__all__ = [
    "CHECKSUMS",
    "CHUNK_BYTES",
    "FORMAT",
    "FORMAT_VERSION",
    "NONFINITE",
    "WRITE_BUFFER_BYTES",
    "CacheLayout",
    "CacheWriter",
    "FeatureCache",
    "SplitLabels",
    "chunk_rows",
    "layout_plan",
    "unfinished_precision",
    "write_master",
]
