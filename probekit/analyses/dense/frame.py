"""Where an image pixel lies on a cached feature map, and bilinear reads of the map there.

Extraction brings every image to the model's input frame: datasets of mixed sizes are first
resized (shorter side) and centre-cropped to one side (:mod:`probekit.data.resize`), then
:func:`probekit.data.transforms.fit_images` pads, crops or resizes to the model's input. The
cache records both steps (attr ``fit``); :class:`ImageFrame` replays them on coordinates, so a
point given in the original image's pixels lands where that image content sat in the model frame.

Coordinates are continuous pixel units with (0, 0) at the top-left corner of the top-left pixel;
pixel (row i, column j) has its centre at (x, y) = (j + 0.5, i + 0.5). A feature map of side S
covering the model frame is read with ``torch.nn.functional.grid_sample`` (bilinear,
``align_corners=False``, border padding): exactly what upsampling it bilinearly to the frame
(``F.interpolate(..., align_corners=False)``) and reading the pixel would give, as DIFT does when
it upsamples its feature maps to the image.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from probekit.core.errors import ProbekitError


@dataclass(frozen=True)
class ImageFrame:
    """Affine map from original-image pixels to the model frame: x_m = x * scale_x + shift_x (same for y)."""

    scale_x: float
    scale_y: float
    shift_x: float
    shift_y: float
    frame_hw: tuple[int, int]  # (H, W) of the model frame the feature maps cover

    @classmethod
    def from_fit(cls, fit: dict, original_hw: tuple[int, int]) -> ImageFrame:
        """Replay the cache's ``fit`` record for an image of ``original_hw`` (H, W) pixels."""
        height, width = original_hw
        scale_x = scale_y = 1.0
        shift_x = shift_y = 0.0
        resize = fit.get("resize")
        if resize and (height, width) != (resize["size"], resize["size"]):
            side = int(resize["size"])
            new_h, new_w = (side, side * width // height) if height <= width else (side * height // width, side)
            scale_x, scale_y = new_w / width, new_h / height
            shift_x, shift_y = -float((new_w - side) // 2), -float((new_h - side) // 2)
            height, width = side, side
        from_h, from_w = fit.get("from_size", [height, width])
        if (from_h, from_w) != (height, width):
            raise ProbekitError(
                f"an image of {height}x{width} pixels was not what the cache fitted ({from_h}x{from_w}): give the "
                "images the cache was extracted from"
            )
        to_h, to_w = fit.get("to_size", [height, width])
        done = fit.get("fit", "none")
        if done == "pad":
            shift_x, shift_y = shift_x + (to_w - width) // 2, shift_y + (to_h - height) // 2
        elif done == "center-crop":
            shift_x, shift_y = shift_x - (width - to_w) // 2, shift_y - (height - to_h) // 2
        elif done == "resize":
            factor_x, factor_y = to_w / width, to_h / height
            scale_x, scale_y = scale_x * factor_x, scale_y * factor_y
            shift_x, shift_y = shift_x * factor_x, shift_y * factor_y
        elif done != "none":
            raise ProbekitError(f"unknown fit {done!r} in the cache: re-extract it with this probekit")
        return cls(scale_x, scale_y, shift_x, shift_y, (int(to_h), int(to_w)))

    def to_frame(self, xy: np.ndarray) -> np.ndarray:
        """(..., 2) original-image (x, y) -> model-frame (x, y)."""
        xy = np.asarray(xy, dtype=np.float64)
        return np.stack([xy[..., 0] * self.scale_x + self.shift_x, xy[..., 1] * self.scale_y + self.shift_y], axis=-1)

    def inside(self, xy: np.ndarray) -> np.ndarray:
        """(...,) bool: the original-image point lies inside the model frame (not cropped away)."""
        frame = self.to_frame(xy)
        height, width = self.frame_hw
        return (frame[..., 0] >= 0) & (frame[..., 0] <= width) & (frame[..., 1] >= 0) & (frame[..., 1] <= height)


def read_maps(maps: torch.Tensor, frame_xy: torch.Tensor, frame_hw: tuple[int, int]) -> torch.Tensor:
    """Bilinear reads of feature maps at model-frame points.

    Args:
        maps: (N, C, S, S) float feature maps covering the model frame.
        frame_xy: (N, P, 2) float (x, y) points in model-frame pixels.
        frame_hw: (H, W) of the model frame.

    Returns:
        (N, P, C) features.
    """
    height, width = frame_hw
    grid = torch.stack([2 * frame_xy[..., 0] / width - 1, 2 * frame_xy[..., 1] / height - 1], dim=-1)
    sampled = F.grid_sample(
        maps, grid[:, :, None, :].to(maps.dtype), mode="bilinear", padding_mode="border", align_corners=False
    )
    return sampled[..., 0].transpose(1, 2)


def pixel_centres(height: int, width: int) -> np.ndarray:
    """(H * W, 2) (x, y) centres of every pixel of an H x W image, row-major."""
    rows, cols = np.meshgrid(np.arange(height), np.arange(width), indexing="ij")
    return np.stack([cols.reshape(-1) + 0.5, rows.reshape(-1) + 0.5], axis=1)
