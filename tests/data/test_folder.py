import numpy as np
import pytest

from probekit.core.errors import ProbekitError
from probekit.data import load_dataset
from probekit.data.folder import load_folder
from tests.data.formats import write_image

COUNTS = {"bird": 10, "cat": 5, "dog": 5}  # sorted names: bird=0, cat=1, dog=2


def write_pool(root, rng, height=6, width=7):
    """root/<class>/... PNGs (lossless); returns the pixels in the expected load order."""
    expected = []
    for name, count in COUNTS.items():
        for i in range(count):
            pixels = rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)
            # mixed suffix case and a nested sub-folder must both be found
            relative = f"sub/{i:02d}.PNG" if i == 0 else f"{i:02d}.png"
            write_image(root / name / relative, pixels)
            expected.append((f"{name}/{relative}", pixels, list(COUNTS).index(name)))
    (root / "cat" / "notes.txt").write_text("not an image")
    write_image(root / ".ipynb_checkpoints" / "x.png", np.zeros((2, 2, 3), np.uint8))
    expected.sort(key=lambda item: (item[2], item[0]))  # class, then path
    return np.stack([p for _, p, _ in expected]), np.array([c for *_, c in expected])


def test_pool_is_split_by_stratified_holdout(tmp_path):
    images, labels = write_pool(tmp_path / "pets", np.random.default_rng(0))
    dataset = load_folder(tmp_path / "pets", test_fraction=0.2, seed=0)
    assert dataset.class_names == ["bird", "cat", "dog"]
    assert dataset.name == "pets"
    assert dataset.info == {
        "format": "folder",
        "test_split": "holdout",
        "test_fraction": 0.2,
        "holdout_seed": 0,
    }
    train, test = dataset.splits["train"], dataset.splits["test"]
    # 20 images, 4 to test: bird 10 * 4/20 = 2, cat 1, dog 1
    np.testing.assert_array_equal(np.bincount(test.labels, minlength=3), [2, 1, 1])
    np.testing.assert_array_equal(np.sort(np.concatenate([train.index, test.index])), np.arange(20))
    for split in (train, test):
        assert split.lazy and split.image_shape == (6, 7, 3)
        pixels = split.read(slice(None))
        assert pixels.shape[1:] == (6, 7, 3) and pixels.dtype == np.uint8
        assert np.all(np.diff(split.index) > 0), "original order must be kept"
        np.testing.assert_array_equal(pixels, images[split.index])
        np.testing.assert_array_equal(split.labels, labels[split.index])


def test_holdout_is_seeded(tmp_path):
    write_pool(tmp_path / "pets", np.random.default_rng(1))
    first = load_folder(tmp_path / "pets", seed=3).splits["test"].index
    np.testing.assert_array_equal(load_folder(tmp_path / "pets", seed=3).splits["test"].index, first)
    others = [load_folder(tmp_path / "pets", seed=s).splits["test"].index for s in range(4, 8)]
    assert any(not np.array_equal(first, other) for other in others)


def test_train_and_val_folders(tmp_path):
    rng = np.random.default_rng(2)
    gray = {}
    for split, names in (("train", ["a", "b", "c"]), ("val", ["c", "a"])):
        for name in names:
            gray[split, name] = rng.integers(0, 256, size=(4, 4), dtype=np.uint8)
            write_image(tmp_path / "ds" / split / name / "0.bmp", gray[split, name])
    dataset = load_folder(tmp_path / "ds")
    assert dataset.class_names == ["a", "b", "c"]
    assert dataset.info == {"format": "folder", "test_split": "official", "test_folder": "val"}
    test = dataset.splits["test"]
    np.testing.assert_array_equal(test.labels, [0, 2])  # val has no "b"; ids follow train's classes
    np.testing.assert_array_equal(test.index, [0, 1])
    assert test.read(slice(None)).shape == (2, 4, 4, 1)  # all grayscale -> one channel
    np.testing.assert_array_equal(test.read([1])[0, ..., 0], gray["val", "c"])


def test_mixed_gray_and_colour_become_rgb(tmp_path):
    gray = np.arange(16, dtype=np.uint8).reshape(4, 4) * 10
    write_image(tmp_path / "ds" / "a" / "0.png", gray)
    write_image(tmp_path / "ds" / "a" / "1.png", np.zeros((4, 4, 3), np.uint8))
    write_image(tmp_path / "ds" / "b" / "0.png", np.zeros((4, 4, 3), np.uint8))
    write_image(tmp_path / "ds" / "b" / "1.png", np.zeros((4, 4, 3), np.uint8))
    dataset = load_folder(tmp_path / "ds", test_fraction=0.5)
    everything = np.concatenate([dataset.splits[s].read(slice(None)) for s in ("train", "test")])
    index = np.concatenate([dataset.splits["train"].index, dataset.splits["test"].index])
    assert everything.shape[-1] == 3
    np.testing.assert_array_equal(everything[index == 0][0], np.repeat(gray[..., None], 3, axis=2))


def test_lone_train_folder_is_not_taken_for_a_class(tmp_path):
    for name in ("a", "b"):
        write_image(tmp_path / "ds" / "train" / name / "0.png", np.zeros((4, 4), np.uint8))
    with pytest.raises(ProbekitError, match="train holds class folders but its train/test partner"):
        load_folder(tmp_path / "ds")


