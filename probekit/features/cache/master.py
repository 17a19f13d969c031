"""The master file of a multi-process extraction: virtual datasets over the per-rank shard caches."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import h5py
import numpy as np

from probekit.features.cache.layout import CHECKSUMS, NONFINITE


def write_master(out: str | Path, shards: Sequence[str | Path], *, command: str = "") -> Path:
    """Write ``out``: virtual datasets that stitch the shard caches together along the sample axis.

    The shards must stay beside ``out`` (their names are stored relative, in the ``shards``
    attribute). The master is complete only when every shard is; :class:`FeatureCache` re-checks
    the shards each time it opens a master. Written to a temporary name and renamed, so a crash
    never leaves a half-written master file.
    """
    out = Path(out)
    shard_paths = [Path(s) for s in shards]
    opened = [h5py.File(path, "r", locking=False) for path in shard_paths]
    tmp = out.with_name(out.name + ".tmp")
    try:
        first = opened[0]
        with h5py.File(tmp, "w") as master:
            for key, value in first.attrs.items():
                master.attrs[key] = value
            master.attrs["command"] = command or first.attrs.get("command", "")
            master.attrs["shards"] = json.dumps([path.name for path in shard_paths])
            master.attrs["complete"] = all(bool(f.attrs.get("complete", False)) for f in opened)
            for group in ("grid", "layers"):
                first.copy(first[group], master, name=group)
            splits = [name for name in first if name not in ("grid", "layers")]
            for split in splits:
                _stitch_split(master, opened, shard_paths, split)
        os.replace(tmp, out)
    finally:
        for f in opened:
            f.close()
        tmp.unlink(missing_ok=True)
    return out


def _stitch_split(master: h5py.File, opened: list[h5py.File], shards: list[Path], split: str) -> None:
    group = master.create_group(split)
    for key, value in opened[0][split].attrs.items():
        group.attrs[key] = value
    names = (
        ["labels", "index", "done"]
        + [NONFINITE] * (NONFINITE in opened[0][split])
        + [f"feats/{layer}" for layer in opened[0][split]["feats"]]
        + [f"{CHECKSUMS}/{layer}" for layer in opened[0][split].get(CHECKSUMS, {})]
    )
    group.create_group("feats")
    if CHECKSUMS in opened[0][split]:
        group.create_group(CHECKSUMS)
    for name in names:
        parts = [f[split][name] for f in opened]
        axis = {1: 0, 3: 2, 4: 2}[parts[0].ndim]  # feats are (T, K, N, D), nonfinite and checksums (T, ., N)
        shape = list(parts[0].shape)
        shape[axis] = sum(p.shape[axis] for p in parts)
        layout = h5py.VirtualLayout(shape=tuple(shape), dtype=parts[0].dtype)
        offset = 0
        for part, path in zip(parts, shards):
            n = part.shape[axis]
            source = h5py.VirtualSource(path.name, part.name, shape=part.shape)
            index: list[slice] = [slice(None)] * len(shape)
            index[axis] = slice(offset, offset + n)
            layout[tuple(index)] = source
            offset += n
        group.create_virtual_dataset(name, layout, fillvalue=np.zeros((), dtype=parts[0].dtype))
