"""DDAE's train-time augmentation (random crop with 4-pixel zero padding + horizontal flip),
keyed like the noise: the view of (seed, split, sample id, view) is a pure function of those
numbers, so cached views do not depend on batch size, order, shard or resume point.
"""

from __future__ import annotations

import zlib

import numpy as np


def crop_flip_views(
    images: np.ndarray, sample_ids: np.ndarray, *, seed: int, split: str, view: int, padding: int = 4
) -> np.ndarray:
    """Augmented copies of uint8 (B, H, W, C) ``images``: each is flipped left-right with
    probability 1/2, zero-padded by ``padding`` pixels on every side and cropped back to (H, W)
    at a uniformly random offset in 0..2*padding on each axis (torchvision's RandomCrop(H, padding)
    + RandomHorizontalFlip, as DDAE's linear.py applies them to the clean image).
    """
    if view < 1:
        raise ValueError("view 0 is the un-augmented image; augmented views are numbered from 1")
    b, h, w, c = images.shape
    padded = np.zeros((b, h + 2 * padding, w + 2 * padding, c), dtype=images.dtype)
    padded[:, padding : padding + h, padding : padding + w] = images
    out = np.empty_like(images)
    split_key = zlib.crc32(split.encode())
    for row, sample_id in enumerate(np.asarray(sample_ids).tolist()):
        rng = np.random.default_rng([seed & (2**63 - 1), split_key, int(sample_id), view])
        flip, dy, dx = rng.integers(0, 2), rng.integers(0, 2 * padding + 1), rng.integers(0, 2 * padding + 1)
        crop = padded[row, dy : dy + h, dx : dx + w]
        out[row] = crop[:, ::-1] if flip else crop
    return out
