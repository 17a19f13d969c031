"""Multi-process extraction under ``torchrun``: one shard file per rank, one master file over them.

Rank ``r`` of ``W`` extracts a contiguous slice of every split into ``OUT.rank{r}-of-{W}.h5`` (a
normal cache, resumable on its own). Once every rank is done, rank 0 writes ``OUT`` with
:func:`probekit.features.cache.write_master` (the cache module owns the format, shard merging included).
Noise is keyed per sample, so the merged features match a single-process run.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from probekit.core.errors import ProbekitError
from probekit.data import ImageDataset
from probekit.features.cache import write_master  # noqa: F401  (re-exported: the merger lives with the format)

if TYPE_CHECKING:
    from probekit.models.backbone import Backbone


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
                f"the {name} split has {len(split.labels)} samples, fewer than the {world_size} processes: use fewer "
                "processes"
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


def share_weight_hashes(backbone: Backbone) -> None:
    """Rank 0 hashes the weights (or finds them remembered) and hands the hashes to every rank, so
    a launch of N processes pays the hash once, not N times.
    """
    import torch.distributed as dist

    if not dist.is_initialized():
        return
    payload: list[object] = [None]
    if dist.get_rank() == 0:
        backbone.weights_sha256()
        backbone.encoder_sha256()
        payload = [backbone.known_hashes()]
    dist.broadcast_object_list(payload, src=0)
    if dist.get_rank() != 0:
        backbone.adopt_hashes(payload[0])  # type: ignore[arg-type]
