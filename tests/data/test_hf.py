"""hf-disk: datasets built here with ``datasets`` and ``save_to_disk``; hf: with the hub call replaced."""

import io
import sys

import numpy as np
import pytest
from PIL import Image

datasets = pytest.importorskip("datasets")

from probekit.core.errors import ProbekitError  # noqa: E402
from probekit.data import load_dataset  # noqa: E402

NAMES = ["ant", "bee", "cow"]


def png(pixels: np.ndarray) -> dict:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")  # lossless: read back exactly
    return {"bytes": buffer.getvalue(), "path": None}


def make_split(rng, n, height=5, width=6, channels=3, label_kind="class"):
    shape = (n, height, width, channels) if channels == 3 else (n, height, width)
    pixels = rng.integers(0, 256, size=shape, dtype=np.uint8)
    labels = np.arange(n) % len(NAMES)
    rng.shuffle(labels)
    label_feature = {
        "class": datasets.ClassLabel(names=NAMES),
        "int": datasets.Value("int64"),
        "string": datasets.Value("string"),
    }[label_kind]
    values = [NAMES[i] for i in labels] if label_kind == "string" else labels.tolist()
    features = datasets.Features(
        {"picture": datasets.Image(), "label": label_feature, "note": datasets.Value("string")}
    )
    table = datasets.Dataset.from_dict(
        {"picture": [png(p) for p in pixels], "label": values, "note": [f"n{i}" for i in range(n)]},
        features=features,
    )
    return table, pixels, labels


def save(path, **splits):
    datasets.DatasetDict(splits).save_to_disk(str(path))
    return f"hf-disk:{path}"


def test_train_test_and_validation_are_read_lazily(tmp_path):
    rng = np.random.default_rng(0)
    (train, train_px, train_y), (test, test_px, test_y), (val, val_px, val_y) = (make_split(rng, n) for n in (12, 7, 5))
    spec = save(tmp_path / "ds", train=train, test=test, validation=val)
    dataset = load_dataset(spec)
    assert dataset.class_names == NAMES
    assert set(dataset.splits) == {"train", "test", "val"}
    assert dataset.info["test_split"] == "official" and dataset.info["image_column"] == "picture"
    for name, pixels, labels in (("train", train_px, train_y), ("test", test_px, test_y), ("val", val_px, val_y)):
        split = dataset.splits[name]
        assert split.lazy and split.image_shape == (5, 6, 3)
        np.testing.assert_array_equal(split.labels, labels)
        np.testing.assert_array_equal(split.index, np.arange(len(labels)))
        np.testing.assert_array_equal(split.read(slice(None)), pixels)
        np.testing.assert_array_equal(split.read([4, 0, 2]), pixels[[4, 0, 2]])


def test_validation_is_the_test_split_when_there_is_no_test(tmp_path):
    rng = np.random.default_rng(1)
    (train, _, _), (val, val_px, val_y) = make_split(rng, 9), make_split(rng, 4)
    dataset = load_dataset(save(tmp_path / "ds", train=train, validation=val))
    assert set(dataset.splits) == {"train", "test"} and dataset.info["test_split"] == "validation"
    np.testing.assert_array_equal(dataset.splits["test"].labels, val_y)
    np.testing.assert_array_equal(dataset.splits["test"].read(slice(None)), val_px)


def test_an_unlabelled_test_split_gives_way_to_validation(tmp_path):
    rng = np.random.default_rng(2)
    (train, _, _), (val, _, val_y) = make_split(rng, 9), make_split(rng, 4)
    test = make_split(rng, 3)[0].cast_column("label", datasets.Value("int64"))
    test = test.map(lambda row: {"label": -1}).cast_column("label", datasets.ClassLabel(names=NAMES))
    dataset = load_dataset(save(tmp_path / "ds", train=train, test=test, validation=val))
    assert set(dataset.splits) == {"train", "test"}
    np.testing.assert_array_equal(dataset.splits["test"].labels, val_y)


