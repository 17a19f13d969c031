"""Datasets of mixed image sizes: each image's shorter side resized to S (Pillow bicubic) and its
centre cropped to S x S as its batch is decoded, checked against a resize + crop written here.
"""

import numpy as np
import pytest
from PIL import Image

from probekit.cli import main
from probekit.core.errors import ProbekitError
from probekit.data import load_dataset
from probekit.data.base import ImageDataset, ImageSplit
from probekit.data.resize import resize_center_crop
from probekit.features.cache import FeatureCache
from tests.cli.test_cli_errors import assert_one_line_error, run_cli
from tests.data.formats import write_image

# (height, width) of each file: landscape, portrait, odd margins, smaller than S, exactly S
SIZES = [(12, 20), (25, 13), (9, 9), (6, 7), (10, 10), (31, 17)]


def reference(path, size, mode="RGB"):
    """Shorter side to ``size`` (bicubic), centre ``size`` x ``size``: the ImageNet eval transform."""
    with Image.open(path) as image:
        image = image.convert(mode)
        width, height = image.size
        new = (size, size * height // width) if width <= height else (size * width // height, size)
        pixels = np.asarray(image.resize(new, Image.BICUBIC))
    top, left = (pixels.shape[0] - size) // 2, (pixels.shape[1] - size) // 2
    crop = pixels[top : top + size, left : left + size]
    return crop[..., None] if crop.ndim == 2 else crop


def write_mixed_folder(root, seed=0):
    """root/<class>/ PNG and JPEG files of several sizes; returns their paths in load order (class, path)."""
    rng = np.random.default_rng(seed)
    paths = []
    for i, (height, width) in enumerate(SIZES * 2):
        name = ("ant", "bee")[i % 2]
        suffix = ".jpg" if i % 3 == 0 else ".png"
        pixels = rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)
        paths.append(write_image(root / name / f"{i:02d}{suffix}", pixels))
    return sorted(paths, key=lambda p: (p.parent.name, str(p)))


@pytest.mark.parametrize("shape", [(12, 20, 3), (25, 13, 3), (9, 9, 1), (5, 8, 3), (8, 8, 3), (300, 199, 3)])
def test_one_image_equals_a_pillow_resize_and_numpy_crop(tmp_path, shape):
    pixels = np.random.default_rng(sum(shape)).integers(0, 256, size=shape, dtype=np.uint8)
    path = write_image(tmp_path / "x.png", pixels if shape[2] == 3 else pixels[..., 0])
    out = resize_center_crop(pixels, 8)
    assert out.shape == (8, 8, shape[2]) and out.dtype == np.uint8
    np.testing.assert_array_equal(out, reference(path, 8, "RGB" if shape[2] == 3 else "L"))
    if shape[:2] == (8, 8):
        assert out is pixels  # already the size: not resampled at all


def test_a_folder_of_mixed_sizes_is_read_at_one_size(tmp_path):
    paths = write_mixed_folder(tmp_path / "pets")
    dataset = load_dataset(str(tmp_path / "pets"), test_fraction=0.25)
    train = dataset.splits["train"]
    assert train.mixed_sizes and "is" in train.mixed_sizes
    with pytest.raises(ProbekitError, match=r"is \d+x\d+ but the dataset's images are .*--image-size S"):
        train.read(slice(0, len(train)))
    sized = train.at_size(10)
    assert sized.image_shape == (10, 10, 3) and sized.mixed_sizes is None
    expected = np.stack([reference(paths[i], 10) for i in train.index])
    np.testing.assert_array_equal(sized.read(slice(0, len(train))), expected)
    np.testing.assert_array_equal(sized.take([3, 1]).read(slice(None)), expected[[3, 1]])  # subsets keep the size


def test_extract_with_image_size_gives_the_resized_pixels(tmp_path, capsys):
    paths = write_mixed_folder(tmp_path / "pets")
    out = tmp_path / "c.h5"
    argv = ["extract", "--model", "pixels", "--data", tmp_path / "pets", "--image-size", 8, "--out", out, "--quiet"]
    assert main([str(a) for a in argv]) == 0
    with FeatureCache(out) as cache:
        fit = cache.attrs["fit"]
        assert fit["resize"]["size"] == 8 and fit["resize"]["chosen_by"] == "--image-size"
        assert "bicubic" in fit["resize"]["resize"] and fit["resize"]["crop"] == "centre"
        for split in ("train", "test"):
            index = cache.index(split)
            expected = np.stack([reference(paths[i], 8) for i in index]).transpose(0, 3, 1, 2).reshape(len(index), -1)
            np.testing.assert_allclose(cache.features(split, "pixels", 0), expected / 255.0, rtol=0, atol=1e-6)


