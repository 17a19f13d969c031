"""A real `probekit extract` process killed mid-run (SIGKILL, SIGTERM, SIGINT) resumes to the uninterrupted result."""

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from probekit.cli import main
from probekit.features.cache import FeatureCache
from tests.budgets import PROCESS_BUDGET_S

pytestmark = [pytest.mark.subprocess, pytest.mark.slow]


@pytest.fixture(scope="module")
def npz_500(tmp_path_factory) -> str:
    rng = np.random.default_rng(1)
    path = tmp_path_factory.mktemp("data") / "toy500.npz"
    y, y_test = np.arange(400) % 4, np.arange(100) % 4
    np.savez(
        path,
        x=rng.integers(0, 256, size=(400, 12, 12), dtype=np.uint8),
        y=y,
        x_test=rng.integers(0, 256, size=(100, 12, 12), dtype=np.uint8),
        y_test=y_test,
    )
    return str(path)


def _argv(model: str, data: str, out: str) -> list[str]:
    return [
        "extract",
        "--model",
        model,
        "--data",
        data,
        "--timesteps",
        "2,40,120",
        "--batch-size",
        "2",
        "--layers",
        "0,mid_block,-1",
        "--quiet",
        "--out",
        out,
    ]


def _written(path) -> int:
    try:
        with FeatureCache(path) as cache:
            return sum(cache.progress(split)[0] for split in cache.splits)
    except Exception:  # noqa: BLE001 -- the file may not exist yet
        return 0


def _default_interrupt() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _run_and_signal(argv: list[str], out, sig: int) -> subprocess.CompletedProcess:
    """Start the CLI in a subprocess, send ``sig`` once some (not all) samples are on disk."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "probekit", *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # a suite started as a background job of a shell without job control inherits an ignored
        # SIGINT, which Python keeps ignoring: the child gets the default a terminal would give it
        preexec_fn=_default_interrupt,
    )
    deadline = time.monotonic() + 300  # generous: a loaded machine starts slowly
    while _written(out) < 20 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.send_signal(sig)
    stdout, stderr = proc.communicate(timeout=PROCESS_BUDGET_S)
    return subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)


def _features(path) -> dict:
    with FeatureCache(path) as cache:
        return {(s, l.name): cache.file[s]["feats"][l.name][:] for s in cache.splits for l in cache.layers}


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM, signal.SIGINT])
def test_killed_extraction_resumes_to_identical_cache(sig, tiny_unet_dir, npz_500, tmp_path, capsys):
    whole, part = tmp_path / "whole.h5", tmp_path / "part.h5"
    assert main(_argv(str(tiny_unet_dir), npz_500, str(whole))) == 0

    killed = _run_and_signal(_argv(str(tiny_unet_dir), npz_500, str(part)), part, sig)
    assert killed.returncode == (-signal.SIGKILL if sig == signal.SIGKILL else 130), killed.stderr
    if sig != signal.SIGKILL:
        lines = [line for line in killed.stderr.splitlines() if line.strip()]
        assert lines[-1].startswith("probekit: interrupted") and "run the same command again" in lines[-1]
    written = _written(part)
    assert 0 < written < 500, "the process must be stopped part-way"

    capsys.readouterr()
    assert main(["probe", "--cache", str(part), "--out", str(tmp_path / "r.csv")]) == 2
    assert "unfinished" in capsys.readouterr().err
    assert not (tmp_path / "r.csv").exists()

    assert main(_argv(str(tiny_unet_dir), npz_500, str(part))) == 0
    expected, resumed = _features(whole), _features(part)
    assert expected.keys() == resumed.keys()
    for key in expected:
        np.testing.assert_array_equal(expected[key], resumed[key])
    with FeatureCache(part) as cache:
        assert cache.complete


def test_killed_at_many_moments_resumes_to_identical_cache(tiny_unet_dir, npz_500, tmp_path):
    """SIGKILL the same extraction again and again, at moments spread over its run (before the
    file exists, while it is created, between and inside block writes); every restart resumes,
    and the last one finishes a cache equal to an uninterrupted run, byte for byte.
    """
    whole, part = tmp_path / "whole.h5", tmp_path / "part.h5"
    # A small write buffer: blocks of a few dozen samples, so that kills land between and inside blocks.
    small = ["--write-buffer", "12K", "--train-limit", "120", "--test-limit", "40"]
    # Every run with the same thread count: kernels may round differently with another count.
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run(
        [sys.executable, "-m", "probekit", *_argv(str(tiny_unet_dir), npz_500, str(whole)), *small],
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
    )
    with FeatureCache(whole) as cache:
        rows = cache.file["train"]["feats"][cache.layers[0].name].chunks[2]
    assert 4 < rows < 40, "the buffer must make several blocks per split"
    rng = np.random.default_rng(0)
    progress = []
    for threshold in [0, 1, 30, 70, 125]:
        proc = subprocess.Popen(
            [sys.executable, "-m", "probekit", *_argv(str(tiny_unet_dir), npz_500, str(part)), *small],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=env,
        )
        deadline = time.monotonic() + 300  # generous: a loaded machine starts slowly
        if threshold == 0:  # at start-up: imports, model load, or while the file is being created
            time.sleep(float(rng.uniform(0.5, 5.0)))
        while threshold and _written(part) < threshold and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.005)
        time.sleep(float(rng.uniform(0, 0.02)))  # anywhere inside the next block, not just at its edge
        proc.kill()
        proc.wait(timeout=PROCESS_BUDGET_S)
        progress.append(_written(part))
    assert progress[-1] < 160, f"the last kill must interrupt the run (samples written after each kill: {progress})"
    assert any(0 < p < 160 for p in progress), progress
    subprocess.run(
        [sys.executable, "-m", "probekit", *_argv(str(tiny_unet_dir), npz_500, str(part)), *small],
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
    )
    expected, resumed = _features(whole), _features(part)
    assert expected.keys() == resumed.keys()
    for key in expected:
        np.testing.assert_array_equal(expected[key], resumed[key])
    with FeatureCache(part) as cache:
        assert cache.complete
        assert all(cache.progress(split)[0] == cache.progress(split)[1] for split in cache.splits)
