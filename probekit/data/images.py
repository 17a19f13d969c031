"""Decode image files with Pillow into one uint8 (N, H, W, C) array."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from probekit.errors import ProbekitError

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".webp"})
_GRAYSCALE_MODES = frozenset({"1", "L", "LA"})


def is_image_file(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES


def all_grayscale(paths: Sequence[Path]) -> bool:
    """True when every file is a grayscale image (reads headers only, not pixels)."""
    return all(_header_mode(path) in _GRAYSCALE_MODES for path in paths)


def read_images(paths: Sequence[Path], mode: str) -> np.ndarray:
    """Decode ``paths`` in Pillow ``mode`` ("L" or "RGB") into uint8 (N, H, W, C).

    All images must have the size of the first; probekit resizes later, per batch, with
    :func:`probekit.data.transforms.fit_images`, not at load time.
    """
    if not paths:
        raise ProbekitError("no image files to read")
    out: np.ndarray | None = None
    for i, path in enumerate(paths):
        pixels = _decode(path, mode)
        if out is None:
            # Preallocate from the first image: stacking a list would hold every image twice.
            out = np.empty((len(paths), *pixels.shape), dtype=np.uint8)
        elif pixels.shape != out.shape[1:]:
            raise ProbekitError(
                f"{path} is {pixels.shape[1]}x{pixels.shape[0]} but {paths[0]} is "
                f"{out.shape[2]}x{out.shape[1]}; all images of a dataset must have one size, "
                f"resize them first"
            )
        out[i] = pixels
    return out


def _decode(path: Path, mode: str) -> np.ndarray:
    try:
        with Image.open(path) as image:
            pixels = np.asarray(image.convert(mode), dtype=np.uint8)
    except PermissionError as exc:
        raise _unreadable(path) from exc
    except Exception as exc:  # Pillow signals damaged files with many exception types
        raise ProbekitError(
            f"cannot decode image {path} ({exc}); the file is corrupt, remove or replace it"
        ) from exc
    return pixels if pixels.ndim == 3 else pixels[..., np.newaxis]


def _header_mode(path: Path) -> str:
    try:
        with Image.open(path) as image:  # lazy: parses the header, decodes no pixels
            return image.mode
    except PermissionError as exc:
        raise _unreadable(path) from exc
    except Exception as exc:  # Pillow signals damaged files with many exception types
        raise ProbekitError(
            f"cannot read image {path} ({exc}); the file is corrupt, remove or replace it"
        ) from exc


def _unreadable(path: Path) -> ProbekitError:
    return ProbekitError(f"cannot read image {path}: permission denied; make it readable or remove it")