def test_one_split_is_held_out_by_class(tmp_path):
    rng = np.random.default_rng(3)
    train, pixels, labels = make_split(rng, 30)
    dataset = load_dataset(save(tmp_path / "ds", train=train), test_fraction=0.2, seed=4)
    train_split, test_split = dataset.splits["train"], dataset.splits["test"]
    assert dataset.info["test_split"] == "holdout" and train_split.lazy and test_split.lazy
    np.testing.assert_array_equal(np.bincount(test_split.labels, minlength=3), [2, 2, 2])  # 6 of 30, 10 per class
    np.testing.assert_array_equal(np.sort(np.concatenate([train_split.index, test_split.index])), np.arange(30))
    for split in (train_split, test_split):
        np.testing.assert_array_equal(split.labels, labels[split.index])
        np.testing.assert_array_equal(split.read(slice(None)), pixels[split.index])


def test_a_single_saved_dataset_is_one_pool(tmp_path):
    train, _, _ = make_split(np.random.default_rng(4), 10)
    train.save_to_disk(str(tmp_path / "one"))
    dataset = load_dataset(f"hf-disk:{tmp_path / 'one'}", test_fraction=0.3)
    assert len(dataset.splits["train"]) + len(dataset.splits["test"]) == 10


def test_integer_and_string_labels_without_class_names(tmp_path):
    rng = np.random.default_rng(5)
    train, _, labels = make_split(rng, 9, label_kind="int")
    test, _, _ = make_split(rng, 3, label_kind="int")
    dataset = load_dataset(save(tmp_path / "int", train=train, test=test))
    assert dataset.class_names == ["0", "1", "2"]
    np.testing.assert_array_equal(dataset.splits["train"].labels, labels)

    train, _, labels = make_split(rng, 9, label_kind="string")
    test, _, test_labels = make_split(rng, 3, label_kind="string")
    dataset = load_dataset(save(tmp_path / "str", train=train, test=test))
    assert dataset.class_names == sorted(NAMES)  # ant, bee, cow: already sorted
    np.testing.assert_array_equal(dataset.splits["test"].labels, test_labels)


def test_grayscale_only_when_every_image_is(tmp_path):
    rng = np.random.default_rng(6)
    train, train_px, _ = make_split(rng, 6, channels=1)
    test, _, _ = make_split(rng, 3, channels=1)
    dataset = load_dataset(save(tmp_path / "gray", train=train, test=test))
    assert dataset.splits["train"].image_shape == (5, 6, 1)
    np.testing.assert_array_equal(dataset.splits["train"].read(slice(None))[..., 0], train_px)

    colour, colour_px, _ = make_split(rng, 3, channels=3)
    dataset = load_dataset(save(tmp_path / "mixed", train=train, test=colour))
    assert dataset.splits["train"].image_shape == (5, 6, 3)
    np.testing.assert_array_equal(dataset.splits["train"].read([0])[0], np.repeat(train_px[0][..., None], 3, axis=2))
    np.testing.assert_array_equal(dataset.splits["test"].read(slice(None)), colour_px)


def test_columns_are_named_when_detection_cannot_choose(tmp_path):
    rng = np.random.default_rng(7)
    train, pixels, labels = make_split(rng, 6)
    coarse = datasets.ClassLabel(names=["small", "big"])
    train = train.add_column("coarse", (labels > 0).astype(int).tolist()).cast_column("coarse", coarse)
    spec = save(tmp_path / "ds", train=train, test=train)
    with pytest.raises(
        ProbekitError, match=r"several ClassLabel columns \(label, coarse\); choose one with --label-column"
    ):
        load_dataset(spec)
    dataset = load_dataset(spec, label_column="coarse", image_column="picture")
    assert dataset.class_names == ["small", "big"]
    np.testing.assert_array_equal(dataset.splits["train"].labels, (labels > 0).astype(int))


@pytest.mark.parametrize(
    "options, message",
    [
        ({"image_column": "photo"}, r"has no column 'photo' \(--image-column\); its columns: picture \(Image\)"),
        (
            {"image_column": "note"},
            r"column 'note' of .* is Value, not an image; give an Image column to --image-column \(picture\)",
        ),
        ({"label_column": "picture"}, r"column 'picture' of .* not a class label"),
        ({"label_column": "nope"}, r"has no column 'nope' \(--label-column\)"),
    ],
)
def test_bad_columns_are_one_clear_error(tmp_path, options, message):
    train, _, _ = make_split(np.random.default_rng(8), 6)
    with pytest.raises(ProbekitError, match=message) as error:
        load_dataset(save(tmp_path / "ds", train=train, test=train), **options)
    assert "\n" not in str(error.value)


