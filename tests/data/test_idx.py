import gzip
import hashlib
from pathlib import Path

import numpy as np
import pytest

from probekit.core.errors import ProbekitError
from probekit.data import idx, load_dataset, locations
from tests.data.formats import write_idx, write_idx_folder

REAL_FASHION = Path("/usr/share/datasets/fashion-mnist")


@pytest.fixture(autouse=True)
def isolated_locations(tmp_path, monkeypatch):
    """No test may see the machine's real data folders or download from the internet."""
    monkeypatch.delenv("PROBEKIT_DATA", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setattr(locations, "SYSTEM_DATA_DIRS", ())
    for name, source in list(idx.SOURCES.items()):
        unreachable = idx.IdxSource((tmp_path / "no-mirror").as_uri() + "/", source.md5, source.class_names)
        monkeypatch.setitem(idx.SOURCES, name, unreachable)


@pytest.mark.parametrize("gz", [True, False])
def test_loads_idx_files_as_nhwc_uint8(tmp_path, gz):
    written = write_idx_folder(tmp_path / "fashion-mnist", np.random.default_rng(0), gz=gz)
    dataset = load_dataset("fashion-mnist", root=tmp_path)
    assert dataset.name == "fashion-mnist"
    assert dataset.class_names[0] == "T-shirt/top" and dataset.class_names[9] == "Ankle boot"
    assert dataset.info == {"format": "idx", "test_split": "official"}
    for split, (images, labels) in written.items():
        loaded = dataset.splits[split]
        assert loaded.images.dtype == np.uint8 and loaded.images.shape == (len(images), 6, 5, 1)
        np.testing.assert_array_equal(loaded.images[..., 0], images)
        assert loaded.labels.dtype == np.int64
        np.testing.assert_array_equal(loaded.labels, labels)
        np.testing.assert_array_equal(loaded.index, np.arange(len(images)))


def test_mnist_class_names_are_digits(tmp_path):
    write_idx_folder(tmp_path / "mnist", np.random.default_rng(1))
    assert load_dataset("mnist", root=tmp_path).class_names == [str(d) for d in range(10)]


def test_root_may_be_the_dataset_folder_itself(tmp_path):
    write_idx_folder(tmp_path / "anywhere", np.random.default_rng(2))
    assert load_dataset("mnist", root=tmp_path / "anywhere").source == str(tmp_path / "anywhere")


def test_search_order_env_then_home_cache(tmp_path, monkeypatch):
    write_idx_folder(tmp_path / "env" / "mnist", np.random.default_rng(3))
    write_idx_folder(tmp_path / "home" / ".cache" / "probekit" / "mnist", np.random.default_rng(4))
    monkeypatch.setenv("PROBEKIT_DATA", str(tmp_path / "env"))
    assert load_dataset("mnist").source == str(tmp_path / "env" / "mnist")
    monkeypatch.delenv("PROBEKIT_DATA")
    assert load_dataset("mnist").source == str(tmp_path / "home" / ".cache" / "probekit" / "mnist")


def test_system_dir_is_searched_last(tmp_path, monkeypatch):
    write_idx_folder(tmp_path / "system" / "mnist", np.random.default_rng(5))
    monkeypatch.setattr(locations, "SYSTEM_DATA_DIRS", (tmp_path / "system",))
    assert load_dataset("mnist").source == str(tmp_path / "system" / "mnist")


def test_payload_shorter_than_header_says(tmp_path):
    folder = tmp_path / "mnist"
    write_idx_folder(folder, np.random.default_rng(6))
    path = folder / "train-images-idx3-ubyte.gz"
    raw = gzip.decompress(path.read_bytes())
    path.write_bytes(gzip.compress(raw[:-7]))
    with pytest.raises(ProbekitError, match="train-images-idx3-ubyte.gz.*truncated"):
        load_dataset("mnist", root=tmp_path)


def test_truncated_gzip_stream(tmp_path):
    folder = tmp_path / "mnist"
    write_idx_folder(folder, np.random.default_rng(7))
    path = folder / "t10k-labels-idx1-ubyte.gz"
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(ProbekitError, match="t10k-labels-idx1-ubyte.gz"):
        load_dataset("mnist", root=tmp_path)


def test_wrong_magic(tmp_path):
    folder = tmp_path / "mnist"
    write_idx_folder(folder, np.random.default_rng(8))
    write_idx(folder / "train-labels-idx1-ubyte.gz", np.zeros((7, 2, 2), np.uint8))  # a 3-d file
    with pytest.raises(ProbekitError, match=r"train-labels-idx1-ubyte.gz.*magic 0x00000803"):
        load_dataset("mnist", root=tmp_path)


def test_image_and_label_counts_must_match(tmp_path):
    folder = tmp_path / "mnist"
    write_idx_folder(folder, np.random.default_rng(9))
    write_idx(folder / "train-labels-idx1-ubyte.gz", np.zeros(6, np.uint8))
    with pytest.raises(ProbekitError, match="7 images but .* 6 labels"):
        load_dataset("mnist", root=tmp_path)


def test_label_outside_the_ten_classes(tmp_path):
    folder = tmp_path / "mnist"
    write_idx_folder(folder, np.random.default_rng(10))
    write_idx(folder / "t10k-labels-idx1-ubyte.gz", np.array([0, 1, 12, 3], np.uint8))
    with pytest.raises(ProbekitError, match="label 12"):
        load_dataset("mnist", root=tmp_path)


def test_not_found_without_download_lists_the_places_tried(tmp_path):
    with pytest.raises(ProbekitError, match=r"mnist not found .*train-images-idx3-ubyte.gz"):
        load_dataset("mnist", root=tmp_path, download=False)


def _serve(mirror: Path, rng: np.random.Generator, monkeypatch, *, corrupt: str | None = None) -> None:
    """Write the four .gz files into ``mirror`` and point the mnist source at it (file:// URLs)."""
    write_idx_folder(mirror, rng)
    md5 = {path.name: hashlib.md5(path.read_bytes()).hexdigest() for path in mirror.glob("*.gz")}
    if corrupt:
        md5[corrupt] = "0" * 32
    monkeypatch.setitem(
        idx.SOURCES,
        "mnist",
        idx.IdxSource(mirror.as_uri() + "/", md5, idx.SOURCES["mnist"].class_names),
    )


def test_download_when_absent(tmp_path, monkeypatch):
    _serve(tmp_path / "mirror", np.random.default_rng(11), monkeypatch)
    dataset = load_dataset("mnist", root=tmp_path / "data")
    assert dataset.source == str(tmp_path / "data" / "mnist")
    assert sorted(p.name for p in (tmp_path / "data" / "mnist").iterdir()) == sorted(idx.SOURCES["mnist"].md5)
    expected = gzip.decompress((tmp_path / "mirror" / "train-images-idx3-ubyte.gz").read_bytes())
    assert dataset.splits["train"].images.tobytes() == expected[16:]


def test_download_goes_to_env_folder_without_root(tmp_path, monkeypatch):
    _serve(tmp_path / "mirror", np.random.default_rng(12), monkeypatch)
    monkeypatch.setenv("PROBEKIT_DATA", str(tmp_path / "env"))
    assert load_dataset("mnist").source == str(tmp_path / "env" / "mnist")


def test_download_with_wrong_checksum_leaves_nothing(tmp_path, monkeypatch):
    _serve(
        tmp_path / "mirror",
        np.random.default_rng(13),
        monkeypatch,
        corrupt="t10k-images-idx3-ubyte.gz",
    )
    with pytest.raises(ProbekitError, match="MD5") as error:
        load_dataset("mnist", root=tmp_path / "data")
    assert "t10k-images-idx3-ubyte.gz" in str(error.value)
    left = {p.name for p in (tmp_path / "data" / "mnist").iterdir()}
    assert "t10k-images-idx3-ubyte.gz" not in left
    assert not [name for name in left if name.startswith(".")], "temporary file left behind"


def test_failed_download_says_where_to_put_the_files(tmp_path):
    with pytest.raises(ProbekitError, match=r"could not download .*put the four mnist .gz files in"):
        load_dataset("mnist", root=tmp_path / "data")


@pytest.mark.skipif(not REAL_FASHION.is_dir(), reason="Debian's dataset-fashion-mnist is not installed")
def test_real_fashion_mnist(monkeypatch):
    monkeypatch.setattr(locations, "SYSTEM_DATA_DIRS", (REAL_FASHION.parent,))
    dataset = load_dataset("fashion-mnist", download=False)
    assert dataset.source == str(REAL_FASHION)
    assert len(dataset.class_names) == 10
    for split, n in (("train", 60000), ("test", 10000)):
        images, labels = dataset.splits[split].images, dataset.splits[split].labels
        assert images.shape == (n, 28, 28, 1) and images.dtype == np.uint8
        np.testing.assert_array_equal(np.bincount(labels, minlength=10), [n // 10] * 10)


def test_truncation_says_expected_and_found_bytes(tmp_path):
    folder = tmp_path / "mnist"
    write_idx_folder(folder, np.random.default_rng(14))  # 7 train images of 6x5
    path = folder / "train-images-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(gzip.decompress(path.read_bytes())[:100]))
    # 16 header bytes + 7 * 6 * 5 pixels
    with pytest.raises(ProbekitError, match=r"truncated: .* 226 bytes, found 100; delete it and run again"):
        load_dataset("mnist", root=tmp_path)


def test_more_bytes_than_the_header_promises(tmp_path):
    folder = tmp_path / "mnist"
    write_idx_folder(folder, np.random.default_rng(15), gz=False)
    path = folder / "t10k-labels-idx1-ubyte"
    path.write_bytes(path.read_bytes() + b"\x00\x01\x02")
    with pytest.raises(ProbekitError, match=r"t10k-labels-idx1-ubyte has 3 bytes more than its header"):
        load_dataset("mnist", root=tmp_path)


def test_header_cut_short(tmp_path):
    folder = tmp_path / "mnist"
    write_idx_folder(folder, np.random.default_rng(16), gz=False)
    (folder / "train-images-idx3-ubyte").write_bytes(bytes([0, 0, 8, 3, 0, 0]))
    with pytest.raises(ProbekitError, match=r"train-images-idx3-ubyte is truncated: 6 bytes"):
        load_dataset("mnist", root=tmp_path)


def test_header_with_empty_images(tmp_path):
    folder = tmp_path / "mnist"
    write_idx_folder(folder, np.random.default_rng(17))
    write_idx(folder / "train-images-idx3-ubyte.gz", np.zeros((7, 0, 5), np.uint8))
    with pytest.raises(ProbekitError, match=r"train-images-idx3-ubyte.gz has header dimensions \[7, 0, 5\]"):
        load_dataset("mnist", root=tmp_path)


def test_file_that_is_not_gzip(tmp_path):
    folder = tmp_path / "mnist"
    write_idx_folder(folder, np.random.default_rng(18))
    (folder / "train-labels-idx1-ubyte.gz").write_bytes(b"<html>mirror error page</html>")
    with pytest.raises(ProbekitError, match=r"train-labels-idx1-ubyte.gz .*corrupt, delete it"):
        load_dataset("mnist", root=tmp_path)


def test_split_without_images(tmp_path):
    folder = tmp_path / "mnist"
    write_idx_folder(folder, np.random.default_rng(19))
    write_idx(folder / "t10k-images-idx3-ubyte.gz", np.zeros((0, 6, 5), np.uint8))
    write_idx(folder / "t10k-labels-idx1-ubyte.gz", np.zeros(0, np.uint8))
    with pytest.raises(ProbekitError, match="'test' split is empty"):
        load_dataset("mnist", root=tmp_path)


def test_label_error_names_the_labels_file(tmp_path):
    folder = tmp_path / "mnist"
    write_idx_folder(folder, np.random.default_rng(20))
    write_idx(folder / "train-labels-idx1-ubyte.gz", np.array([0, 1, 2, 3, 4, 5, 255], np.uint8))
    with pytest.raises(ProbekitError, match=r"train-labels-idx1-ubyte.gz: label 255 is not a mnist class \(0..9\)"):
        load_dataset("mnist", root=tmp_path)
