"""Image files decoded with Pillow, on demand: :class:`FileImages` holds paths, never pixels."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO

import numpy as np
from PIL import Image

from probekit.core.errors import ProbekitError
from probekit.data.base import LazyImages

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".webp"})
_GRAYSCALE_MODES = frozenset({"1", "L", "LA"})


def is_image_file(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES


def scan_images(paths: Sequence[Path]) -> tuple[str, tuple[int, int, int], str | None]:
    """Pillow mode ("L" when every file is grayscale, else "RGB"), the first file's (H, W, C), and
    how sizes differ when the files do not share one (None when they do).

    Reads headers only (no pixels), so it runs in constant memory. Images of several sizes are
    brought to one per batch (:mod:`probekit.data.resize`); same-size ones are fitted to the model
    by :func:`probekit.data.transforms.fit_images`.
    """
    if not paths:
        raise ProbekitError("no image files to read")
    grayscale, first_size, mixed = True, None, None
    for path in paths:
        mode, size = image_header(path)
        grayscale = grayscale and mode in _GRAYSCALE_MODES
        if first_size is None:
            first_size = size
        elif size != first_size and mixed is None:
            mixed = f"{path} is {size[0]}x{size[1]} but {paths[0]} is {first_size[0]}x{first_size[1]}"
    width, height = first_size
    return ("L", (height, width, 1), mixed) if grayscale else ("RGB", (height, width, 3), mixed)


class FileImages(LazyImages):
    """Image files decoded in Pillow ``mode`` ("L" or "RGB") when read."""

    def __init__(
        self,
        paths: Sequence[str | Path],
        mode: str,
        image_shape: tuple[int, int, int],
        rows: np.ndarray | None = None,
        mixed_sizes: str | None = None,
    ) -> None:
        self.paths = [str(p) for p in paths]  # str: a fraction of a Path's memory, for 10^6 files
        self.mode = mode
        self.mixed_sizes = mixed_sizes
        super().__init__(np.arange(len(self.paths)) if rows is None else rows, image_shape)

    def decode(self, rows: np.ndarray) -> Iterator[np.ndarray]:
        return (decode_image(self.paths[row], self.mode) for row in rows)

    def describe(self, row: int) -> str:
        return self.paths[row]


def decode_image(source: str | Path | IO[bytes], mode: str, name: str | None = None) -> np.ndarray:
    """uint8 (H, W, C) pixels of one image file (a path or an open binary file) in Pillow ``mode``."""
    name = name or str(source)
    try:
        with Image.open(source) as image:
            pixels = np.asarray(image.convert(mode), dtype=np.uint8)
    except PermissionError as exc:
        raise _unreadable(name) from exc
    except Exception as exc:  # Pillow signals damaged files with many exception types
        raise ProbekitError(f"cannot decode image {name} ({exc}); the file is corrupt, remove or replace it") from exc
    return pixels if pixels.ndim == 3 else pixels[..., np.newaxis]


def image_header(source: str | Path | IO[bytes], name: str | None = None) -> tuple[str, tuple[int, int]]:
    """(Pillow mode, (width, height)) of one image, from its header; no pixels are decoded."""
    name = name or str(source)
    try:
        with Image.open(source) as image:  # lazy: parses the header, decodes no pixels
            return image.mode, image.size
    except PermissionError as exc:
        raise _unreadable(name) from exc
    except Exception as exc:  # Pillow signals damaged files with many exception types
        raise ProbekitError(f"cannot read image {name} ({exc}); the file is corrupt, remove or replace it") from exc


def is_grayscale_mode(mode: str) -> bool:
    return mode in _GRAYSCALE_MODES


def _unreadable(name: str) -> ProbekitError:
    return ProbekitError(f"cannot read image {name}: permission denied; make it readable or remove it")
