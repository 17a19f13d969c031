"""What an extraction holds: the features' bytes on disk and in flight, the batch size that fits
``--max-memory``, and each activation kind's share of the file.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from probekit.core.errors import ProbekitError
from probekit.features.cache import CacheLayout
from probekit.features.latents import LatentStore, view_name

#: batches whose features can be held at once: the one computing and the writer's queue
_BATCHES_IN_FLIGHT = 3


def feature_budget(
    widths: Mapping[str, int],
    grid_points: int,
    slots: Mapping[str, int],
    samples: Mapping[str, int],
    dtype: str,
    draws: int,
    batch_size: int,
) -> tuple[int, int]:
    """(disk bytes of the features, float32 bytes one batch of features holds in memory).

    A train batch holds every grid point x (view, draw) slot of the split with the most slots;
    up to :data:`_BATCHES_IN_FLIGHT` such batches are held at once (the activations of the
    forward itself are not counted).
    """
    width = sum(widths.values())
    disk = grid_points * width * np.dtype(dtype).itemsize * sum(slots[s] * samples[s] for s in samples)
    batch = grid_points * max(slots.values()) * batch_size * width * 4
    return disk, batch


def _size(num_bytes: int) -> str:
    return f"{num_bytes / 2**30:.2f} GiB" if num_bytes >= 2**30 else f"{num_bytes / 2**20:.1f} MiB"


def _fit_batch_size(batch_bytes_per_image: int, batch_size: int, budget: int | None) -> int:
    """The largest batch size <= ``batch_size`` whose in-flight features fit ``budget`` bytes."""
    if budget is None:
        return batch_size
    fitting = budget // (_BATCHES_IN_FLIGHT * batch_bytes_per_image)
    if fitting < 1:
        raise ProbekitError(
            f"--max-memory {budget / 2**20:.0f} MiB cannot hold the features of even one image in flight "
            f"({_BATCHES_IN_FLIGHT} x {batch_bytes_per_image / 2**20:.1f} MiB): raise it, or select fewer --layers, "
            "grid points or a smaller spatialS"
        )
    return int(min(batch_size, fitting))


def kind_budget(widths: Mapping[str, int], disk: int) -> str:
    """Each activation kind's share of ``disk`` bytes (block outputs together), e.g. ``q 1.2 MiB, ...``."""
    per_kind: dict[str, int] = {}
    for name, width in widths.items():
        kind = name.rsplit(":", 1)[1] if ":" in name else "block outputs"
        per_kind[kind] = per_kind.get(kind, 0) + width
    per_width = disk / max(sum(widths.values()), 1)
    return ", ".join(f"{kind} {_size(int(width * per_width))}" for kind, width in per_kind.items())


def work_left(
    splits: dict,
    done: dict[str, np.ndarray],
    layout: CacheLayout,
    points: int,
    batch_size: int,
    draws: int,
    seed: int,
    store: LatentStore | None,
) -> tuple[int, int]:
    """(image x grid-point forwards, image-view encodes) this call will run: samples already in the
    cache are skipped, and a batch's encode only where the latent store lacks one of its images.
    """
    forwards = encodes = 0
    for name, split in splits.items():
        views = layout.slots(name) // draws
        for start in range(0, len(split.labels), batch_size):
            stop = min(start + batch_size, len(split.labels))
            if done[name][start:stop].all():
                continue
            forwards += (stop - start) * points * layout.slots(name)
            ids = np.asarray(split.index[start:stop], dtype=np.int64)
            for view in range(views):
                stored = store is not None and store.has(name, view_name(view, seed), ids)
                encodes += 0 if stored else stop - start
    return forwards, encodes
