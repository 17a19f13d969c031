import numpy as np
import pytest

from probekit.core.errors import ProbekitError
from probekit.data import list_datasets, load_dataset
from tests.data.formats import (
    write_cifar10,
    write_cifar100,
    write_idx_folder,
    write_image,
    write_tiny_imagenet,
)


def test_known_names():
    assert list_datasets() == [
        "fashion-mnist",
        "mnist",
        "cifar10",
        "cifar100",
        "tiny-imagenet",
        "digits",
    ]


def test_unknown_name_lists_the_known_ones():
    with pytest.raises(
        ProbekitError,
        match=r"unknown dataset 'imagenet-1k': not a known name \(fashion-mnist, mnist, cifar10",
    ):
        load_dataset("imagenet-1k")


def test_paths_are_detected_by_layout(tmp_path):
    rng = np.random.default_rng(0)
    write_cifar10(tmp_path / "c10", rng)
    write_cifar100(tmp_path / "c100", rng)
    write_tiny_imagenet(tmp_path / "tiny")
    for name in ("a", "b"):
        for i in range(3):
            write_image(tmp_path / "classes" / name / f"{i}.png", np.zeros((3, 3, 3), np.uint8))
    np.savez(tmp_path / "arrays.npz", x=np.zeros((4, 2, 2), np.uint8), y=[0, 1, 0, 1])
    for path, fmt in (
        ("c10", "cifar10"),
        ("c100", "cifar100"),
        ("tiny", "tiny-imagenet"),
        ("classes", "folder"),
        ("arrays.npz", "npz"),
    ):
        spec = str(tmp_path / path)
        dataset = load_dataset(spec, test_fraction=0.5)
        assert dataset.info["format"] == fmt
        assert dataset.name == spec  # a path keeps the spelling the user gave


def test_idx_folder_path_points_to_loading_by_name(tmp_path):
    write_idx_folder(tmp_path / "idx", np.random.default_rng(1))
    with pytest.raises(ProbekitError, match=r"load_dataset\('fashion-mnist', root="):
        load_dataset(str(tmp_path / "idx"))


def test_missing_path(tmp_path):
    with pytest.raises(ProbekitError, match="no such path"):
        load_dataset(str(tmp_path / "nowhere"))


def test_unsupported_file(tmp_path):
    (tmp_path / "images.csv").write_text("1,2,3")
    with pytest.raises(ProbekitError, match="not a dataset probekit can read"):
        load_dataset(str(tmp_path / "images.csv"))


def test_holdout_options_reach_the_loader():
    dataset = load_dataset("digits", test_fraction=0.5, seed=3)
    assert dataset.info["test_fraction"] == 0.5 and dataset.info["holdout_seed"] == 3
    assert len(dataset.splits["test"]) == round(1797 * 0.5)


def test_unreadable_path_simulated(tmp_path, monkeypatch):
    import os

    write_image(tmp_path / "ds" / "a" / "0.png", np.zeros((3, 3), np.uint8))
    real_access = os.access
    denied = str(tmp_path / "ds")
    monkeypatch.setattr(os, "access", lambda p, mode, **kw: False if str(p) == denied else real_access(p, mode, **kw))
    with pytest.raises(ProbekitError, match=r"cannot read .*ds: permission denied"):
        load_dataset(denied)


def test_unreadable_folder(tmp_path):
    import os

    if os.geteuid() == 0:
        pytest.skip("root reads any folder; test_unreadable_path_simulated covers this")
    for name in ("a", "b"):
        write_image(tmp_path / "ds" / name / "0.png", np.zeros((3, 3), np.uint8))
    (tmp_path / "ds").chmod(0)
    try:
        with pytest.raises(ProbekitError, match="permission denied"):
            load_dataset(str(tmp_path / "ds"))
    finally:
        (tmp_path / "ds").chmod(0o755)
