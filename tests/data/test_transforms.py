import json

import numpy as np
import pytest
import torch

from probekit.core.errors import ProbekitError
from probekit.data import fit_images


def random_images(shape, seed=0):
    return np.random.default_rng(seed).integers(0, 256, size=shape, dtype=np.uint8)


def test_pad_28_to_32_centres_the_image_on_black():
    images = random_images((2, 28, 28, 1))
    x, record = fit_images(images, size=32, channels=None, value_range=(-1.0, 1.0), fit="pad")
    assert x.dtype == torch.float32 and x.shape == (2, 1, 32, 32) and x.is_contiguous()
    expected = images.transpose(0, 3, 1, 2) / 127.5 - 1.0
    np.testing.assert_allclose(x[:, :, 2:30, 2:30].numpy(), expected, atol=1e-6)
    border = x.clone()
    border[:, :, 2:30, 2:30] = 99
    assert torch.all((border == -1.0) | (border == 99))
    assert record == {
        "fit": "pad",
        "from_size": [28, 28],
        "to_size": [32, 32],
        "channels": "1->1",
        "value_range": [-1.0, 1.0],
    }
    json.dumps(record)


def test_odd_pad_puts_the_extra_pixel_bottom_right():
    images = np.full((1, 5, 5, 1), 255, np.uint8)
    x, _ = fit_images(images, size=(8, 6), channels=None, value_range=(0.0, 1.0), fit="pad")
    rows, cols = np.nonzero(x[0, 0].numpy())
    assert (rows.min(), rows.max(), cols.min(), cols.max()) == (1, 5, 0, 4)


def test_pad_refuses_larger_images():
    with pytest.raises(ProbekitError, match="cannot pad .*fit='resize'"):
        fit_images(random_images((1, 40, 40, 3)), size=32, channels=None, value_range=(0, 1), fit="pad")


def test_center_crop():
    images = random_images((3, 6, 7, 3))
    x, record = fit_images(images, size=4, channels=None, value_range=(0.0, 1.0), fit="center-crop")
    np.testing.assert_allclose(x.numpy(), images[:, 1:5, 1:5].transpose(0, 3, 1, 2) / 255.0, atol=1e-6)
    assert record["fit"] == "center-crop" and record["to_size"] == [4, 4]
    with pytest.raises(ProbekitError, match="cannot crop"):
        fit_images(images, size=8, channels=None, value_range=(0, 1), fit="center-crop")


def test_bilinear_upsampling_matches_hand_weights():
    images = np.array([[10, 50], [90, 250]], np.uint8).reshape(1, 2, 2, 1)
    x, record = fit_images(images, size=4, channels=None, value_range=(0.0, 255.0), fit="resize")
    # half-pixel centres: output pixels sample the input at -0.25, 0.25, 0.75, 1.25, the two
    # ends clamped to the edge pixels
    weights = np.array([[1, 0], [0.75, 0.25], [0.25, 0.75], [0, 1]])
    expected = weights @ images[0, :, :, 0].astype(np.float64) @ weights.T
    np.testing.assert_allclose(x[0, 0].numpy(), expected, atol=1e-4)
    assert record["fit"] == "resize"


def test_antialiased_halving_uses_a_stretched_triangle_filter():
    images = random_images((2, 8, 8, 3))
    x, _ = fit_images(images, size=4, channels=None, value_range=(0.0, 255.0), fit="resize")
    # Antialiased bilinear (Pillow's convention) widens the triangle by the scale factor 2: output
    # pixel i, centred at input coordinate 2i + 1, weighs input pixel j (centre j + 0.5) by
    # max(0, 1 - |j + 0.5 - (2i + 1)| / 2), normalised over the pixels inside the image.
    centres = 2 * np.arange(4)[:, None] + 1.0
    weights = np.maximum(0.0, 1 - np.abs(np.arange(8)[None, :] + 0.5 - centres) / 2)
    weights /= weights.sum(axis=1, keepdims=True)
    expected = np.einsum("ij,bjkc,lk->bcil", weights, images.astype(np.float64), weights)
    np.testing.assert_allclose(x.numpy(), expected, atol=1e-3)


@pytest.mark.parametrize(
    "from_size, to_size, done",
    [
        ((28, 28), 32, "pad"),
        ((40, 40), 32, "resize"),
        ((28, 40), 32, "resize"),
        ((32, 32), 32, "none"),
    ],
)
def test_auto_pads_when_it_fits_and_resizes_otherwise(from_size, to_size, done):
    _, record = fit_images(random_images((1, *from_size, 1)), size=to_size, channels=None, value_range=(0, 1))
    assert record["fit"] == done and record["to_size"] == [to_size, to_size]


def test_native_size_kept_when_size_is_none():
    images = random_images((2, 5, 9, 3))
    x, record = fit_images(images, size=None, channels=None, value_range=(0.0, 1.0))
    assert x.shape == (2, 3, 5, 9) and record["fit"] == "none" and record["to_size"] == [5, 9]


def test_gray_to_rgb_repeats_the_channel():
    images = random_images((2, 4, 4, 1))
    x, record = fit_images(images, size=None, channels=3, value_range=(0.0, 1.0))
    assert x.shape == (2, 3, 4, 4) and x.is_contiguous() and record["channels"] == "1->3"
    for c in range(3):
        np.testing.assert_allclose(x[:, c].numpy(), images[..., 0] / 255.0, atol=1e-6)


def test_rgb_to_gray_is_bt601_luma():
    images = random_images((2, 4, 4, 3))
    x, record = fit_images(images, size=None, channels=1, value_range=(-1.0, 1.0))
    luma = 0.299 * images[..., 0] + 0.587 * images[..., 1] + 0.114 * images[..., 2]
    np.testing.assert_allclose(x[:, 0].numpy(), luma / 127.5 - 1.0, atol=1e-5)
    assert record["channels"] == "3->1"


def test_value_range_end_points_are_exact():
    images = np.array([0, 255], np.uint8).reshape(1, 1, 2, 1)
    x, _ = fit_images(images, size=None, channels=None, value_range=(-1.0, 1.0))
    assert x.flatten().tolist() == [-1.0, 1.0]


def test_read_only_input_is_accepted():
    images = random_images((1, 4, 4, 1))
    images.flags.writeable = False
    x, _ = fit_images(images, size=6, channels=3, value_range=(0.0, 1.0))
    assert x.shape == (1, 3, 6, 6)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"images": np.zeros((1, 4, 4, 1), np.float32)}, "uint8"),
        ({"images": np.zeros((4, 4, 1), np.uint8)}, "uint8"),
        ({"channels": 2}, "channels must be"),
        ({"fit": "stretch"}, "unknown fit 'stretch'"),
        ({"value_range": (1.0, -1.0)}, "low < high"),
        ({"size": 0}, "positive"),
    ],
)
def test_bad_arguments(kwargs, message):
    arguments = {
        "images": np.zeros((1, 4, 4, 1), np.uint8),
        "size": 8,
        "channels": None,
        "value_range": (0.0, 1.0),
        "fit": "auto",
    } | kwargs
    with pytest.raises(ProbekitError, match=message):
        fit_images(**arguments)
