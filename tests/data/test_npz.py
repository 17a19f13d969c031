import numpy as np
import pytest

from probekit.core.errors import ProbekitError
from probekit.data import load_dataset
from probekit.data.npz import load_npz


def test_nhwc_uint8_with_test_arrays(tmp_path):
    rng = np.random.default_rng(0)
    x, x_test = (rng.integers(0, 256, size=(n, 5, 4, 3), dtype=np.uint8) for n in (6, 3))
    y, y_test = np.array([2, 0, 1, 2, 0, 1]), np.array([1, 1, 0])
    np.savez(
        tmp_path / "d.npz",
        x=x,
        y=y,
        x_test=x_test,
        y_test=y_test,
        class_names=np.array(["a", "b", "c"]),
    )
    dataset = load_npz(tmp_path / "d.npz")
    assert dataset.class_names == ["a", "b", "c"] and dataset.name == "d"
    assert dataset.info == {"format": "npz", "test_split": "official"}
    np.testing.assert_array_equal(dataset.splits["train"].images, x)
    np.testing.assert_array_equal(dataset.splits["test"].images, x_test)
    np.testing.assert_array_equal(dataset.splits["train"].labels, y)
    np.testing.assert_array_equal(dataset.splits["test"].index, [0, 1, 2])
    assert dataset.splits["test"].labels.dtype == np.int64


def test_channel_first_floats_are_rounded(tmp_path):
    x = np.random.default_rng(1).random((4, 3, 5, 6)).astype(np.float32)
    x[0, 0, 0, 0], x[0, 0, 0, 1] = 0.0, 1.0
    np.savez(tmp_path / "d.npz", x=x, y=np.arange(4), x_test=x, y_test=np.arange(4))
    images = load_npz(tmp_path / "d.npz").splits["train"].images
    assert images.shape == (4, 5, 6, 3)
    expected = np.floor(x.transpose(0, 2, 3, 1).astype(np.float64) * 255 + 0.5)
    np.testing.assert_array_equal(images, expected)
    assert images[0, 0, 0, 0] == 0 and images[0, 0, 1, 0] == 255


def test_grayscale_without_channel_axis(tmp_path):
    x = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    np.savez(tmp_path / "d.npz", x=x, y=[0, 1], x_test=x, y_test=[1, 0])
    images = load_npz(tmp_path / "d.npz").splits["train"].images
    assert images.shape == (2, 3, 4, 1)
    np.testing.assert_array_equal(images[..., 0], x)


def test_string_labels_map_to_sorted_ids(tmp_path):
    x = np.zeros((4, 2, 2), np.uint8)
    np.savez(
        tmp_path / "d.npz",
        x=x,
        y=["dog", "cat", "dog", "bird"],
        x_test=x[:2],
        y_test=["eel", "cat"],
    )
    dataset = load_npz(tmp_path / "d.npz")
    assert dataset.class_names == ["bird", "cat", "dog", "eel"]
    np.testing.assert_array_equal(dataset.splits["train"].labels, [2, 1, 2, 0])
    np.testing.assert_array_equal(dataset.splits["test"].labels, [3, 1])


def test_sparse_int_labels(tmp_path):
    x = np.zeros((3, 2, 2), np.uint8)
    np.savez(tmp_path / "d.npz", x=x, y=[10, 5, 7], x_test=x, y_test=[7, 7, 5])
    dataset = load_npz(tmp_path / "d.npz")
    assert dataset.class_names == ["5", "7", "10"]
    np.testing.assert_array_equal(dataset.splits["train"].labels, [2, 0, 1])


def test_holdout_without_test_arrays(tmp_path):
    x = np.arange(10, dtype=np.uint8).reshape(10, 1, 1) * np.ones((1, 2, 2), np.uint8)
    y = np.array([0] * 5 + [1] * 5)
    np.savez(tmp_path / "d.npz", x=x, y=y)
    dataset = load_dataset(str(tmp_path / "d.npz"), test_fraction=0.4, seed=1)
    assert dataset.name == str(tmp_path / "d.npz")
    assert dataset.info == {
        "format": "npz",
        "test_split": "holdout",
        "test_fraction": 0.4,
        "holdout_seed": 1,
    }
    test = dataset.splits["test"]
    np.testing.assert_array_equal(np.bincount(test.labels), [2, 2])
    np.testing.assert_array_equal(test.images[:, 0, 0, 0], test.index)  # each image encodes its position


@pytest.mark.parametrize(
    "arrays, message",
    [
        (
            {"x": np.zeros((3, 2, 2), np.uint8), "y": [0, 1]},
            r"'y' has shape \(2,\) but there are 3 images",
        ),
        ({"x": np.full((2, 2, 2), 1.5), "y": [0, 1]}, r"outside \[0, 1\]"),
        ({"x": np.full((2, 2, 2), np.nan), "y": [0, 1]}, "NaN or infinite"),
        ({"x": np.zeros((2, 2, 2), np.int64), "y": [0, 1]}, "save images as uint8"),
        ({"x": np.zeros((2, 5, 5, 4), np.uint8), "y": [0, 1]}, "expected .*C in"),
        (
            {"images": np.zeros((2, 2, 2), np.uint8), "y": [0, 1]},
            r"needs arrays 'x' .* it has \['images', 'y'\]",
        ),
        (
            {
                "x": np.zeros((2, 2, 2), np.uint8),
                "y": [0, 1],
                "x_test": np.zeros((1, 2, 2), np.uint8),
            },
            "only one of",
        ),
        (
            {"x": np.zeros((2, 2, 2), np.uint8), "y": [0, 3], "class_names": ["a", "b"]},
            r"integers 0..1",
        ),
    ],
)
def test_bad_contents(tmp_path, arrays, message):
    np.savez(tmp_path / "d.npz", **arrays)
    with pytest.raises(ProbekitError, match=message):
        load_npz(tmp_path / "d.npz")


def test_object_arrays_are_not_unpickled(tmp_path):
    np.savez(tmp_path / "d.npz", x=np.zeros((2, 2, 2), np.uint8), y=np.array([0, "a"], dtype=object))
    with pytest.raises(ProbekitError, match="object arrays"):
        load_npz(tmp_path / "d.npz")


@pytest.mark.parametrize("content", [b"PK\x03\x04 not really a zip", b"x,y\n1,2\n"])
def test_corrupt_file(tmp_path, content):
    (tmp_path / "d.npz").write_bytes(content)
    with pytest.raises(ProbekitError, match="d.npz as an .npz archive; the file is corrupt"):
        load_npz(tmp_path / "d.npz")


def test_unreadable_file(tmp_path, monkeypatch):
    from probekit.data import npz

    np.savez(tmp_path / "d.npz", x=np.zeros((4, 2, 2), np.uint8), y=[0, 1, 0, 1])

    def denied(path, *args, **kwargs):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(npz, "open", denied, raising=False)  # shadows the builtin inside the module
    with pytest.raises(ProbekitError, match=r"cannot read .*d.npz: Permission denied"):
        load_npz(tmp_path / "d.npz")