def test_mixed_sizes_without_a_size_are_a_one_line_error(tmp_path, capsys):
    write_mixed_folder(tmp_path / "pets")
    code, err = run_cli(
        ["extract", "--model", "pixels", "--data", tmp_path / "pets", "--out", tmp_path / "c.h5"], capsys
    )
    assert_one_line_error(code, err, "do not share one size", "--image-size S", "centre-crop")
    assert not (tmp_path / "c.h5").exists()
    code, err = run_cli(
        ["extract", "--model", "pixels", "--data", tmp_path / "pets", "--image-size", 0, "--out", tmp_path / "c.h5"],
        capsys,
    )
    assert_one_line_error(code, err, "--image-size must be a positive number of pixels")


def _memory_dataset(images_by_split, like=None):
    """In-memory splits of these images, with the labels and sample ids of ``like``'s splits when given."""
    splits = {}
    for name, images in images_by_split.items():
        ids = np.arange(len(images), dtype=np.int64)
        labels, index = (like.splits[name].labels, like.splits[name].index) if like else (ids % 2, ids)
        splits[name] = ImageSplit(images, labels, index)
    return ImageDataset("memory", splits, ["ant", "bee"], "memory")


def test_a_model_with_an_input_size_resizes_mixed_data_to_it(tiny_unet_dir, tmp_path):
    """The tiny UNet takes 16 x 16 gray images: mixed sizes default to 16 without --image-size."""
    from probekit.features.extraction import ExtractConfig, extract
    from probekit.models import load_backbone

    paths = write_mixed_folder(tmp_path / "pets")
    backbone = load_backbone(str(tiny_unet_dir))
    config = ExtractConfig(timesteps=[0, 50], layers="down_blocks.0.resnets.0,mid_block", batch_size=5)
    folder = load_dataset(str(tmp_path / "pets"))
    extract(backbone, folder, tmp_path / "folder.h5", config, progress=False)
    # The same images resized here and handed over in memory at the model's size.
    resized = {name: np.stack([reference(paths[i], 16) for i in split.index]) for name, split in folder.splits.items()}
    memory = _memory_dataset(resized, like=folder)
    extract(backbone, memory, tmp_path / "memory.h5", config, progress=False)
    with FeatureCache(tmp_path / "folder.h5") as a, FeatureCache(tmp_path / "memory.h5") as b:
        assert a.attrs["fit"]["resize"]["chosen_by"] == "model input size"
        assert "resize" not in b.attrs["fit"]
        for split in ("train", "test"):
            for t in (0, 50):
                for layer in ("down_blocks.0.resnets.0", "mid_block.resnets.1"):
                    np.testing.assert_array_equal(a.features(split, layer, t), b.features(split, layer, t))


def test_same_size_data_are_untouched(tiny_unet_dir, tmp_path):
    """Data already at the model's size: --image-size of that size changes no bit; other uniform
    sizes keep --fit (here: pad 12 -> 16) and record no resize.
    """
    from probekit.features.extraction import ExtractConfig, extract
    from probekit.models import load_backbone

    rng = np.random.default_rng(5)
    backbone = load_backbone(str(tiny_unet_dir))
    config = ExtractConfig(timesteps=[10], layers="mid_block", batch_size=4)
    at_16 = _memory_dataset(
        {
            "train": rng.integers(0, 256, (6, 16, 16, 1), np.uint8),
            "test": rng.integers(0, 256, (3, 16, 16, 1), np.uint8),
        }
    )
    extract(backbone, at_16, tmp_path / "plain.h5", config, progress=False)
    extract(
        backbone, at_16, tmp_path / "sized.h5", ExtractConfig(**{**config.__dict__, "image_size": 16}), progress=False
    )
    at_12 = _memory_dataset(
        {
            "train": rng.integers(0, 256, (6, 12, 12, 1), np.uint8),
            "test": rng.integers(0, 256, (3, 12, 12, 1), np.uint8),
        }
    )
    extract(backbone, at_12, tmp_path / "pad.h5", config, progress=False)
    with FeatureCache(tmp_path / "plain.h5") as plain, FeatureCache(tmp_path / "sized.h5") as sized:
        assert plain.attrs["fit"]["fit"] == "none" and "resize" not in plain.attrs["fit"]
        for split in ("train", "test"):
            np.testing.assert_array_equal(
                plain.features(split, "mid_block.resnets.1", 10), sized.features(split, "mid_block.resnets.1", 10)
            )
    with FeatureCache(tmp_path / "pad.h5") as pad:
        assert pad.attrs["fit"]["fit"] == "pad" and "resize" not in pad.attrs["fit"]
