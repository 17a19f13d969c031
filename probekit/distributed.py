"""Multi-process extraction under ``torchrun``: one shard file per rank, one master file over them.

Rank ``r`` of ``W`` extracts a contiguous slice of every split into ``OUT.rank{r}-of-{W}.h5`` (a
normal cache, resumable on its own). Once every rank is done, rank 0 writes ``OUT``: a small HDF5
file whose datasets are *virtual*, mapping each slice back into place, so ``FeatureCache(OUT)``
reads exactly like a single-process cache. Noise is keyed per sample, so the merged features match
a single-process run. Shard files must stay beside the master file (names are stored relative).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, replace
from datetime import timedelta
from pathlib import Path
from typing import Sequence

import h5py
import numpy as np

from .data import ImageDataset
from .errors import ProbekitError


@dataclass(frozen=True)
class Rank:
    rank: int
    world_size: int
    local_rank: int


def current_rank() -> Rank | None:
    """This process's place in a ``torchrun`` launch, or None when run as a single process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return None
    return Rank(int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0")))


def shard_path(out: str | Path, rank: int, world_size: int) -> Path:
    """``feats.h5`` -> ``feats.rank0-of-2.h5`` (beside the master file)."""
    out = Path(out)
    return out.with_name(f"{out.stem}.rank{rank}-of-{world_size}{out.suffix or '.h5'}")


def shard_bounds(n: int, rank: int, world_size: int) -> tuple[int, int]:
    """[start, stop) of rank ``rank``'s contiguous slice of ``n`` samples."""
    return n * rank // world_size, n * (rank + 1) // world_size


def shard_dataset(dataset: ImageDataset, rank: int, world_size: int) -> ImageDataset:
    """The slice of every split that ``rank`` extracts."""
    splits = {}
    for name, split in dataset.splits.items():
        if len(split.labels) < world_size:
            raise ProbekitError(
                f"the {name} split has {len(split.labels)} samples, fewer than the {world_size} processes: use fewer processes"
            )
        start, stop = shard_bounds(len(split.labels), rank, world_size)
        splits[name] = split.take(slice(start, stop))  # lazy splits stay lazy: no pixels are read here
    return replace(dataset, splits=splits)


def init_process_group(device_type: str) -> None:
    """Join the ``torchrun`` group (NCCL on GPUs, gloo on CPUs); a long timeout lets slow shards finish."""
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device_type == "cuda" else "gloo", timeout=timedelta(hours=48))


def barrier() -> None:
    import torch.distributed as dist

    if dist.is_initialized():
        dist.barrier()


def write_master(out: str | Path, shards: Sequence[str | Path], *, command: str = "") -> Path:
    """Write ``out``: virtual datasets that stitch the shard caches together along the sample axis.

    Written to a temporary name and renamed, so a crash never leaves a half-written master file.
    """
    out = Path(out)
    shards = [Path(s) for s in shards]
    opened = [h5py.File(path, "r", locking=False) for path in shards]
    tmp = out.with_name(out.name + ".tmp")
    try:
        first = opened[0]
        with h5py.File(tmp, "w") as master:
            for key, value in first.attrs.items():
                master.attrs[key] = value
            master.attrs["command"] = command or first.attrs.get("command", "")
            master.attrs["shards"] = json.dumps([path.name for path in shards])
            master.attrs["complete"] = all(bool(f.attrs.get("complete", False)) for f in opened)
            for group in ("grid", "layers"):
                first.copy(first[group], master, name=group)
            splits = [name for name in first if name not in ("grid", "layers")]
            for split in splits:
                _stitch_split(master, opened, shards, split)
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
    names = ["labels", "index", "done"] + [f"feats/{layer}" for layer in opened[0][split]["feats"]]
    group.create_group("feats")
    for name in names:
        parts = [f[split][name] for f in opened]
        axis = 0 if parts[0].ndim == 1 else 2  # feats are (T, K, N, D)
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
