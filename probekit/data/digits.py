"""scikit-learn's bundled handwritten digits: 1797 8x8 grayscale images, no download needed.

A quick offline smoke-test dataset. Pixels are counts 0..16 in the original; they are rescaled to
uint8 by ``round(v * 255 / 16)``. There is no official test split, so a stratified seeded holdout
is drawn.
"""

from __future__ import annotations

import numpy as np
from sklearn.datasets import load_digits as sklearn_load_digits

from probekit.data.base import ImageDataset
from probekit.data.sampling import holdout_split


def load_digits(*, test_fraction: float = 0.2, seed: int = 0) -> ImageDataset:
    """Load the digits as (N, 8, 8, 1) uint8 with classes "0".."9"."""
    bunch = sklearn_load_digits()
    images = np.round(bunch.images * (255.0 / 16.0)).astype(np.uint8)[..., np.newaxis]
    train, test = holdout_split(images, bunch.target.astype(np.int64), test_fraction, seed)
    info: dict[str, object] = {
        "format": "digits",
        "test_split": "holdout",
        "test_fraction": test_fraction,
        "holdout_seed": seed,
    }
    return ImageDataset(
        "digits",
        {"train": train, "test": test},
        [str(d) for d in range(10)],
        "sklearn.datasets.load_digits",
        info,
    )
