"""Activation kinds, Flux and PixArt end to end through the command line, in subprocesses."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from probekit.features.cache import FeatureCache
from tests.models.sd.test_flux_pixart import build_flux, build_pixart


def _probekit(*args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "probekit", *args], capture_output=True, text=True, timeout=600, check=False
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.fixture(scope="module")
def rgb_npz(tmp_path_factory) -> str:
    rng = np.random.default_rng(1)
    path = tmp_path_factory.mktemp("data") / "rgb.npz"
    y, y_test = np.arange(24) % 2, np.arange(12) % 2
    x = (rng.integers(0, 100, size=(24, 16, 16, 3)) + 120 * y[:, None, None, None]).astype(np.uint8)
    x_test = (rng.integers(0, 100, size=(12, 16, 16, 3)) + 120 * y_test[:, None, None, None]).astype(np.uint8)
    np.savez(path, x=x, y=y, x_test=x_test, y_test=y_test, class_names=np.array(["dark", "bright"]))
    return str(path)


@pytest.mark.slow
@pytest.mark.subprocess
@pytest.mark.parametrize("family", ["flux", "pixart"])
def test_kinds_of_flux_and_pixart_extract_probe_report(family, rgb_npz, tmp_path):
    root = tmp_path / family
    if family == "flux":
        build_flux(root, guidance=True)
        model, layers = f"sd:{root}?size=16", "*:q"
    else:
        build_pixart(root, "PixArtSigmaPipeline")
        model, layers = f"sd:{root}", "*:q,*:shift_msa,transformer_blocks.1"
    listing = _probekit("layers", "--kinds", "--model", model)
    assert "activation kinds" in listing and ":q " in listing
    cache, results = tmp_path / "f.h5", tmp_path / "r.csv"
    _probekit(
        "extract", "--model", model, "--data", rgb_npz, "--timesteps", "100,600", "--layers", layers,
        "--out", str(cache), "--quiet",
    )  # fmt: skip
    with FeatureCache(cache) as c:
        names = [layer.name for layer in c.layers]
        assert c.complete and c.attrs["framework"] == family
    assert names and all(":q" in n or ":shift_msa" in n or n == "transformer_blocks.1" for n in names)
    assert sum(n.endswith(":q") for n in names) == (3 if family == "flux" else 4)  # flux: 1 double + 2 single
    _probekit("probe", "--cache", str(cache), "--probes", "knn", "--out", str(results), "--quiet")
    table = pd.read_csv(results)
    assert set(table["layer"]) == set(names)
    _probekit("report", "--results", str(results), "--cache", str(cache), "--out", str(tmp_path / "r.html"), "--quiet")
    assert (tmp_path / "r.html").stat().st_size > 1000
