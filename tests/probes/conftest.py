"""Synthetic probe grids: linearly separable cells of several widths plus one pure-noise cell."""

from dataclasses import dataclass

import numpy as np
import pytest

NUM_CLASSES = 4
NOISE_CELL = (999, "noise")


@dataclass
class Grid:
    train: dict
    y_train: np.ndarray
    test: dict
    y_test: np.ndarray
    num_classes: int = NUM_CLASSES
    noise_cell: tuple = NOISE_CELL  # the cell whose features carry no label information


def make_grid(seed: int = 0, n_train: int = 600, n_test: int = 400) -> Grid:
    """Cells (t, layer) whose features are a random linear map of well-separated class centres.

    Every signal cell is linearly separable (centres ~11 apart, within-class noise 0.3); the
    noise cell's features are independent of the labels, so any probe is at chance there.
    Features carry a large offset and scale so that missing standardisation would show.
    """
    rng = np.random.default_rng(seed)
    centres = 4.0 * rng.standard_normal((NUM_CLASSES, 8))
    y_train = rng.integers(0, NUM_CLASSES, n_train)
    y_test = rng.integers(0, NUM_CLASSES, n_test)
    latent_train = centres[y_train] + 0.3 * rng.standard_normal((n_train, 8))
    latent_test = centres[y_test] + 0.3 * rng.standard_normal((n_test, 8))
    train, test = {}, {}
    for t, width in [(10, 16), (20, 32), (30, 48), (40, 32)]:
        projection = rng.standard_normal((8, width))
        offset = 50.0 * rng.standard_normal(width)
        train[(t, f"layer{width}")] = (latent_train @ projection * 10 + offset).astype(np.float32)
        test[(t, f"layer{width}")] = (latent_test @ projection * 10 + offset).astype(np.float32)
    train[NOISE_CELL] = rng.standard_normal((n_train, 32)).astype(np.float32)
    test[NOISE_CELL] = rng.standard_normal((n_test, 32)).astype(np.float32)
    return Grid(train, y_train.astype(np.int64), test, y_test.astype(np.int64))


@pytest.fixture(scope="session")
def separable_grid() -> Grid:
    return make_grid()