def test_a_class_may_be_called_train(tmp_path):
    for name in ("bus", "car", "train"):
        for i in range(3):
            write_image(tmp_path / "ds" / name / f"{i}.png", np.zeros((4, 4), np.uint8))
    assert load_folder(tmp_path / "ds", test_fraction=0.4).class_names == ["bus", "car", "train"]


def test_test_class_missing_from_train(tmp_path):
    write_image(tmp_path / "ds" / "train" / "a" / "0.png", np.zeros((4, 4), np.uint8))
    write_image(tmp_path / "ds" / "test" / "z" / "0.png", np.zeros((4, 4), np.uint8))
    with pytest.raises(ProbekitError, match="z is a class with no folder in"):
        load_folder(tmp_path / "ds")


def test_images_of_different_sizes_are_found_from_the_headers(tmp_path):
    write_pool(tmp_path / "pets", np.random.default_rng(3))
    write_image(tmp_path / "pets" / "dog" / "99.png", np.zeros((8, 8, 3), np.uint8))
    dataset = load_folder(tmp_path / "pets")
    assert all(split.lazy for split in dataset.splits.values())
    assert all(
        split.mixed_sizes is not None
        and "dog/99.png is 8x8 but" in split.mixed_sizes
        and split.mixed_sizes.endswith("is 7x6")
        for split in dataset.splits.values()
    )
    assert load_folder(tmp_path / "pets").splits["train"].at_size(4).mixed_sizes is None


def test_corrupt_image(tmp_path):
    write_pool(tmp_path / "pets", np.random.default_rng(4))
    (tmp_path / "pets" / "cat" / "03.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    with pytest.raises(ProbekitError, match="cat/03.png.*corrupt"):
        load_folder(tmp_path / "pets")


def test_truncated_image(tmp_path):
    write_pool(tmp_path / "pets", np.random.default_rng(5))
    path = tmp_path / "pets" / "bird" / "04.png"
    path.write_bytes(path.read_bytes()[:60])
    # The header is intact, so loading succeeds; decoding the pixels (per batch) fails clearly.
    dataset = load_folder(tmp_path / "pets", test_fraction=0.2, seed=0)
    with pytest.raises(ProbekitError, match="bird/04.png.*corrupt"):
        for split in dataset.splits.values():
            split.read(slice(None))


def test_empty_folder(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ProbekitError, match="has no class sub-folders"):
        load_dataset(str(tmp_path / "empty"))


def test_class_folder_without_images(tmp_path):
    write_image(tmp_path / "ds" / "a" / "0.png", np.zeros((4, 4), np.uint8))
    (tmp_path / "ds" / "b").mkdir()
    with pytest.raises(ProbekitError, match="class folder .*b has no images"):
        load_folder(tmp_path / "ds")


def test_too_few_images_for_a_holdout(tmp_path):
    write_image(tmp_path / "ds" / "a" / "0.png", np.zeros((4, 4), np.uint8))
    write_image(tmp_path / "ds" / "b" / "0.png", np.zeros((4, 4), np.uint8))
    with pytest.raises(ProbekitError, match="cannot hold out"):
        load_folder(tmp_path / "ds")


def test_images_directly_in_the_root(tmp_path):
    for i in range(4):
        write_image(tmp_path / "ds" / f"{i}.png", np.zeros((4, 4), np.uint8))
    with pytest.raises(ProbekitError, match=r"ds has no class sub-folders; expected .*ds/<class>/<image>"):
        load_folder(tmp_path / "ds")


def test_images_beside_class_folders_are_not_dropped_silently(tmp_path):
    write_pool(tmp_path / "pets", np.random.default_rng(6))
    write_image(tmp_path / "pets" / "stray.png", np.zeros((6, 7, 3), np.uint8))
    with pytest.raises(ProbekitError, match=r"pets has 1 image\(s\) directly in it \(e.g. stray.png\)"):
        load_folder(tmp_path / "pets")


def test_images_beside_class_folders_of_a_split(tmp_path):
    for split in ("train", "test"):
        for name in ("a", "b"):
            write_image(tmp_path / "ds" / split / name / "0.png", np.zeros((4, 4), np.uint8))
    write_image(tmp_path / "ds" / "test" / "loose.png", np.zeros((4, 4), np.uint8))
    with pytest.raises(ProbekitError, match=r"test has 1 image\(s\) directly in it \(e.g. loose.png\)"):
        load_folder(tmp_path / "ds")


def test_lone_test_folder(tmp_path):
    for name in ("a", "b"):
        write_image(tmp_path / "ds" / "test" / name / "0.png", np.zeros((4, 4), np.uint8))
    with pytest.raises(ProbekitError, match="test holds class folders but its train/test partner"):
        load_folder(tmp_path / "ds")


def test_unreadable_image_says_so(tmp_path, monkeypatch):
    from probekit.data import images

    write_pool(tmp_path / "pets", np.random.default_rng(7))
    locked = tmp_path / "pets" / "dog" / "02.png"
    real_open = images.Image.open

    def open_image(path, *args, **kwargs):
        if str(path) == str(locked):
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(images.Image, "open", open_image)
    with pytest.raises(ProbekitError, match=r"dog/02.png: permission denied"):
        load_folder(tmp_path / "pets")
