"""Images and labels saved with ``numpy.savez``.

Keys: ``x`` (images) and ``y`` (labels); optional ``x_test`` / ``y_test`` (else a stratified seeded
holdout is drawn from ``x``) and optional ``class_names``. Images may be (N, H, W), (N, H, W, C)
or (N, C, H, W) with C in {1, 3}, either uint8 in 0..255 or float in [0, 1]. Labels may be any
integers or strings: their sorted distinct values become class ids 0..K-1 and ``str(value)`` the
class names. With ``class_names`` given, labels must already be ids 0..len(class_names)-1.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from probekit.core.errors import ProbekitError
from probekit.data.base import ImageDataset, ImageSplit
from probekit.data.sampling import holdout_split


def is_npz_file(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() == ".npz"


def load_npz(path: str | os.PathLike, *, test_fraction: float = 0.2, seed: int = 0) -> ImageDataset:
    """Load an .npz file; ``test_fraction`` and ``seed`` apply only when it has no test arrays."""
    path = Path(path)
    arrays = _read_arrays(path)
    if "x" not in arrays or "y" not in arrays:
        raise ProbekitError(f"{path} needs arrays 'x' (images) and 'y' (labels), it has {sorted(arrays)}")
    if ("x_test" in arrays) != ("y_test" in arrays):
        raise ProbekitError(f"{path} has only one of 'x_test' and 'y_test'; save both or neither")

    images = {"train": _to_uint8_nhwc(arrays["x"], path, "x")}
    raw_labels = {"train": _check_labels(arrays["y"], images["train"], path, "y")}
    if "x_test" in arrays:
        images["test"] = _to_uint8_nhwc(arrays["x_test"], path, "x_test")
        raw_labels["test"] = _check_labels(arrays["y_test"], images["test"], path, "y_test")
    labels, class_names = _encode_labels(raw_labels, arrays.get("class_names"), path)

    if "test" in images:
        splits = {
            name: ImageSplit(images[name], labels[name], np.arange(len(labels[name]), dtype=np.int64))
            for name in ("train", "test")
        }
        info: dict[str, object] = {"format": "npz", "test_split": "official"}
    else:
        train, test = holdout_split(images["train"], labels["train"], test_fraction, seed)
        splits = {"train": train, "test": test}
        info = {
            "format": "npz",
            "test_split": "holdout",
            "test_fraction": test_fraction,
            "holdout_seed": seed,
        }
    return ImageDataset(path.stem, splits, class_names, str(path), info)


def _read_arrays(path: Path) -> dict[str, np.ndarray]:
    corrupt = f"cannot read {path} as an .npz archive; the file is corrupt, re-save it with numpy.savez"
    # Our own handle: numpy leaves its file open when the zip inside is damaged.
    try:
        handle = open(path, "rb")
    except OSError as exc:
        raise ProbekitError(
            f"cannot read {path}: {exc.strerror or exc}; make it readable or give another file"
        ) from exc
    with handle:
        if handle.read(2) != b"PK":  # every zip archive, so every .npz, starts with "PK"
            raise ProbekitError(corrupt)
        handle.seek(0)
        try:
            # allow_pickle=False: object arrays are pickles, which could run code while loading
            with np.load(handle, allow_pickle=False) as archive:
                return {key: archive[key] for key in archive.files}
        except ValueError as exc:
            if "allow_pickle" in str(exc):
                raise ProbekitError(
                    f"{path} holds object arrays; save labels and class names as int or str arrays"
                ) from exc
            raise ProbekitError(f"{corrupt} ({exc})") from exc
        except Exception as exc:  # damaged zip archives fail with many exception types
            raise ProbekitError(f"{corrupt} ({exc})") from exc


def _to_uint8_nhwc(x: np.ndarray, path: Path, key: str) -> np.ndarray:
    if x.ndim == 3:
        x = x[..., np.newaxis]
    elif x.ndim == 4 and x.shape[-1] not in (1, 3) and x.shape[1] in (1, 3):
        x = x.transpose(0, 2, 3, 1)  # channel-first (N, C, H, W)
    if x.ndim != 4 or x.shape[-1] not in (1, 3) or len(x) == 0:
        raise ProbekitError(
            f"{path}: {key!r} has shape {x.shape}; expected (N, H, W), (N, H, W, C) or (N, C, H, W) "
            f"with C in {{1, 3}} and N > 0"
        )
    if x.dtype == np.uint8:
        return np.ascontiguousarray(x)
    if np.issubdtype(x.dtype, np.floating):
        if not np.all(np.isfinite(x)):
            raise ProbekitError(f"{path}: float {key!r} has NaN or infinite values; fix the images before saving")
        if x.min() < 0.0 or x.max() > 1.0:
            raise ProbekitError(
                f"{path}: float {key!r} has values outside [0, 1] (min {x.min():g}, max {x.max():g}); "
                f"scale float images to [0, 1] or save them as uint8"
            )
        return np.round(x * 255.0).astype(np.uint8)
    raise ProbekitError(f"{path}: {key!r} is {x.dtype}; save images as uint8 (0..255) or float in [0, 1]")


def _check_labels(y: np.ndarray, images: np.ndarray, path: Path, key: str) -> np.ndarray:
    if y.ndim != 1 or len(y) != len(images):
        raise ProbekitError(
            f"{path}: {key!r} has shape {y.shape} but there are {len(images)} images; save one label per image"
        )
    return y


def _encode_labels(
    raw: dict[str, np.ndarray], class_names: np.ndarray | None, path: Path
) -> tuple[dict[str, np.ndarray], list[str]]:
    """Class ids for each split's labels, and the class names."""
    if class_names is not None:
        names = [str(name) for name in np.atleast_1d(class_names)]
        for key, y in raw.items():
            if not np.issubdtype(y.dtype, np.integer) or y.min() < 0 or y.max() >= len(names):
                raise ProbekitError(
                    f"{path}: with 'class_names' ({len(names)} names) the {key} labels must be integers "
                    f"0..{len(names) - 1}"
                )
        return {key: y.astype(np.int64) for key, y in raw.items()}, names
    values = np.unique(np.concatenate(list(raw.values())))
    # searchsorted gives each label its rank among the sorted distinct values
    ids = {key: np.searchsorted(values, y).astype(np.int64) for key, y in raw.items()}
    return ids, [str(value) for value in values]
