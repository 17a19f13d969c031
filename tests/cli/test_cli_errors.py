"""Bad inputs through the command line: exit code 2, one stderr line, no traceback, no finished-looking file.

Every case writes its tiny inputs in the real formats into tmp_path. Messages are checked for what
they must say (the file or key at fault, and what to do), not for their exact wording.
"""

from __future__ import annotations

import errno
import gzip
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from probekit.cli import main
from probekit.core.errors import ProbekitError
from probekit.data import locations
from probekit.features import cache
from probekit.features.cache import FeatureCache
from tests.conftest import make_tiny_unet
from tests.data.formats import python2_pickle, write_cifar10, write_idx, write_idx_folder, write_image

REPO = Path(__file__).resolve().parents[2]
IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0


def run_cli(argv: list[object], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    """(exit code, stderr) of ``probekit argv``; argparse errors exit through SystemExit."""
    try:
        code = main([str(arg) for arg in argv])
    except SystemExit as exit_:
        code = exit_.code
    return code, capsys.readouterr().err


def assert_one_line_error(code: int, err: str, *fragments: str) -> str:
    assert code == 2, err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one stderr line, got:\n{err}"
    line = lines[0]
    assert line.startswith("probekit: error: ")
    for fragment in fragments:
        assert fragment.lower() in line.lower(), f"{fragment!r} not in {line!r}"
    return line


def assert_nothing_finished(out: Path) -> None:
    """No file at ``out``, or one that says it is unfinished."""
    if not out.exists():
        return
    with FeatureCache(out) as written:
        assert not written.complete
        with pytest.raises(ProbekitError, match="unfinished"):
            written.require_complete()


@pytest.fixture
def npz_data(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    path = tmp_path / "toy.npz"
    np.savez(
        path,
        x=rng.integers(0, 256, size=(12, 8, 8), dtype=np.uint8),
        y=np.arange(12) % 3,
        x_test=rng.integers(0, 256, size=(6, 8, 8), dtype=np.uint8),
        y_test=np.arange(6) % 3,
    )
    return path


def extract_argv(model: object, data: object, out: Path, *extra: object) -> list[object]:
    return ["extract", "--model", model, "--data", data, "--out", out, "--quiet", *extra]


class _Payload:
    """Unpickling this calls ``function(argument)``: it must never happen."""

    def __init__(self, function: Callable[[str], object], argument: str) -> None:
        self.function, self.argument = function, argument

    def __reduce__(self) -> tuple[Callable[[str], object], tuple[str]]:
        return self.function, (self.argument,)


def _touch_command(marker: Path) -> _Payload:
    return _Payload(os.system, f"touch {marker}")


# ------------------------------------------------------------------------------------------ models


def test_missing_model_path(npz_data, tmp_path, capsys):
    code, err = run_cli(extract_argv("/nope", npz_data, tmp_path / "f.h5"), capsys)
    assert_one_line_error(code, err, "/nope", "not found")
    assert_nothing_finished(tmp_path / "f.h5")


def test_unreadable_model_folder_simulated(tiny_unet_dir, monkeypatch, capsys):
    real_access = os.access
    denied = str(tiny_unet_dir)
    monkeypatch.setattr(os, "access", lambda p, mode, **kw: False if str(p) == denied else real_access(p, mode, **kw))
    code, err = run_cli(["layers", "--model", tiny_unet_dir], capsys)
    assert_one_line_error(code, err, str(tiny_unet_dir), "permission denied", "chmod")


@pytest.mark.skipif(IS_ROOT, reason="root reads any folder; the simulated test covers this")
def test_unreadable_model_folder(tmp_path, capsys):
    folder = tmp_path / "model"
    make_tiny_unet().save_pretrained(folder)
    folder.chmod(0)
    try:
        code, err = run_cli(["layers", "--model", folder], capsys)
    finally:
        folder.chmod(0o755)
    assert_one_line_error(code, err, "permission denied")


@pytest.mark.parametrize(
    "name, content",
    [("notes.txt", b"just some text\n"), ("model.pth", bytes(range(256)) * 3), ("weights.bin", b"\x00\xff" * 400)],
)
def test_file_that_is_not_a_checkpoint(name, content, tmp_path, capsys):
    (tmp_path / name).write_bytes(content)
    code, err = run_cli(["layers", "--model", tmp_path / name], capsys)
    assert_one_line_error(code, err, name, "not a model probekit can read")


def _unet_copy(tiny_unet_dir: Path, tmp_path: Path) -> Path:
    folder = tmp_path / "unet"
    shutil.copytree(tiny_unet_dir, folder)
    return folder


def test_config_that_is_not_json(tiny_unet_dir, tmp_path, capsys):
    folder = _unet_copy(tiny_unet_dir, tmp_path)
    (folder / "config.json").write_text('{"sample_size": 16,,')
    code, err = run_cli(["layers", "--model", folder], capsys)
    assert_one_line_error(code, err, "config.json", "not valid JSON")


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_weights_file_that_is_damaged(damage, tiny_unet_dir, tmp_path, capsys):
    folder = _unet_copy(tiny_unet_dir, tmp_path)
    weights = folder / "diffusion_pytorch_model.safetensors"
    raw = weights.read_bytes()
    weights.write_bytes(np.random.default_rng(5).bytes(600) if damage == "garbage" else raw[: len(raw) // 2])
    code, err = run_cli(["layers", "--model", folder], capsys)
    assert_one_line_error(code, err, "diffusion_pytorch_model.safetensors", "corrupt", "re-download")


def test_config_with_other_channel_counts_than_the_weights(tiny_unet_dir, tmp_path, capsys):
    folder = _unet_copy(tiny_unet_dir, tmp_path)
    config = json.loads((folder / "config.json").read_text())
    config["block_out_channels"] = [16, 32]  # the weights were saved with (8, 16)
    (folder / "config.json").write_text(json.dumps(config))
    code, err = run_cli(["layers", "--model", folder], capsys)
    # conv_in maps 1 input channel to the first block's channels: 8 in the weights, 16 by the config
    assert_one_line_error(code, err, "do not match", "conv_in.weight", "[8, 1, 3, 3]", "[16, 1, 3, 3]", "config.json")


def test_pickled_bin_weights_that_run_code_are_refused(tiny_unet_dir, tmp_path, capsys):
    folder = tmp_path / "unet"
    folder.mkdir()
    shutil.copy(tiny_unet_dir / "config.json", folder)
    marker = tmp_path / "pwned"
    torch.save({"conv_in.weight": _touch_command(marker)}, folder / "diffusion_pytorch_model.bin")
    code, err = run_cli(["layers", "--model", folder], capsys)
    assert_one_line_error(code, err, "diffusion_pytorch_model.bin", "refusing")
    assert not marker.exists()


@pytest.mark.parametrize("spec", ["dit:{path}", "{path}"])
def test_pickled_pt_checkpoint_that_runs_code_is_refused(spec, tmp_path, capsys):
    marker = tmp_path / "pwned"
    path = tmp_path / "model.pt"
    torch.save({"pos_embed": _touch_command(marker)}, path)
    code, err = run_cli(["layers", "--model", spec.format(path=path)], capsys)
    assert_one_line_error(code, err, "model.pt")
    assert not marker.exists()


# -------------------------------------------------------------------------------------------- data


def test_empty_folder_dataset(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    code, err = run_cli(extract_argv("pixels", tmp_path / "empty", tmp_path / "f.h5"), capsys)
    assert_one_line_error(code, err, "no class sub-folders")
    assert_nothing_finished(tmp_path / "f.h5")


def test_npz_without_images(tmp_path, capsys):
    np.savez(tmp_path / "none.npz", x=np.zeros((0, 4, 4), np.uint8), y=np.zeros(0, np.int64))
    code, err = run_cli(extract_argv("pixels", tmp_path / "none.npz", tmp_path / "f.h5"), capsys)
    assert_one_line_error(code, err, "none.npz", "N > 0")
    assert_nothing_finished(tmp_path / "f.h5")


def test_images_directly_in_the_root(tmp_path, capsys):
    for i in range(4):
        write_image(tmp_path / "ds" / f"{i}.png", np.zeros((4, 4), np.uint8))
    code, err = run_cli(extract_argv("pixels", tmp_path / "ds", tmp_path / "f.h5"), capsys)
    assert_one_line_error(code, err, "no class sub-folders", "<class>")


def test_images_beside_the_class_folders(tmp_path, capsys):
    for name in ("a", "b"):
        for i in range(3):
            write_image(tmp_path / "ds" / name / f"{i}.png", np.zeros((4, 4), np.uint8))
    write_image(tmp_path / "ds" / "stray.png", np.zeros((4, 4), np.uint8))
    code, err = run_cli(extract_argv("pixels", tmp_path / "ds", tmp_path / "f.h5"), capsys)
    assert_one_line_error(code, err, "stray.png", "class")


def test_train_without_test(tmp_path, capsys):
    for name in ("a", "b"):
        write_image(tmp_path / "ds" / "train" / name / "0.png", np.zeros((4, 4), np.uint8))
    code, err = run_cli(extract_argv("pixels", tmp_path / "ds", tmp_path / "f.h5"), capsys)
    assert_one_line_error(code, err, "train", "partner is missing")


@pytest.mark.parametrize("damage", ["corrupt", "truncated"])
def test_damaged_image_in_a_folder_dataset(damage, tmp_path, capsys):
    for name in ("a", "b"):
        for i in range(3):
            write_image(tmp_path / "ds" / name / f"{i}.png", np.full((6, 6, 3), 40 * i, np.uint8))
    path = tmp_path / "ds" / "b" / "1.png"
    path.write_bytes(b"\x89PNG\r\n\x1a\nnot really" if damage == "corrupt" else path.read_bytes()[:50])
    code, err = run_cli(extract_argv("pixels", tmp_path / "ds", tmp_path / "f.h5"), capsys)
    assert_one_line_error(code, err, "1.png")


@pytest.fixture
def mnist_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """$PROBEKIT_DATA/mnist with four tiny IDX files; no other place is searched, nothing is downloaded."""
    monkeypatch.setenv("PROBEKIT_DATA", str(tmp_path / "data"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setattr(locations, "SYSTEM_DATA_DIRS", ())
    folder = tmp_path / "data" / "mnist"
    write_idx_folder(folder, np.random.default_rng(1))
    return folder


def _bad_magic(folder: Path) -> None:
    write_idx(folder / "train-images-idx3-ubyte.gz", np.zeros((7, 6), np.uint8))  # a 2-d file


def _short_payload(folder: Path) -> None:
    path = folder / "train-images-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(gzip.decompress(path.read_bytes())[:-30]))


def _wrong_dims(folder: Path) -> None:
    path = folder / "t10k-images-idx3-ubyte.gz"
    raw = bytearray(gzip.decompress(path.read_bytes()))
    raw[8:12] = (60).to_bytes(4, "big")  # header says 60 rows per image; the pixels are for 6
    path.write_bytes(gzip.compress(bytes(raw)))


def _not_gzip(folder: Path) -> None:
    (folder / "train-labels-idx1-ubyte.gz").write_bytes(b"this is not gzip data at all")


def _cut_gzip(folder: Path) -> None:
    path = folder / "t10k-labels-idx1-ubyte.gz"
    path.write_bytes(path.read_bytes()[:-12])


def _too_few_labels(folder: Path) -> None:
    write_idx(folder / "train-labels-idx1-ubyte.gz", np.zeros(5, np.uint8))  # 7 images


def _label_out_of_range(folder: Path) -> None:
    write_idx(folder / "t10k-labels-idx1-ubyte.gz", np.array([1, 2, 10, 3], np.uint8))


@pytest.mark.parametrize(
    "damage, fragments",
    [
        (_bad_magic, ["train-images-idx3-ubyte.gz", "magic"]),
        (_short_payload, ["train-images-idx3-ubyte.gz", "truncated", "re-download"]),
        (_wrong_dims, ["t10k-images-idx3-ubyte.gz", "truncated", "re-download"]),
        (_not_gzip, ["train-labels-idx1-ubyte.gz", "corrupt", "re-download"]),
        (_cut_gzip, ["t10k-labels-idx1-ubyte.gz", "re-download"]),
        (_too_few_labels, ["7 images", "5 labels"]),
        (_label_out_of_range, ["label 10"]),
    ],
)
def test_damaged_idx_files(damage, fragments, mnist_home, tmp_path, capsys):
    damage(mnist_home)
    code, err = run_cli(extract_argv("pixels", "mnist", tmp_path / "f.h5", "--no-download"), capsys)
    assert_one_line_error(code, err, *fragments)
    assert_nothing_finished(tmp_path / "f.h5")


@pytest.fixture
def cifar_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "cifar-10-batches-py"
    write_cifar10(folder, np.random.default_rng(2), per_batch=2, n_test=2)
    return folder


def _batch(labels: list[int], n_images: int) -> bytes:
    return python2_pickle({b"labels": labels, b"data": np.zeros((n_images, 3072), np.uint8)})


@pytest.mark.parametrize(
    "file_name, content, fragments",
    [
        ("data_batch_2", None, ["data_batch_2", "truncated or corrupt"]),
        ("data_batch_4", np.random.default_rng(6).bytes(2000), ["data_batch_4"]),
        ("test_batch", _batch([1], 2), ["test_batch", "2 images but 1"]),
        ("test_batch", _batch([3, 10], 2), ["test_batch", "label 10"]),
        ("data_batch_1", _batch([-1, 0], 2), ["data_batch_1", "label -1"]),
    ],
)
def test_damaged_cifar_batches(file_name, content, fragments, cifar_folder, tmp_path, capsys):
    path = cifar_folder / file_name
    path.write_bytes(path.read_bytes()[:700] if content is None else content)
    code, err = run_cli(extract_argv("pixels", cifar_folder, tmp_path / "f.h5"), capsys)
    assert_one_line_error(code, err, *fragments)
    assert_nothing_finished(tmp_path / "f.h5")


@pytest.mark.parametrize("file_name", ["data_batch_3", "batches.meta"])
def test_cifar_pickle_that_runs_code_is_refused(file_name, cifar_folder, tmp_path, capsys):
    import pickle

    marker = tmp_path / "pwned"
    # the payload is the first global the unpickler meets, so it is the one refused
    batch = {"label_names": _touch_command(marker), "labels": [0, 1]}
    (cifar_folder / file_name).write_bytes(pickle.dumps(batch, protocol=4))
    code, err = run_cli(extract_argv("pixels", cifar_folder, tmp_path / "f.h5"), capsys)
    assert_one_line_error(code, err, file_name, "refusing to unpickle", "system")
    assert not marker.exists()
    assert_nothing_finished(tmp_path / "f.h5")


def test_npz_labels_do_not_match_images(tmp_path, capsys):
    np.savez(tmp_path / "d.npz", x=np.zeros((6, 4, 4), np.uint8), y=[0, 1, 0, 1, 0])
    code, err = run_cli(extract_argv("pixels", tmp_path / "d.npz", tmp_path / "f.h5"), capsys)
    assert_one_line_error(code, err, "'y'", "6 images")


def test_npz_labels_outside_the_class_names(tmp_path, capsys):
    x = np.zeros((6, 4, 4), np.uint8)
    np.savez(tmp_path / "d.npz", x=x, y=[0, 1, 2, 0, 1, 2], class_names=np.array(["a", "b"]))
    code, err = run_cli(extract_argv("pixels", tmp_path / "d.npz", tmp_path / "f.h5"), capsys)
    assert_one_line_error(code, err, "class_names", "0..1")


# ------------------------------------------------------------------------------------------ output


def test_out_in_a_missing_folder(npz_data, tmp_path, capsys):
    out = tmp_path / "no" / "such" / "f.h5"
    code, err = run_cli(extract_argv("pixels", npz_data, out), capsys)
    assert_one_line_error(code, err, str(out.parent), "does not exist", "--out")
    assert not out.parent.exists()


def test_out_in_an_unwritable_folder_simulated(npz_data, tmp_path, monkeypatch, capsys):
    locked = tmp_path / "locked"
    locked.mkdir()
    real_file = h5py.File

    def file(name, mode="r", *args, **kwargs):
        if mode in ("w", "w-", "x", "a") and Path(name).parent == locked:
            raise PermissionError(errno.EACCES, "Unable to synchronously create file (errno = 13, 'Permission denied')")
        return real_file(name, mode, *args, **kwargs)

    monkeypatch.setattr(h5py, "File", file)
    code, err = run_cli(extract_argv("pixels", npz_data, locked / "f.h5"), capsys)
    assert_one_line_error(code, err, "f.h5", "permission denied", "--out")
    assert list(locked.iterdir()) == []


@pytest.mark.skipif(IS_ROOT, reason="root writes anywhere; the simulated test covers this")
def test_out_in_an_unwritable_folder(npz_data, tmp_path, capsys):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    try:
        code, err = run_cli(extract_argv("pixels", npz_data, locked / "f.h5"), capsys)
    finally:
        locked.chmod(0o755)
    assert_one_line_error(code, err, "permission denied", "--out")
    assert list(locked.iterdir()) == []


def _fail_after(calls: int, monkeypatch: pytest.MonkeyPatch, owner: object, name: str) -> None:
    """Make ``owner.name`` raise ENOSPC from its ``calls+1``-th call on."""
    real = getattr(owner, name)
    count = [0]

    def failing(*args, **kwargs):
        count[0] += 1
        if count[0] > calls:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(*args, **kwargs)

    monkeypatch.setattr(owner, name, failing)


def test_disk_full_after_the_first_batch(npz_data, tmp_path, monkeypatch, capsys):
    _fail_after(1, monkeypatch, cache.CacheWriter, "_write")
    out = tmp_path / "f.h5"
    code, err = run_cli(extract_argv("pixels", npz_data, out, "--batch-size", 4), capsys)
    # pixels of 18 8x8 images as float32: 18 * 64 * 4 bytes
    assert_one_line_error(code, err, str(out), "disk full", f"{18 * 64 * 4 / 1024:.1f} KiB", "free", "--out")
    assert out.exists(), "the partial file is kept so that the run can resume"
    assert_nothing_finished(out)
    with FeatureCache(out) as written:
        assert written.progress("train") == (4, 12)


def test_disk_full_inside_h5py(npz_data, tmp_path, monkeypatch, capsys):
    # one batch writes its features (one layer for pixels), then its done flags: two writes
    _fail_after(2, monkeypatch, h5py.Dataset, "__setitem__")
    out = tmp_path / "f.h5"
    code, err = run_cli(extract_argv("pixels", npz_data, out, "--batch-size", 4), capsys)
    monkeypatch.undo()
    assert_one_line_error(code, err, "disk full", "--out")
    assert_nothing_finished(out)


def test_disk_full_while_creating_the_cache(npz_data, tmp_path, monkeypatch, capsys):
    _fail_after(0, monkeypatch, cache.CacheWriter, "_create")
    out = tmp_path / "f.h5"
    code, err = run_cli(extract_argv("pixels", npz_data, out), capsys)
    assert_one_line_error(code, err, "disk full", "--out")
    assert not out.exists()


_DISK_FULL_DRIVER = """
import errno, os, sys
from probekit.features import cache
from probekit.cli import main
real, count = cache.CacheWriter._write, [0]
def failing(self, *args):
    count[0] += 1
    if count[0] > 1:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    return real(self, *args)
cache.CacheWriter._write = failing
sys.exit(main(sys.argv[1:]))
"""


def _real_cli(
    tmp_path: Path,
    argv: list[object],
    driver: str = "from probekit.cli import main; import sys; sys.exit(main(sys.argv[1:]))",
) -> subprocess.CompletedProcess:
    """The command in a fresh interpreter, so that stderr holds everything a user would see."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONWARNINGS": "ignore"}
    return subprocess.run(
        [sys.executable, "-c", driver, *map(str, argv)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        timeout=300,
    )


@pytest.mark.subprocess
def test_real_process_prints_one_line(tmp_path):
    done = _real_cli(tmp_path, ["layers", "--model", tmp_path / "nope"])
    assert_one_line_error(done.returncode, done.stderr, "not found")
    assert done.stdout == ""


@pytest.mark.subprocess
@pytest.mark.slow
def test_real_process_disk_full_prints_one_line(npz_data, tmp_path):
    done = _real_cli(
        tmp_path, extract_argv("pixels", npz_data, tmp_path / "f.h5", "--batch-size", 4), _DISK_FULL_DRIVER
    )
    assert_one_line_error(done.returncode, done.stderr, "disk full")


# ---------------------------------------------------------------------------- layers and timesteps


def test_unknown_layer_gives_close_matches(tiny_unet_dir, npz_data, tmp_path, capsys):
    code, err = run_cli(extract_argv(tiny_unet_dir, npz_data, tmp_path / "f.h5", "--layers", "mid_blok"), capsys)
    assert_one_line_error(code, err, "unknown layer 'mid_blok'", "close matches", "mid_block")
    assert_nothing_finished(tmp_path / "f.h5")


@pytest.mark.parametrize("timesteps", ["--timesteps=-5", "--timesteps=3,200", "--timesteps=5000"])
def test_timesteps_out_of_range(timesteps, tiny_unet_dir, npz_data, tmp_path, capsys):
    # the tiny UNet's scheduler config has 200 steps: indices 0..199
    code, err = run_cli(extract_argv(tiny_unet_dir, npz_data, tmp_path / "f.h5", timesteps), capsys)
    assert_one_line_error(code, err, "out of range", "0..199")
    assert_nothing_finished(tmp_path / "f.h5")


@pytest.mark.parametrize("value", ["1.5", "5,x", "-5,10"])
def test_timesteps_that_are_not_integers_are_refused(value, npz_data, tmp_path, capsys):
    code, err = run_cli(extract_argv("pixels", npz_data, tmp_path / "f.h5", "--timesteps", value), capsys)
    assert code == 2 and "Traceback" not in err
    assert "--timesteps" in err.strip().splitlines()[-1]
    assert_nothing_finished(tmp_path / "f.h5")


@pytest.mark.parametrize("value", ["1.5", "-5,10"])
def test_timesteps_that_are_not_integers_give_one_line(value, npz_data, tmp_path, capsys):
    code, err = run_cli(extract_argv("pixels", npz_data, tmp_path / "f.h5", "--timesteps", value), capsys)
    assert_one_line_error(code, err, "--timesteps")


def test_hf_dataset_with_a_missing_column(tmp_path, capsys):
    datasets = pytest.importorskip("datasets")
    table = datasets.Dataset.from_dict(
        {"label": [0, 1]}, features=datasets.Features({"label": datasets.ClassLabel(names=["a", "b"])})
    )
    datasets.DatasetDict(train=table, test=table).save_to_disk(str(tmp_path / "hfds"))
    capsys.readouterr()  # the progress bars of save_to_disk
    argv = extract_argv("pixels", f"hf-disk:{tmp_path / 'hfds'}", tmp_path / "f.h5", "--image-column", "photo")
    code, err = run_cli(argv, capsys)
    assert_one_line_error(code, err, "no column 'photo'", "--image-column")
    assert not (tmp_path / "f.h5").exists()


# ---------------------------------------------------------------------------- model folders and compare


@pytest.mark.parametrize("prefix", ["sd:", "hf-vision:"])
def test_missing_model_folder_is_folder_not_found_without_hub_words(prefix, tmp_path, capsys):
    missing = tmp_path / "no-such-pipeline"
    code, err = run_cli(["layers", "--model", f"{prefix}{missing}"], capsys)
    line = assert_one_line_error(code, err, "folder", str(missing), "not found")
    assert "hub" not in line.split("not found")[0] and "connect" not in line and "repo_type" not in line


def test_sd_on_a_pipelines_unet_folder_names_the_folder_above(tmp_path, capsys):
    pipe = tmp_path / "pipe"
    (pipe / "unet").mkdir(parents=True)
    (pipe / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionPipeline"}))
    (pipe / "unet" / "config.json").write_text(json.dumps({"_class_name": "UNet2DConditionModel"}))
    code, err = run_cli(["layers", "--model", f"sd:{pipe / 'unet'}"], capsys)
    assert_one_line_error(code, err, "unet/ folder of a pipeline", "UNet2DConditionModel", f"sd:{pipe}")


def test_sd_on_a_folder_of_another_kind_names_what_it_holds(tiny_unet_dir, capsys):
    code, err = run_cli(["layers", "--model", f"sd:{tiny_unet_dir}"], capsys)
    assert_one_line_error(code, err, str(tiny_unet_dir), "UNet2DModel", "not a diffusers pipeline", "model_index.json")


def test_hf_vision_on_a_folder_without_config_names_what_it_holds(tmp_path, capsys):
    (tmp_path / "weights.bin").write_bytes(b"")
    code, err = run_cli(["layers", "--model", f"hf-vision:{tmp_path}"], capsys)
    assert_one_line_error(code, err, str(tmp_path), "weights.bin", "config.json")


def _results_csv(path: Path, probe: str, metric: str = "top1") -> None:
    from probekit.evaluate.results import COLUMNS

    rows = [
        dict(
            model="m",
            dataset="d",
            t=0,
            sigma=0.0,
            logsnr=float("inf"),
            alpha_bar=1.0,
            layer="l",
            stage="block",
            depth=0,
            probe=probe,
            params="",
            metric=metric,
            split=split,
            value=0.5,
            ci_low=float("nan"),
            ci_high=float("nan"),
            n_train=10,
            n_eval=10,
        )
        for split in ("val", "test")
    ]
    import pandas as pd

    pd.DataFrame(rows, columns=list(COLUMNS)).to_csv(path, index=False)


def test_compare_on_a_similarity_table_names_the_file(tmp_path, capsys):
    _results_csv(tmp_path / "a.csv", "linear")
    _results_csv(tmp_path / "sim.csv", "similarity", metric="cka")
    code, err = run_cli(["compare", "--results", tmp_path / "a.csv", tmp_path / "sim.csv"], capsys)
    assert_one_line_error(code, err, str(tmp_path / "sim.csv"), "no 'top1'", "cka", "probekit probe")


def test_compare_suggests_probe_b_when_only_a_has_the_probe(tmp_path, capsys):
    _results_csv(tmp_path / "a.csv", "linear")
    _results_csv(tmp_path / "b.csv", "knn")
    code, err = run_cli(["compare", "--results", tmp_path / "a.csv", tmp_path / "b.csv"], capsys)
    assert_one_line_error(code, err, str(tmp_path / "b.csv"), "--probe-b knn")
