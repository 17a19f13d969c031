"""The host side of extraction: decode, resize, augment and convert batches in parallel workers.

A :class:`torch.utils.data.DataLoader` with ``workers`` processes runs over the batches still to
extract of one split (each item is one whole batch, so the batch boundaries, and with them the
resume flags, are those of the serial loop). Workers decode (lazy datasets read just their batch),
bring images to one size, draw the augmented views and, on the CPU, convert uint8 to float; the
main process runs the network meanwhile. On CUDA the uint8 batch travels in pinned memory with a
non-blocking copy (a quarter of float32's bytes) and is converted on the device.

Nothing here depends on the number of workers: views are keyed by (seed, split, sample id, view)
and each batch is produced by the same function whichever process runs it, so features are bit
for bit those of ``workers=0`` (the serial loop in the main process).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from probekit.core import threads
from probekit.core.errors import ProbekitError
from probekit.data.augment import crop_flip_views
from probekit.data.base import ImageSplit
from probekit.data.transforms import fit_tensor

#: batches each worker keeps ready ahead of the network
PREFETCH = 2
#: the most workers ``auto`` starts (decode rarely needs more per GPU)
MAX_AUTO_WORKERS = 8


@dataclass(frozen=True)
class Converter:
    """uint8 (B, H, W, C) -> the float (B, C, H, W) tensor the network takes (:func:`fit_tensor`)."""

    size: tuple[int, int] | None
    channels: int | None
    value_range: tuple[float, float]
    fit: str
    channels_last: bool = False

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        x, _ = fit_tensor(images, size=self.size, channels=self.channels, value_range=self.value_range, fit=self.fit)
        if self.channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        return x


@dataclass
class HostBatch:
    """One batch as the host prepared it: positions [start, stop) in the split, sample ids,
    labels, and one tensor per view (uint8 (B, H, W, C) when the device converts, else float
    (B, C, H, W)).
    """

    start: int
    stop: int
    ids: np.ndarray
    labels: np.ndarray
    views: list[torch.Tensor]

    def pin_memory(self) -> HostBatch:
        """Called by the loader's pinning thread on CUDA: page-locked views copy asynchronously."""
        return HostBatch(self.start, self.stop, self.ids, self.labels, [view.pin_memory() for view in self.views])


@dataclass
class _Failure:
    """A ProbekitError raised in a worker, carried back as a value so the message stays one line."""

    message: str


class _SplitBatches(Dataset):
    def __init__(
        self,
        split: ImageSplit,
        bounds: Sequence[tuple[int, int]],
        views: int,
        *,
        seed: int,
        split_name: str,
        convert: Converter | None,
    ) -> None:
        self.split, self.bounds, self.views = split, list(bounds), views
        self.seed, self.split_name, self.convert = seed, split_name, convert

    def __len__(self) -> int:
        return len(self.bounds)

    def __getitem__(self, item: int) -> HostBatch | _Failure:
        try:
            return self._batch(item)
        except ProbekitError as err:
            return _Failure(str(err))

    def _batch(self, item: int) -> HostBatch:
        start, stop = self.bounds[item]
        ids = self.split.index[start:stop]
        pixels = self.split.read(slice(start, stop))  # lazy datasets decode just this batch
        views = []
        for view in range(self.views):
            images = (
                pixels if view == 0 else crop_flip_views(pixels, ids, seed=self.seed, split=self.split_name, view=view)
            )
            tensor = torch.from_numpy(np.ascontiguousarray(images))
            views.append(tensor if self.convert is None else self.convert(tensor))
        return HostBatch(start, stop, ids, self.split.labels[start:stop], views)


def auto_workers(splits: Sequence[ImageSplit]) -> int:
    """The ``--workers`` default: none when every split is in memory at its size (nothing to decode),
    else one per core but one (the main process runs the network), at most :data:`MAX_AUTO_WORKERS`.
    """
    if all(not split.lazy and split.size is None for split in splits):
        return 0
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(MAX_AUTO_WORKERS, cores - 1))


def host_batches(
    split: ImageSplit,
    bounds: Sequence[tuple[int, int]],
    views: int,
    *,
    seed: int,
    split_name: str,
    convert: Converter,
    device: torch.device,
    workers: int,
) -> Iterator[tuple[HostBatch, list[torch.Tensor]]]:
    """Each batch of ``bounds`` (in order) with its views as float tensors on ``device``.

    ``views``: how many views per image (1 + augmented ones). With ``workers`` > 0 the batches are
    prepared by that many processes, ``PREFETCH`` batches ahead each.
    """
    if workers < 0:
        raise ProbekitError(f"--workers must be 0 (decode in the main process) or more, got {workers}")
    threads.configure()  # the forward that consumes these batches runs on the process's thread counts
    on_device = device.type == "cuda"  # uint8 over the bus, converted by the GPU
    dataset = _SplitBatches(
        split, bounds, views, seed=seed, split_name=split_name, convert=None if on_device else convert
    )
    loader = DataLoader(
        dataset,
        batch_size=None,
        shuffle=False,
        num_workers=workers,
        pin_memory=on_device,
        prefetch_factor=PREFETCH if workers else None,
        collate_fn=_identity,
        worker_init_fn=threads.worker_init if workers else None,  # the workers are the parallelism
    )
    iterator = iter(loader)
    try:
        for batch in iterator:
            if isinstance(batch, _Failure):
                raise ProbekitError(batch.message)
            moved = [view.to(device, non_blocking=True) for view in batch.views]
            yield batch, [convert(view) for view in moved] if on_device else moved
    finally:
        del iterator  # stops the workers now, not at garbage collection


def _identity(batch: object) -> object:
    return batch
