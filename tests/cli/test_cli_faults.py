"""Faults built by hand against a real `probekit extract` process: a full disk, a file-size limit,
two writers on one file, a damaged HDF5 file, and a model whose features overflow to NaN.
"""

import os
import resource
import shutil
import signal
import subprocess
import sys
import time

import h5py
import numpy as np
import pytest
from safetensors.torch import load_file, save_file

from probekit.cli import main
from probekit.core.errors import ProbekitError
from probekit.features.cache import FeatureCache
from probekit.features.output_lock import exclusive_output
from tests.budgets import PROCESS_BUDGET_S
from tests.cli.test_cli_interrupt import _features, _written

pytestmark = [pytest.mark.subprocess]

PYTHON = [sys.executable, "-m", "probekit"]


@pytest.fixture(scope="module")
def npz_160(tmp_path_factory) -> str:
    rng = np.random.default_rng(1)
    path = tmp_path_factory.mktemp("data") / "toy160.npz"
    np.savez(
        path,
        x=rng.integers(0, 256, size=(120, 12, 12), dtype=np.uint8),
        y=np.arange(120) % 4,
        x_test=rng.integers(0, 256, size=(40, 12, 12), dtype=np.uint8),
        y_test=np.arange(40) % 4,
    )
    return str(path)


def _argv(model, data, out, batch=2) -> list[str]:
    return [
        "extract",
        "--model",
        str(model),
        "--data",
        data,
        "--timesteps",
        "2,40,120",
        "--batch-size",
        str(batch),
        "--layers",
        "0,mid_block,-1",
        "--quiet",
        "--out",
        str(out),
    ]


def _run(argv, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([*PYTHON, *argv], capture_output=True, text=True, timeout=300, **kwargs)


def _error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("probekit:")]


def _killed_part_way(argv, out) -> int:
    """Start an extraction, SIGKILL it once some (not all) samples are on disk; the samples written."""
    proc = subprocess.Popen([*PYTHON, *argv], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300  # generous: a loaded machine starts slowly
    while _written(out) < 12 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.kill()
    proc.wait(timeout=PROCESS_BUDGET_S)
    written = _written(out)
    assert 0 < written < 160, "the process must be stopped part-way"
    return written


def _assert_identical(expected_path, path) -> None:
    expected, got = _features(expected_path), _features(path)
    assert expected.keys() == got.keys()
    for key in expected:
        np.testing.assert_array_equal(expected[key], got[key])
    with FeatureCache(path) as cache:
        assert cache.complete


@pytest.fixture(scope="module")
def uninterrupted(tiny_unet_dir, npz_160, tmp_path_factory):
    whole = tmp_path_factory.mktemp("whole") / "whole.h5"
    assert main(_argv(tiny_unet_dir, npz_160, whole)) == 0
    return whole


def _limited(kilobytes: int):
    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (kilobytes * 1024, resource.RLIM_INFINITY))
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # past the limit write() fails with EFBIG

    return limit


def _feature_bytes(path) -> int:
    with FeatureCache(path) as cache:
        return sum(cache.file[s]["feats"][l.name].size * 4 for s in cache.splits for l in cache.layers)


@pytest.mark.slow
def test_file_size_limit_below_the_cache_refuses_and_the_cache_resumes(tiny_unet_dir, npz_160, uninterrupted, tmp_path):
    part = tmp_path / "part.h5"
    argv = _argv(tiny_unet_dir, npz_160, part)
    written = _killed_part_way(argv, part)
    limit_kib = _feature_bytes(uninterrupted) // 1024 // 2
    limited = _run(argv, preexec_fn=_limited(limit_kib))
    assert limited.returncode == 2, limited.stderr
    assert "Traceback" not in limited.stderr
    (line,) = _error_lines(limited.stderr)
    assert "file size limit" in line and str(part) in line and "run the same command again" in line
    assert _written(part) == written  # untouched, still unfinished
    with FeatureCache(part) as cache:
        assert not cache.complete
    assert main(argv) == 0  # resumed with the limit lifted
    _assert_identical(uninterrupted, part)