def test_no_image_column(tmp_path):
    table = datasets.Dataset.from_dict({"x": [1, 2], "label": [0, 1]})
    with pytest.raises(ProbekitError, match=r"has no Image column; its columns: x \(Value\), label \(Value\)"):
        load_dataset(save(tmp_path / "ds", train=table, test=table))


def test_unknown_splits(tmp_path):
    train, _, _ = make_split(np.random.default_rng(9), 6)
    with pytest.raises(ProbekitError, match=r"has splits training, eval but none named 'train'"):
        load_dataset(save(tmp_path / "ds", training=train, eval=train))


def _with_odd_image(train, row):
    """``train`` with an 8 x 8 image in place of row ``row``."""
    return (
        train.cast_column("picture", datasets.Image(decode=False))
        .map(
            lambda r, i: {"picture": png(np.zeros((8, 8, 3), np.uint8)) if i == row else r["picture"]},
            with_indices=True,
        )
        .cast_column("picture", datasets.Image())
    )


def test_mixed_sizes_among_the_first_images_are_read_at_one_size(tmp_path):
    from tests.data.test_resize import reference

    rng = np.random.default_rng(11)
    train, train_px, _ = make_split(rng, 6)
    dataset = load_dataset(save(tmp_path / "ds", train=_with_odd_image(train, 4), test=train))
    split = dataset.splits["train"]
    assert "row 4 of the train split" in split.mixed_sizes and "is 8x8 but" in split.mixed_sizes
    assert dataset.splits["test"].mixed_sizes == split.mixed_sizes  # one verdict for the dataset
    pixels = split.at_size(4).read(slice(None))
    for i in range(6):
        source = np.zeros((8, 8, 3), np.uint8) if i == 4 else train_px[i]
        path = tmp_path / f"{i}.png"
        Image.fromarray(source).save(path)
        np.testing.assert_array_equal(pixels[i], reference(path, 4))


def test_an_image_of_another_size_after_the_scanned_ones_fails_when_its_batch_is_read(tmp_path, monkeypatch):
    from probekit.data import hf

    monkeypatch.setattr(hf, "_SCAN_CHUNK", 3)  # headers of the first 3 images per split are read
    rng = np.random.default_rng(10)
    train, _, _ = make_split(rng, 6)
    dataset = load_dataset(save(tmp_path / "ds", train=_with_odd_image(train, 4), test=train))
    assert dataset.splits["train"].mixed_sizes is None
    dataset.splits["train"].read(slice(0, 4))  # the batches before it read fine
    with pytest.raises(
        ProbekitError, match=r"row 4 of the train split of hf-disk:.* is 8x8 but .* are 6x5.*--image-size S"
    ):
        dataset.splits["train"].read(slice(4, 6))


def test_missing_folder(tmp_path):
    with pytest.raises(ProbekitError, match=r"is not a folder written by datasets' save_to_disk"):
        load_dataset(f"hf-disk:{tmp_path / 'absent'}")


def test_columns_are_refused_for_other_data(tmp_path):
    with pytest.raises(ProbekitError, match=r"--image-column applies to hf: and hf-disk: data only"):
        load_dataset("digits", image_column="image")


def test_hub_specs_reach_load_dataset_with_name_and_config(tmp_path, monkeypatch):
    rng = np.random.default_rng(11)
    built = datasets.DatasetDict(train=make_split(rng, 6)[0], test=make_split(rng, 3)[0])
    calls = []
    monkeypatch.setattr(datasets, "load_dataset", lambda *args: calls.append(args) or built)
    assert load_dataset("hf:someone/pets:small").name == "hf:someone/pets:small"
    load_dataset("hf:someone/pets")
    assert calls == [("someone/pets", "small"), ("someone/pets", None)]

    def offline(*args):
        raise ConnectionError("Couldn't reach the hub\nmore detail")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(
        ProbekitError,
        match=r"cannot load 'someone/pets' from the Hugging Face hub \(Couldn't reach the hub\); .*hf-disk:PATH",
    ) as error:
        load_dataset("hf:someone/pets")
    assert "\n" not in str(error.value)


def test_missing_library_names_the_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "datasets", None)  # import datasets -> ImportError
    with pytest.raises(ProbekitError, match=r"need the Hugging Face datasets library: pip install datasets"):
        load_dataset("hf-disk:/nowhere")
