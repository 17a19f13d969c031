"""One extraction job, launched as one process or as one rank of ``torchrun``: the output held
before the model loads, the rank's shard extracted, the master file written over the shards.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from probekit.data import ImageDataset
from probekit.features.cache import write_master
from probekit.features.distributed import (
    barrier,
    current_rank,
    init_process_group,
    shard_dataset,
    shard_path,
    share_weight_hashes,
)
from probekit.features.extraction import ExtractConfig, extract
from probekit.features.output_lock import exclusive_output

if TYPE_CHECKING:
    from probekit.models.backbone import Backbone


def extract_launched(
    out: str | Path,
    open_job: Callable[[], tuple[Backbone, ImageDataset]],
    config: ExtractConfig,
    *,
    command: str,
    overwrite: bool,
    progress: bool,
    write_buffer: int,
) -> Path:
    """:func:`~probekit.features.extraction.extract` into ``out`` as one process, or as this rank of a
    ``torchrun`` launch (its shard of every split into its shard file; rank 0 then writes ``out``).

    ``open_job`` loads the model and the data; it runs only once this process holds its output
    file, so a second extraction into the same file is refused before it loads a model.
    """
    rank = current_rank()
    target = Path(out) if rank is None else shard_path(out, rank.rank, rank.world_size)
    with contextlib.ExitStack() as held:
        if target.parent.is_dir() and not target.is_dir():
            held.enter_context(exclusive_output(target))
        backbone, dataset = open_job()
        if rank is not None:
            init_process_group(backbone.device.type)
            share_weight_hashes(backbone)  # one rank hashes, the others take its result
            dataset = shard_dataset(dataset, rank.rank, rank.world_size)
            progress = progress and rank.rank == 0
        written = extract(
            backbone,
            dataset,
            target,
            config,
            command=command,
            overwrite=overwrite,
            progress=progress,
            write_buffer=write_buffer,
        )
    if rank is None:
        return written
    barrier()
    if rank.rank == 0:
        shards = [shard_path(out, r, rank.world_size) for r in range(rank.world_size)]
        written = write_master(out, shards, command=command)
        print(f"wrote {written} over {rank.world_size} shards")
    barrier()
    return Path(out)
