"""Turn a batch of uint8 images into the float tensor a network expects, recording what was done.

Run per batch at extraction time, so datasets stay in their native size and dtype in memory and
the cache records exactly how pixels were fitted to the model.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from probekit.core.errors import ProbekitError

FITS = ("auto", "pad", "resize", "center-crop")
# ITU-R BT.601 luma weights (what Pillow's convert("L") uses); they sum to 1
_LUMA = (0.299, 0.587, 0.114)


def fit_images(
    images: np.ndarray,
    *,
    size: int | tuple[int, int] | None,
    channels: int | None,
    value_range: tuple[float, float],
    fit: str = "auto",
) -> tuple[torch.Tensor, dict]:
    """uint8 (B, H, W, C) pixels -> float32 (B, C', H', W') tensor, plus a JSON-able record.

    Args:
        images: uint8 in 0..255, C in {1, 3}.
        size: target (H', W') in pixels, an int for a square, or None to keep the native size.
        channels: 1 or 3 for the model's input channels, or None to keep C. 1 -> 3 repeats the
            gray channel; 3 -> 1 takes the ITU-R 601 luma 0.299 R + 0.587 G + 0.114 B.
        value_range: (low, high) that pixel values 0 and 255 map to, linearly; e.g. (-1, 1) for
            diffusion UNets, (0, 1) for raw-pixel baselines.
        fit: how to reach ``size``: "pad" centres the image on a black canvas (value ``low``;
            the image must not be larger than the target), "center-crop" cuts the centre (the
            image must not be smaller), "resize" is bilinear with antialiasing (aspect ratio not
            kept), "auto" pads when the image fits inside the target and resizes otherwise.
            An odd pad or crop margin puts the extra pixel at the bottom / right.

    Returns:
        The tensor and a record such as ``{"fit": "pad", "from_size": [28, 28], "to_size": [32, 32],
        "channels": "1->3", "value_range": [-1.0, 1.0]}``; ``fit`` is "none" when sizes already match.
    """
    _check_inputs(images, channels, value_range, fit)
    # a copy: inputs may be read-only views of a file buffer, which torch.from_numpy refuses
    return fit_tensor(
        torch.from_numpy(np.array(images)), size=size, channels=channels, value_range=value_range, fit=fit
    )


def fit_tensor(
    images: torch.Tensor,
    *,
    size: int | tuple[int, int] | None,
    channels: int | None,
    value_range: tuple[float, float],
    fit: str = "auto",
) -> tuple[torch.Tensor, dict]:
    """:func:`fit_images` on a uint8 (B, H, W, C) torch tensor, on whatever device it is.

    The extraction pipeline moves uint8 batches to a GPU (a quarter of float32's bytes) and
    converts them there; on the CPU the same function runs in the loader's workers.
    """
    if images.dtype != torch.uint8 or images.dim() != 4 or images.shape[-1] not in (1, 3):
        raise ProbekitError(
            f"fit_tensor needs a uint8 (B, H, W, C) tensor with C in {{1, 3}}, got {images.dtype} {tuple(images.shape)}"
        )
    _check_inputs(np.empty((1, 1, 1, images.shape[-1]), np.uint8), channels, value_range, fit)
    from_size = (int(images.shape[1]), int(images.shape[2]))
    to_size = from_size if size is None else _as_size(size)
    low, high = float(value_range[0]), float(value_range[1])

    x = images.permute(0, 3, 1, 2).float()  # uint8 -> float32 is exact
    done = _resolve_fit(fit, from_size, to_size)
    if done == "pad":
        x = _pad(x, to_size)  # pad with 0 before scaling, so the border becomes ``low``
    elif done == "center-crop":
        x = _center_crop(x, to_size)
    elif done == "resize":
        # bilinear with non-negative weights stays inside 0..255, so no clamp is needed
        x = F.interpolate(x, size=to_size, mode="bilinear", align_corners=False, antialias=True)
    x, channels_done = _convert_channels(x, channels)
    x = (x / 255.0) * (high - low) + low  # 0 -> low and 255 -> high exactly
    record = {
        "fit": done,
        "from_size": list(from_size),
        "to_size": list(to_size),
        "channels": channels_done,
        "value_range": [low, high],
    }
    return x.contiguous(), record


def _check_inputs(images: np.ndarray, channels: int | None, value_range: tuple[float, float], fit: str) -> None:
    if (
        not isinstance(images, np.ndarray)
        or images.dtype != np.uint8
        or images.ndim != 4
        or images.shape[-1] not in (1, 3)
    ):
        shape = getattr(images, "shape", None)
        raise ProbekitError(f"fit_images needs uint8 (B, H, W, C) numpy images with C in {{1, 3}}, got {shape}")
    if channels not in (None, 1, 3):
        raise ProbekitError(f"channels must be 1, 3 or None, got {channels!r}")
    if fit not in FITS:
        raise ProbekitError(f"unknown fit {fit!r}; choose one of {', '.join(FITS)}")
    if len(value_range) != 2 or not value_range[0] < value_range[1]:
        raise ProbekitError(f"value_range must be (low, high) with low < high, got {value_range!r}")


def _as_size(size: int | tuple[int, int]) -> tuple[int, int]:
    height, width = (size, size) if isinstance(size, (int, np.integer)) else tuple(size)
    if height < 1 or width < 1:
        raise ProbekitError(f"size must be positive, got {size!r}")
    return int(height), int(width)


def _resolve_fit(fit: str, from_size: tuple[int, int], to_size: tuple[int, int]) -> str:
    """The operation actually applied: "none", "pad", "center-crop" or "resize"."""
    if from_size == to_size:
        return "none"
    fits_inside = from_size[0] <= to_size[0] and from_size[1] <= to_size[1]
    covers = from_size[0] >= to_size[0] and from_size[1] >= to_size[1]
    if fit == "auto":
        return "pad" if fits_inside else "resize"
    if fit == "pad" and not fits_inside:
        raise ProbekitError(
            f"cannot pad {from_size} images to {to_size}: they are larger; use fit='resize' or 'center-crop'"
        )
    if fit == "center-crop" and not covers:
        raise ProbekitError(f"cannot crop {from_size} images to {to_size}: they are smaller; use fit='pad' or 'resize'")
    return fit


def _pad(x: torch.Tensor, to_size: tuple[int, int]) -> torch.Tensor:
    extra_h, extra_w = to_size[0] - x.shape[2], to_size[1] - x.shape[3]
    top, left = extra_h // 2, extra_w // 2
    return F.pad(x, (left, extra_w - left, top, extra_h - top), value=0.0)


def _center_crop(x: torch.Tensor, to_size: tuple[int, int]) -> torch.Tensor:
    top, left = (x.shape[2] - to_size[0]) // 2, (x.shape[3] - to_size[1]) // 2
    return x[:, :, top : top + to_size[0], left : left + to_size[1]]


def _convert_channels(x: torch.Tensor, channels: int | None) -> tuple[torch.Tensor, str]:
    have = x.shape[1]
    want = have if channels is None else channels
    if want == have:
        return x, f"{have}->{have}"
    if want == 3:
        return x.expand(-1, 3, -1, -1), "1->3"
    red, green, blue = x[:, 0:1], x[:, 1:2], x[:, 2:3]
    return _LUMA[0] * red + _LUMA[1] * green + _LUMA[2] * blue, "3->1"
