"""One image size for datasets whose images differ in size (ImageNet JPEGs): the standard ImageNet
evaluation transform, applied to each image as its batch is decoded.

The shorter side is resized to S with Pillow's bicubic filter (antialiased: Pillow widens the
kernel by the shrink factor), the longer side to ``floor(S * long / short)`` (as torchvision's
``Resize``), and the centre S x S is cropped; an odd crop margin leaves the extra
pixel at the bottom / right, as :func:`probekit.data.transforms.fit_images` does. An image that is
already S x S is returned unchanged, so datasets that already have the size keep their pixels bit
for bit.

S is ``--image-size`` when given (it then applies to every dataset), else the model's own input
side, and only for datasets whose images do not share one size.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from probekit.core.errors import ProbekitError

if TYPE_CHECKING:  # base imports this module
    from probekit.data.base import ImageDataset

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


def sized_dataset(
    dataset: ImageDataset, image_size: int | None, model_size: int | None
) -> tuple[ImageDataset, dict | None]:
    """``dataset`` as it must be read at one image size, and a record of the resize (None: none).

    Args:
        image_size: ``--image-size`` S in pixels: every image is decoded to S x S.
        model_size: the square input side the model declares (None where it has none); used
            only when ``image_size`` is None and the dataset's images do not share one size.
    """
    if image_size is not None and image_size < 1:
        raise ProbekitError(f"--image-size must be a positive number of pixels, got {image_size}")
    chosen_by = "--image-size"
    if image_size is None:
        mixed = next((split.mixed_sizes for split in dataset.splits.values() if split.mixed_sizes), None)
        if mixed is None:
            return dataset, None
        if model_size is None:
            raise ProbekitError(
                f"the images of {dataset.name} do not share one size ({mixed}) and the model declares no input "
                f"size; pass --image-size S to resize each image's shorter side to S and centre-crop S x S"
            )
        image_size, chosen_by = model_size, "model input size"
    splits = {name: split.at_size(image_size) for name, split in dataset.splits.items()}
    record = {
        "size": image_size,
        "resize": f"shorter side to {image_size}, {RESAMPLE} (Pillow, antialiased)",
        "crop": "centre",
        "chosen_by": chosen_by,
    }
    return dataclasses.replace(dataset, splits=splits), record
