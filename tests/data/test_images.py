"""Lazy image files: memory that does not grow with the number of images, and subsets that stay lazy."""

import tracemalloc

import numpy as np
import pytest

from probekit.core.errors import ProbekitError
from probekit.data import load_dataset, stratified_subset
from probekit.data.images import FileImages
from probekit.features.extraction import ExtractConfig, extract
from probekit.models import load_backbone
from tests.data.formats import write_image

SIZE = 24  # 24 x 24 x 3 = 1728 bytes of pixels per image
BATCH = 50


def write_folder(root, n, seed=0):
    """root/train/<class>/ and root/test/<class>/ PNGs, n images in all; returns (train pixels, labels) in load
    order.
    """
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, size=(n, SIZE, SIZE, 3), dtype=np.uint8)
    n_test = n // 10
    for i, image in enumerate(pixels):
        split, j = ("test", i - (n - n_test)) if i >= n - n_test else ("train", i)
        write_image(root / split / f"c{j % 4}" / f"{j:05d}.png", image)
    train = pixels[: n - n_test]
    order = sorted(range(len(train)), key=lambda j: (j % 4, j))  # class, then file name
    return train[order], np.array([j % 4 for j in order])


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("lazy")
    return {n: (root / f"n{n}", *write_folder(root / f"n{n}", n)) for n in (200, 2000)}


def traced_peak(run):
    """Bytes allocated at the peak of ``run()`` beyond what was held before it (numpy reports to tracemalloc)."""
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        run()
        return tracemalloc.get_traced_memory()[1] - before
    finally:
        tracemalloc.stop()


def read_in_batches(split):
    for start in range(0, len(split), BATCH):
        split.read(slice(start, start + BATCH))


def test_reading_batches_does_not_grow_with_the_number_of_images(folders):
    peaks = {}
    for n, (root, _, _) in folders.items():
        dataset = load_dataset(str(root))
        peaks[n] = traced_peak(lambda: read_in_batches(dataset.splits["train"]))
    all_pixels = 1800 * SIZE * SIZE * 3  # what holding the 2000-image folder's train split would cost
    batch_pixels = BATCH * SIZE * SIZE * 3
    assert peaks[2000] < 4 * batch_pixels < all_pixels / 5, peaks
    assert peaks[2000] < 1.5 * peaks[200] + batch_pixels, peaks


def test_reading_at_another_size_does_not_grow_with_the_number_of_images(folders):
    """Each image is resized as it is decoded (24 -> 16 here): still one batch held at a time."""
    peaks = {}
    for n, (root, _, _) in folders.items():
        split = load_dataset(str(root)).splits["train"].at_size(16)
        peaks[n] = traced_peak(lambda: read_in_batches(split))
    batch_pixels = BATCH * SIZE * SIZE * 3
    assert peaks[2000] < 4 * batch_pixels, peaks
    assert peaks[2000] < 1.5 * peaks[200] + batch_pixels, peaks


def test_loading_reads_headers_not_pixels(folders, monkeypatch):
    from probekit.data import images

    def no_pixels(*args, **kwargs):
        raise AssertionError("pixels were decoded while loading")

    monkeypatch.setattr(images, "decode_image", no_pixels)
    root, _, _ = folders[2000]
    dataset = load_dataset(str(root))
    assert len(dataset.splits["train"]) == 1800 and dataset.splits["train"].lazy


def test_extraction_memory_does_not_grow_with_the_number_of_images(folders):
    backbone = load_backbone("pixels")
    peaks = {}
    for n, (root, _, _) in folders.items():
        dataset = load_dataset(str(root))
        out = root / "pixels.h5"
        config = ExtractConfig(batch_size=BATCH)
        peaks[n] = traced_peak(lambda: extract(backbone, dataset, out, config, progress=False, overwrite=True))
    all_pixels = 2000 * SIZE * SIZE * 3
    # pixel features are float32, 4 bytes a pixel: one batch of them is 4 * BATCH * 1728 bytes
    assert peaks[2000] < 1.5 * peaks[200] + 4 * BATCH * SIZE * SIZE * 3, peaks
    assert peaks[2000] < all_pixels, peaks


def test_batches_are_the_files_pixels(folders):
    root, pixels, labels = folders[200]
    train = load_dataset(str(root)).splits["train"]
    assert train.lazy and train.image_shape == (SIZE, SIZE, 3)
    np.testing.assert_array_equal(train.labels, labels)
    np.testing.assert_array_equal(train.read(slice(30, 80)), pixels[30:80])
    np.testing.assert_array_equal(train.read([7, 3, 150]), pixels[[7, 3, 150]])


def test_subsets_stay_lazy_and_decode_nothing(folders, monkeypatch):
    root, pixels, labels = folders[200]
    train = load_dataset(str(root)).splits["train"]
    decoded = []
    real_decode = FileImages.decode
    monkeypatch.setattr(FileImages, "decode", lambda self, rows: decoded.extend(rows) or real_decode(self, rows))
    subset = stratified_subset(train, 40, seed=3)
    assert subset.lazy and decoded == []
    np.testing.assert_array_equal(np.bincount(subset.labels), [10, 10, 10, 10])  # 180 = 4 x 45 -> 40 = 4 x 10
    part = subset.take(slice(10, 30))
    assert part.lazy and decoded == []
    np.testing.assert_array_equal(part.read(slice(None)), pixels[subset.index[10:30]])
    assert len(decoded) == 20  # only the images read


def test_damaged_file_is_an_error_when_its_batch_is_read(tmp_path):
    write_folder(tmp_path / "ds", 20)
    path = tmp_path / "ds" / "train" / "c1" / "00005.png"
    path.write_bytes(path.read_bytes()[:60])  # header intact, pixels cut off
    train = load_dataset(str(tmp_path / "ds")).splits["train"]
    with pytest.raises(ProbekitError, match=r"c1/00005.png .*corrupt, remove or replace it"):
        read_in_batches(train)