@pytest.mark.slow
def test_write_failing_mid_extraction_keeps_the_cache_resumable(tiny_unet_dir, npz_160, uninterrupted, tmp_path):
    part = tmp_path / "part.h5"
    argv = _argv(tiny_unet_dir, npz_160, part)
    _killed_part_way(argv, part)
    # Above the feature bytes (so the up-front check passes) but below the file's end: writes fail part-way.
    limit_kib = (_feature_bytes(uninterrupted) + os.path.getsize(uninterrupted)) // 2 // 1024
    limited = _run(argv, preexec_fn=_limited(limit_kib))
    assert limited.returncode != 0
    lines = _error_lines(limited.stderr)
    assert lines and "file size limit reached while writing" in lines[-1] and str(part) in lines[-1]
    with FeatureCache(part) as cache:
        assert not cache.complete
    assert main(argv) == 0  # resumed with the limit lifted
    _assert_identical(uninterrupted, part)


def _can_mount_tmpfs(where) -> bool:
    if shutil.which("unshare") is None:
        return False
    probe = subprocess.run(
        ["unshare", "-Urm", "sh", "-c", f"mount -t tmpfs -o size=64k tmpfs {where}"], capture_output=True
    )
    return probe.returncode == 0


@pytest.mark.slow
def test_full_disk_is_found_at_creation_in_one_line(tiny_unet_dir, npz_160, uninterrupted, tmp_path):
    """A real ENOSPC on a 64 KiB tmpfs, smaller than the cache: one line, no half-written file left."""
    small = tmp_path / "small"
    small.mkdir()
    if not _can_mount_tmpfs(small):
        pytest.skip("no user namespace to mount a size-limited tmpfs in")
    out = small / "c.h5"
    script = (
        f"mount -t tmpfs -o size=64k tmpfs {small} && {sys.executable} -m probekit "
        + " ".join(_argv(tiny_unet_dir, npz_160, out))
        + f'; rc=$?; echo "left: $(ls -A {small})"; exit $rc'
    )
    full = subprocess.run(
        ["unshare", "-Urm", "sh", "-c", script],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    assert full.returncode == 2, full.stderr
    assert "Traceback" not in full.stderr
    (line,) = _error_lines(full.stderr)
    assert line.startswith(f"probekit: error: disk full while creating {out}") and "KiB" in line
    assert full.stdout.splitlines()[-1].strip() == "left:"  # the file system holds nothing afterwards
    # with space, the same command writes the same features
    spacious = tmp_path / "c.h5"
    assert main(_argv(tiny_unet_dir, npz_160, spacious)) == 0
    _assert_identical(uninterrupted, spacious)


@pytest.mark.slow
def test_second_writer_refuses_at_once_and_neither_corrupts(tiny_unet_dir, npz_160, uninterrupted, tmp_path, capsys):
    out = tmp_path / "two.h5"
    argv = _argv(tiny_unet_dir, npz_160, out)
    first = subprocess.Popen([*PYTHON, *argv], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300  # generous: a loaded machine starts slowly
    while _written(out) < 4 and first.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert first.poll() is None, "the first extraction must still be running"
    for extra in ([], ["--overwrite"]):
        capsys.readouterr()
        started = time.monotonic()
        assert main(argv + extra) == 2  # a second process's view: the lock belongs to `first`
        refused_in = time.monotonic() - started
        (line,) = _error_lines(capsys.readouterr().err)
        assert f"another probekit extract is writing {out}" in line
        assert refused_in < 5, "refused before loading the model"
    assert first.wait(timeout=1200) == 0, first.stderr.read()  # a loaded machine can be slow
    _assert_identical(uninterrupted, out)


def test_lock_of_a_killed_process_does_not_outlive_it(tmp_path):
    out = tmp_path / "x.h5"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from probekit.features.output_lock import exclusive_output\n"
            f"with exclusive_output({str(out)!r}):\n    print('held', flush=True); time.sleep(600)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout.readline().strip() == "held"
    with pytest.raises(ProbekitError, match="another probekit extract is writing"):
        with exclusive_output(out):
            pass
    holder.kill()
    holder.wait(timeout=PROCESS_BUDGET_S)
    with exclusive_output(out):  # taken at once: the kernel dropped the dead holder's lock
        pass


def _damaged(path, how: str) -> None:
    size = os.path.getsize(path)
    with open(path, "r+b") as f:
        if how == "truncated":
            f.truncate(size // 2)
        elif how == "header-overwritten":
            f.write(b"\0" * 2048)
        elif how == "tail-overwritten":
            f.seek(size - 4096)
            f.write(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
        elif how == "text":
            f.truncate(0)
            f.write(b"not a cache\n")


@pytest.mark.parametrize("how", ["truncated", "header-overwritten", "tail-overwritten", "text"])
def test_damaged_cache_is_one_line_naming_the_file(uninterrupted, tiny_unet_dir, npz_160, tmp_path, capsys, how):
    path = tmp_path / "damaged.h5"
    shutil.copy(uninterrupted, path)
    _damaged(path, how)
    for argv in (
        ["info", str(path)],
        ["probe", "--cache", str(path), "--probes", "knn", "--out", str(tmp_path / "r.csv")],
        _argv(tiny_unet_dir, npz_160, path),
    ):
        capsys.readouterr()
        code = main(argv)
        err = capsys.readouterr().err
        lines = _error_lines(err)
        assert code == 2 and len(lines) == 1 and str(path) in lines[0], (argv[0], err)
        assert "Traceback" not in err
    assert not (tmp_path / "r.csv").exists()


@pytest.fixture(scope="module")
def overflowing_unet(tiny_unet_dir, tmp_path_factory):
    """The tiny UNet with one mid-block weight set to inf: every later layer's features are NaN."""
    path = tmp_path_factory.mktemp("nan-unet")
    shutil.copytree(tiny_unet_dir, path, dirs_exist_ok=True)
    weights = load_file(path / "diffusion_pytorch_model.safetensors")
    name = "mid_block.resnets.0.conv1.weight"
    weights[name] = weights[name].clone()
    weights[name].view(-1)[0] = float("inf")
    save_file(weights, path / "diffusion_pytorch_model.safetensors")
    return path


@pytest.mark.slow
def test_non_finite_features_are_counted_warned_and_not_probed(overflowing_unet, npz_160, tmp_path, caplog):
    out = tmp_path / "nan.h5"
    with caplog.at_level("WARNING"):
        assert main(_argv(overflowing_unet, npz_160, out, batch=40)) == 0
    assert "non-finite features (NaN/inf values) in" in caplog.text
    caplog.clear()
    with h5py.File(out, "r") as f:  # the count, recomputed from the stored features
        expected = {}
        for split in ("train", "test"):
            for layer in f[split]["feats"]:
                values = f[split]["feats"][layer][:]
                for ti, t in enumerate(f["grid"]["t"][:]):
                    n = int((~np.isfinite(values[ti])).sum())
                    if n:
                        expected[(int(t), layer)] = expected.get((int(t), layer), 0) + n
    assert expected, "the poisoned weight must produce NaN features"
    with FeatureCache(out) as cache:
        assert cache.nonfinite() == expected
        assert "non-finite features (NaN/inf) in" in cache.summary()
    with caplog.at_level("WARNING"):
        assert main(["probe", "--cache", str(out), "--probes", "knn", "--out", str(tmp_path / "r.csv")]) == 0
    err = caplog.text
    import pandas as pd

    probed = set(zip(pd.read_csv(tmp_path / "r.csv")["t"], pd.read_csv(tmp_path / "r.csv")["layer"]))
    assert probed and not probed & set(expected)
    for t, layer in expected:
        assert f"cell t={t} {layer} skipped: NaN/inf" in err
