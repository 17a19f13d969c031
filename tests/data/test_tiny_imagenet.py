import numpy as np
import pytest

from probekit.core.errors import ProbekitError
from probekit.data import load_dataset
from probekit.data.tiny_imagenet import load_tiny_imagenet
from tests.data.formats import TINY_VAL, TINY_WNIDS, tiny_colour, write_image, write_tiny_imagenet


def test_loads_train_and_val(tmp_path):
    dataset = load_tiny_imagenet(write_tiny_imagenet(tmp_path / "tiny-imagenet-200"))
    assert dataset.class_names == ["school bus", "goldfish", "tabby"]
    train, test = dataset.splits["train"], dataset.splits["test"]
    assert train.lazy and test.lazy
    train_pixels, test_pixels = train.read(slice(None)), test.read(slice(None))
    assert train_pixels.shape == (6, 64, 64, 3) and train_pixels.dtype == np.uint8
    np.testing.assert_array_equal(train.labels, [0, 0, 1, 1, 2, 2])
    np.testing.assert_array_equal(train.index, np.arange(6))
    expected = np.array([tiny_colour(c, i) for c in range(3) for i in range(2)], np.float64)
    expected[3] = 77  # the grayscale file, converted to RGB
    np.testing.assert_allclose(train_pixels.mean(axis=(1, 2)), expected, atol=3)  # JPEG is lossy
    np.testing.assert_array_equal(train_pixels[3, ..., 0], train_pixels[3, ..., 2])
    assert test_pixels.shape == (3, 64, 64, 3)
    np.testing.assert_array_equal(test.labels, [TINY_WNIDS.index(w) for _, w, _ in TINY_VAL])
    np.testing.assert_allclose(test_pixels.mean(axis=(1, 2)), [c for *_, c in TINY_VAL], atol=3)
    assert dataset.info["test_split"] == "official"


def test_found_by_name(tmp_path):
    write_tiny_imagenet(tmp_path / "tiny-imagenet-200")
    dataset = load_dataset("tiny-imagenet", root=tmp_path)
    assert dataset.name == "tiny-imagenet" and len(dataset.splits["test"]) == 3


def test_missing_val_annotations(tmp_path):
    folder = write_tiny_imagenet(tmp_path / "tiny-imagenet-200")
    (folder / "val" / "val_annotations.txt").unlink()
    with pytest.raises(ProbekitError, match="val_annotations.txt is missing"):
        load_tiny_imagenet(folder)


def test_unknown_wnid_in_val_annotations(tmp_path):
    folder = write_tiny_imagenet(tmp_path / "tiny-imagenet-200")
    (folder / "val" / "val_annotations.txt").write_text("val_0.JPEG\tn09999999\t0\t0\t1\t1\n")
    with pytest.raises(ProbekitError, match="line 1: wnid 'n09999999' is not in wnids.txt"):
        load_tiny_imagenet(folder)


def test_unknown_wnid_train_folder(tmp_path):
    folder = write_tiny_imagenet(tmp_path / "tiny-imagenet-200")
    write_image(folder / "train" / "n09999999" / "images" / "x.JPEG", np.zeros((64, 64), np.uint8))
    with pytest.raises(ProbekitError, match="n09999999 whose wnid is not in wnids.txt"):
        load_tiny_imagenet(folder)


def test_val_image_without_label(tmp_path):
    folder = write_tiny_imagenet(tmp_path / "tiny-imagenet-200")
    write_image(folder / "val" / "images" / "val_9.JPEG", np.zeros((64, 64), np.uint8))
    with pytest.raises(ProbekitError, match="val_9.JPEG has no line"):
        load_tiny_imagenet(folder)


def test_annotated_val_image_missing(tmp_path):
    folder = write_tiny_imagenet(tmp_path / "tiny-imagenet-200")
    (folder / "val" / "images" / "val_1.JPEG").unlink()
    with pytest.raises(ProbekitError, match="labels val_1.JPEG but"):
        load_tiny_imagenet(folder)


def test_class_without_train_images(tmp_path):
    folder = write_tiny_imagenet(tmp_path / "tiny-imagenet-200")
    for path in (folder / "train" / TINY_WNIDS[2] / "images").iterdir():
        path.unlink()
    with pytest.raises(ProbekitError, match=f"no JPEGs in .*{TINY_WNIDS[2]}"):
        load_tiny_imagenet(folder)


@pytest.mark.parametrize("name", ["wnids.txt", "words.txt", "val/val_annotations.txt"])
def test_binary_text_file(tmp_path, name):
    folder = write_tiny_imagenet(tmp_path / "tiny-imagenet-200")
    (folder / name).write_bytes(b"\xff\xfe\x00garbage\x80\x81")
    with pytest.raises(ProbekitError, match=rf"cannot read .*{name} as text"):
        load_tiny_imagenet(folder)
