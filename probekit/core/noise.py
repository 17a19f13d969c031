"""Deterministic noise: the Gaussian noise of one image is a pure function of
``(seed, sample id, timestep t, draw)``.

Sample ids restart at 0 in each split of most datasets, so the extractor folds the split name
into the seed (:func:`split_seed`): train image 5 and test image 5 get unrelated noise.

Features then do not depend on batch size, order, shard or resume point. Each sample gets its own
``torch.Generator`` seeded by a 64-bit hash of the four numbers; the noise is drawn on the CPU
(bit-identical everywhere) and then moved to the compute device.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence

import numpy as np
import torch

_MASK64 = (1 << 64) - 1


def _splitmix64(x: int) -> int:
    x = (x + 0x9E3779B97F4A7C15) & _MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return x ^ (x >> 31)


def noise_seed(seed: int, sample_id: int, t: int, draw: int) -> int:
    """A 63-bit generator seed that mixes all four numbers (distinct tuples -> unrelated streams)."""
    h = 0
    for value in (seed, sample_id, t, draw):
        h = _splitmix64(h ^ (int(value) & _MASK64))
    return h >> 1  # torch.Generator.manual_seed takes values below 2**63 without wrapping


def split_seed(seed: int, split: str) -> int:
    """The noise seed of one split: ``seed`` mixed with a stable hash of the split's name."""
    return noise_seed(seed, zlib.crc32(split.encode()), 0, 0)


def sample_noise(
    shape: Sequence[int],
    sample_ids: Sequence[int] | np.ndarray,
    *,
    seed: int,
    t: int,
    draw: int,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """Standard normal noise of ``shape`` per sample, stacked to ``(len(sample_ids), *shape)``."""
    generator = torch.Generator()
    out = torch.empty((len(sample_ids), *shape), dtype=torch.float32)
    for row, sample_id in enumerate(np.asarray(sample_ids).tolist()):
        generator.manual_seed(noise_seed(seed, sample_id, t, draw))
        torch.randn(tuple(shape), generator=generator, out=out[row])
    return out.to(device, non_blocking=True)
