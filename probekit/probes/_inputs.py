"""Input checks and conversions shared by every probe: what a well-formed probe call is."""

from __future__ import annotations

import warnings
from collections.abc import Hashable, Mapping

import numpy as np
import torch

from probekit.core.errors import ProbekitError


def check_probe_inputs(
    train: Mapping[Hashable, np.ndarray],
    y_train: np.ndarray,
    test: Mapping[Hashable, np.ndarray],
    y_test: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Check the shared probe call shape; return the labels as int64 arrays.

    Raises :class:`ProbekitError` when train and test cover different cells, an array is not
    2-D, its rows do not match the labels, widths differ between train and test, features are
    not finite, or labels are not non-negative integers covering at least two classes.
    """
    y_train = _check_labels(y_train, "y_train")
    y_test = _check_labels(y_test, "y_test")
    if len(np.unique(y_train)) < 2:
        raise ProbekitError("y_train holds a single class; a probe needs at least two classes")
    if not train:
        raise ProbekitError("no cells to probe: the train mapping is empty")
    if train.keys() != test.keys():
        only_train = [k for k in train if k not in test]
        only_test = [k for k in test if k not in train]
        raise ProbekitError(
            f"train and test must hold the same cells; only in train: {only_train[:5]}, only in test: {only_test[:5]}"
        )
    for key in train:
        x_tr, x_te = train[key], test[key]
        _check_features(x_tr, len(y_train), f"train[{key!r}]", "y_train")
        _check_features(x_te, len(y_test), f"test[{key!r}]", "y_test")
        if x_tr.shape[1] != x_te.shape[1]:
            raise ProbekitError(
                f"cell {key!r} has {x_tr.shape[1]} train features but {x_te.shape[1]} test "
                "features; both splits must come from the same layer"
            )
    return y_train, y_test


def resolve_num_classes(requested: int | None, y_train: np.ndarray, y_test: np.ndarray) -> int:
    """Number of classifier outputs: ``requested``, or the largest label in either split + 1.

    Pass it explicitly when a class may be missing from both splits (small subsets) so that
    the classifier shape does not depend on the sample.
    """
    needed = int(max(y_train.max(), y_test.max())) + 1
    if requested is None:
        return needed
    if requested < needed:
        raise ProbekitError(
            f"num_classes={requested} but the labels go up to {needed - 1}; "
            f"set num_classes >= {needed} or leave it unset"
        )
    return requested


def as_float32_tensor(x: np.ndarray) -> torch.Tensor:
    """A float32 view of ``x`` (no copy when it already is contiguous float32), read-only use."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    with warnings.catch_warnings():
        # Read-only inputs (memory maps) trigger a "non-writable" warning; we only ever read them.
        warnings.filterwarnings("ignore", message=".*not writable.*", category=UserWarning)
        return torch.from_numpy(x)


def _check_labels(y: np.ndarray, name: str) -> np.ndarray:
    y = np.asarray(y)
    if y.ndim != 1 or len(y) == 0:
        raise ProbekitError(f"{name} must be a non-empty 1-D array of class indices, got {y.shape}")
    if not np.issubdtype(y.dtype, np.integer):
        raise ProbekitError(f"{name} must hold integer class indices, got dtype {y.dtype}")
    if y.min() < 0:
        raise ProbekitError(f"{name} holds negative labels; classes must be 0..num_classes-1")
    return y.astype(np.int64, copy=False)


def _check_features(x: np.ndarray, n_rows: int, name: str, label_name: str) -> None:
    if not isinstance(x, np.ndarray) or x.ndim != 2:
        raise ProbekitError(f"{name} must be a 2-D numpy array (samples, features)")
    if x.shape[0] != n_rows:
        raise ProbekitError(f"{name} has {x.shape[0]} rows but {label_name} has {n_rows} labels")
    if x.shape[1] == 0:
        raise ProbekitError(f"{name} has no feature columns")
    if not np.isfinite(x).all():
        raise ProbekitError(
            f"{name} holds NaN or inf features; re-extract the cell (float16 overflow is a common cause)"
        )
