"""One image size for datasets whose images differ in size (ImageNet JPEGs): the standard ImageNet
evaluation transform, applied to each image as its batch is decoded.

The shorter side is resized to S with Pillow's bicubic filter (antialiased: Pillow widens the
kernel by the shrink factor), the longer side to ``floor(S * long / short)`` (as torchvision's
``Resize``), and the centre S x S is cropped; an odd crop margin leaves the extra
pixel at the bottom / right, as :func:`probekit.data.transforms.fit_images` does. An image that is
already S x S is returned unchanged, so datasets that already have the size keep their pixels bit
for bit.

A pure pixel operation: which datasets are resized, and to what, is
:func:`probekit.data.base.sized_dataset`'s choice.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

RESAMPLE = "bicubic"


def resize_center_crop(pixels: np.ndarray, size: int) -> np.ndarray:
    """uint8 (H, W, C) -> uint8 (size, size, C): shorter side to ``size`` (bicubic), centre crop."""
    height, width = pixels.shape[:2]
    if (height, width) == (size, size):
        return pixels
    if height <= width:
        new_height, new_width = size, size * width // height
    else:
        new_height, new_width = size * height // width, size
    gray = pixels.shape[2] == 1
    image = Image.fromarray(np.ascontiguousarray(pixels[..., 0] if gray else pixels))  # "L" or "RGB"
    resized = np.asarray(image.resize((new_width, new_height), Image.Resampling.BICUBIC))
    top, left = (new_height - size) // 2, (new_width - size) // 2
    cropped = resized[top : top + size, left : left + size]
    return cropped[..., np.newaxis] if gray else cropped
