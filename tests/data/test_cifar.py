import builtins
import os
import pickle

import numpy as np
import pytest

from probekit.core.errors import ProbekitError
from probekit.data import load_dataset
from probekit.data.cifar import load_cifar10, load_cifar100, read_batch
from tests.data.formats import (
    CIFAR10_NAMES,
    cifar_rows,
    python2_pickle,
    write_cifar10,
    write_cifar100,
)


def test_cifar10_pixels_labels_and_names(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    written = write_cifar10(folder, np.random.default_rng(0))
    assert b"_codecs" not in (folder / "data_batch_1").read_bytes()  # a genuine Python 2 style pickle
    dataset = load_cifar10(folder)
    assert dataset.class_names == CIFAR10_NAMES
    assert dataset.info == {"format": "cifar10", "test_split": "official"}
    for split, (images, labels) in written.items():
        loaded = dataset.splits[split]
        assert loaded.images.shape == (len(images), 32, 32, 3) and loaded.images.dtype == np.uint8
        np.testing.assert_array_equal(loaded.images, images)
        np.testing.assert_array_equal(loaded.labels, labels)
        np.testing.assert_array_equal(loaded.index, np.arange(len(images)))
    assert len(dataset.splits["train"]) == 15  # five batches of three


def test_cifar100_uses_fine_labels(tmp_path):
    folder = tmp_path / "cifar-100-python"
    written = write_cifar100(folder, np.random.default_rng(1))
    dataset = load_cifar100(folder)
    assert len(dataset.class_names) == 100 and dataset.class_names[7] == "fine_7"
    for split, (images, fine) in written.items():
        np.testing.assert_array_equal(dataset.splits[split].images, images)
        np.testing.assert_array_equal(dataset.splits[split].labels, fine)


def test_found_by_name_under_the_conventional_folder(tmp_path):
    write_cifar10(tmp_path / "cifar-10-batches-py", np.random.default_rng(2))
    write_cifar100(tmp_path / "cifar-100-python", np.random.default_rng(3))
    assert load_dataset("cifar10", root=tmp_path).name == "cifar10"
    assert load_dataset("cifar100", root=tmp_path).name == "cifar100"


def test_missing_by_name_says_where_to_get_it(tmp_path):
    with pytest.raises(ProbekitError, match=r"cifar10 not found .*cifar-10-python.tar.gz"):
        load_dataset("cifar10", root=tmp_path)


def test_str_keys_from_a_python3_resave_are_accepted(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    write_cifar10(folder, np.random.default_rng(4))
    images = np.random.default_rng(5).integers(0, 256, size=(2, 32, 32, 3), dtype=np.uint8)
    batch = {"batch_label": "testing batch 1 of 1", "labels": [3, 4], "data": cifar_rows(images)}
    (folder / "test_batch").write_bytes(pickle.dumps(batch, protocol=3))
    np.testing.assert_array_equal(load_cifar10(folder).splits["test"].images, images)


def test_new_numpy_module_name_is_accepted(tmp_path):
    path = tmp_path / "batch"
    data = np.arange(3072, dtype=np.uint8).reshape(1, 3072)
    path.write_bytes(python2_pickle({b"data": data}).replace(b"cnumpy.core.multiarray\n", b"cnumpy._core.multiarray\n"))
    np.testing.assert_array_equal(read_batch(path)["data"], data)


class _RunsShell:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class _RunsPython:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (builtins.exec, (f"open({str(self.marker)!r}, 'w').close()",))


@pytest.mark.parametrize("payload", [_RunsShell, _RunsPython])
def test_malicious_pickle_is_refused_without_running(tmp_path, payload):
    folder = tmp_path / "cifar-10-batches-py"
    write_cifar10(folder, np.random.default_rng(6))
    marker = tmp_path / "pwned"
    (folder / "batches.meta").write_bytes(pickle.dumps({"label_names": payload(marker)}, protocol=4))
    with pytest.raises(
        ProbekitError,
        match=r"refusing to unpickle (posix\.system|builtins\.exec) from .*batches.meta: not a CIFAR batch",
    ):
        load_cifar10(folder)
    assert not marker.exists()


def test_python3_protocol2_pickle_is_refused(tmp_path):
    # Python 3 writes bytes at protocol 2 through _codecs.encode, which genuine batches never use.
    path = tmp_path / "batch"
    path.write_bytes(pickle.dumps({b"data": np.zeros((1, 3072), np.uint8)}, protocol=2))
    with pytest.raises(ProbekitError, match="refusing to unpickle _codecs.encode"):
        read_batch(path)


def test_truncated_batch(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    write_cifar10(folder, np.random.default_rng(7))
    path = folder / "data_batch_3"
    path.write_bytes(path.read_bytes()[:5000])
    with pytest.raises(ProbekitError, match="data_batch_3.*truncated or corrupt"):
        load_cifar10(folder)


def test_labels_must_match_images(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    write_cifar10(folder, np.random.default_rng(8))
    batch = {b"labels": [1], b"data": np.zeros((2, 3072), np.uint8)}
    (folder / "test_batch").write_bytes(python2_pickle(batch))
    with pytest.raises(ProbekitError, match="test_batch: 2 images but 1 'labels'"):
        load_cifar10(folder)


def test_missing_batch_file(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    write_cifar10(folder, np.random.default_rng(9))
    (folder / "data_batch_5").unlink()
    with pytest.raises(ProbekitError, match="missing data_batch_5"):
        load_cifar10(folder)


@pytest.mark.parametrize("payload", [_RunsShell, _RunsPython])
def test_malicious_training_batch_is_refused_without_running(tmp_path, payload):
    folder = tmp_path / "cifar-10-batches-py"
    write_cifar10(folder, np.random.default_rng(10))
    marker = tmp_path / "pwned"
    batch = {"data": payload(marker), "labels": [0, 1, 2]}
    (folder / "data_batch_2").write_bytes(pickle.dumps(batch, protocol=4))
    with pytest.raises(ProbekitError, match=r"refusing to unpickle .* from .*data_batch_2: not a CIFAR batch"):
        load_cifar10(folder)
    assert not marker.exists()


def test_random_bytes_batch(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    write_cifar10(folder, np.random.default_rng(11))
    (folder / "test_batch").write_bytes(np.random.default_rng(12).bytes(4000))
    with pytest.raises(ProbekitError, match="test_batch"):
        load_cifar10(folder)


@pytest.mark.parametrize("labels", [[b"cat", b"dog"], 7, [[1, 2], [3]], [0.5, 1.0]])
def test_labels_that_are_not_class_ids(tmp_path, labels):
    folder = tmp_path / "cifar-10-batches-py"
    write_cifar10(folder, np.random.default_rng(13))
    batch = {b"labels": labels, b"data": np.zeros((2, 3072), np.uint8)}
    (folder / "test_batch").write_bytes(python2_pickle(batch))
    with pytest.raises(ProbekitError, match="test_batch: 'labels' is not a list of integer class ids"):
        load_cifar10(folder)


@pytest.mark.parametrize("bad_label", [10, -1])
def test_labels_outside_the_classes(tmp_path, bad_label):
    folder = tmp_path / "cifar-10-batches-py"
    write_cifar10(folder, np.random.default_rng(14))
    batch = {b"labels": [3, bad_label], b"data": np.zeros((2, 3072), np.uint8)}
    (folder / "data_batch_4").write_bytes(python2_pickle(batch))
    with pytest.raises(ProbekitError, match=rf"data_batch_4: label {bad_label} is not one of the 10 classes \(0..9\)"):
        load_cifar10(folder)


def test_cifar100_fine_label_outside_the_classes(tmp_path):
    folder = tmp_path / "cifar-100-python"
    write_cifar100(folder, np.random.default_rng(15))
    batch = {b"fine_labels": [100], b"data": np.zeros((1, 3072), np.uint8)}
    (folder / "test").write_bytes(python2_pickle(batch))
    with pytest.raises(ProbekitError, match=r"test: label 100 is not one of the 100 classes \(0..99\)"):
        load_cifar100(folder)


def test_meta_without_a_list_of_names(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    write_cifar10(folder, np.random.default_rng(16))
    (folder / "batches.meta").write_bytes(python2_pickle({b"label_names": 10}))
    with pytest.raises(ProbekitError, match="batches.meta: 'label_names' is not a list of class names"):
        load_cifar10(folder)
