"""`probekit probe --max-memory` measured, not trusted: peak RSS of a real process, and streamed cells."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from probekit.core.schedule import DDPMSchedule
from probekit.core.types import LayerInfo
from probekit.features.cache import CacheLayout, CacheWriter, SplitLabels
from probekit.probes.run import ProbeRunConfig, probe_cache

pytestmark = [pytest.mark.subprocess, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
# The CLI in a fresh interpreter that prints its own peak resident set (VmHWM) when it is done.
_DRIVER = """
import sys
from probekit.cli import main
code = main(sys.argv[1:])
hwm = [line for line in open("/proc/self/status") if line.startswith("VmHWM:")][0]
print("PEAK", int(hwm.split()[1]) * 1024)
sys.exit(code)
"""


def synthetic_cache(
    path: Path,
    n_train: int,
    n_test: int,
    widths: list[int],
    timesteps=(0, 10),
    classes: int = 10,
    separation: float = 0.12,
    seed: int = 0,
) -> Path:
    """A complete cache of noisy class centres (hard enough that probes make mistakes)."""
    rng = np.random.default_rng(seed)
    layers = [
        LayerInfo(name=f"layer{i}", stage="down", depth=i, channels=w, resolution="1x1") for i, w in enumerate(widths)
    ]
    labels = {"train": rng.integers(0, classes, n_train), "test": rng.integers(0, classes, n_test)}
    layout = CacheLayout(
        attrs={"model_id": "synthetic", "model_sha256": "0", "dataset": "synthetic", "seed": 0, "pooling": "gap"},
        grid=DDPMSchedule().points(list(timesteps)),
        layers=layers,
        widths={l.name: w for l, w in zip(layers, widths)},
        splits={s: SplitLabels(y, np.arange(len(y))) for s, y in labels.items()},
        class_names=[f"c{i}" for i in range(classes)],
        draws=1,
    )
    centres = {w: rng.standard_normal((classes, w)).astype(np.float32) for w in set(widths)}
    writer = CacheWriter(path, layout)
    for split, y in labels.items():
        for start in range(0, len(y), 1000):
            part = y[start : start + 1000]
            writer.write_batch(
                split,
                start,
                {
                    layer.name: separation * centres[layer.channels][part][None, None]
                    + rng.standard_normal((len(timesteps), 1, len(part), layer.channels), dtype=np.float32)
                    for layer in layers
                },
            )
    writer.close(complete=True)
    return path


def _peak_rss(tmp_path: Path, argv: list[str]) -> tuple[int, str]:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    done = subprocess.run(
        [sys.executable, "-c", _DRIVER, *argv], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=900
    )
    assert done.returncode == 0, done.stderr[-3000:]
    peak = [line for line in done.stdout.splitlines() if line.startswith("PEAK ")]
    return int(peak[0].split()[1]), done.stdout + done.stderr


def test_probe_keeps_max_memory_within_the_import_footprint(tmp_path):
    # 4 cells of 9000 x 384 float32: 53 MiB of features, about 2.7x that to probe them all in memory
    big = synthetic_cache(tmp_path / "big.h5", 7000, 2000, [384, 384])
    # The same cells with few rows: what the process holds besides the rows' features (interpreter,
    # libraries, the kernels and solver state of 384-wide cells), measured on this machine in this
    # run, so the margin follows the CPU kind (oneDNN and BLAS buffers differ between them).
    tiny = synthetic_cache(tmp_path / "tiny.h5", 120, 40, [384, 384])
    footprint, _ = _peak_rss(tmp_path, ["probe", "--cache", str(tiny), "--out", "tiny.csv", "--quiet"])
    unbounded, _ = _peak_rss(
        tmp_path, ["probe", "--cache", str(big), "--out", "all.csv", "--quiet", "--max-memory", "8G"]
    )
    budget = 64 << 20
    peak, _ = _peak_rss(tmp_path, ["probe", "--cache", str(big), "--out", "bounded.csv", "--max-memory", "64M"])
    print(
        f"footprint {footprint / 2**20:.0f} MiB, unbounded {unbounded / 2**20:.0f} MiB, bounded {peak / 2**20:.0f} MiB"
    )
    assert unbounded - footprint > budget, "the cache must need more than the budget, or the test shows nothing"
    assert peak <= footprint + budget, (
        f"peak {peak / 2**20:.0f} MiB > footprint {footprint / 2**20:.0f} MiB + budget {budget / 2**20:.0f} MiB "
        f"(unbounded: {unbounded / 2**20:.0f} MiB)"
    )
    # the same results either way
    a, b = pd.read_csv(tmp_path / "all.csv"), pd.read_csv(tmp_path / "bounded.csv")
    pd.testing.assert_frame_equal(a, b)


@pytest.mark.parametrize("probe", ["linear", "knn"])
def test_a_streamed_cell_keeps_max_memory(tmp_path, probe):
    # one 40 000 x 512 cell: 70 MiB of fit rows, 1.1x the budget
    big = synthetic_cache(tmp_path / "big.h5", 40_000, 4_000, [512], timesteps=(0,))
    tiny = synthetic_cache(tmp_path / "tiny.h5", 120, 40, [512], timesteps=(0,))
    argv = ["probe", "--probes", probe, "--cache"]
    footprint, _ = _peak_rss(tmp_path, [*argv, str(tiny), "--out", "tiny.csv", "--quiet"])
    budget = 64 << 20
    peak, log = _peak_rss(tmp_path, [*argv, str(big), "--out", "streamed.csv", "--max-memory", "64M"])
    assert "1 cells exceed --max-memory: streaming" in log
    assert peak <= footprint + budget, (
        f"peak {peak / 2**20:.0f} MiB > footprint {footprint / 2**20:.0f} MiB + budget {budget / 2**20:.0f} MiB"
    )


def test_a_cell_streamed_from_disk_predicts_as_in_memory(tmp_path):
    path = synthetic_cache(tmp_path / "c.h5", 6000, 800, [48, 96], classes=6, separation=0.25)
    config = ProbeRunConfig(
        probes=("linear", "knn"), settings=ProbeRunConfig().settings.__class__(linear_C=(0.1, 1.0), knn_k=(5, 20))
    )
    memory = probe_cache(path, config, progress=False)
    streamed = probe_cache(path, config, progress=False, max_memory=30 << 20)  # every cell needs over 40 MiB in memory
    acc = memory.table[(memory.table.metric == "top1") & (memory.table.split == "test")]["value"]
    assert 0.3 < acc.min() and acc.max() < 0.99, "the problem must be hard enough for mistakes to be possible"
    np.testing.assert_array_equal(streamed.predictions.predictions, memory.predictions.predictions)
    pd.testing.assert_frame_equal(streamed.table, memory.table)


def test_label_budgets_streamed_from_disk_give_the_in_memory_table(tmp_path, caplog):
    import logging

    from probekit.probes.label_budget import probe_label_budgets

    path = synthetic_cache(tmp_path / "c.h5", 6000, 800, [48, 96], classes=6, separation=0.25)
    config = ProbeRunConfig(probes=("linear", "knn"))
    memory = probe_label_budgets(path, config, [20, None], draws=2, progress=False)
    with caplog.at_level(logging.INFO, logger="probekit.probes.run"):
        streamed = probe_label_budgets(path, config, [20, None], draws=2, progress=False, max_memory=30 << 20)
    assert "cells exceed --max-memory" in caplog.text
    key = ["labels_per_class", "budget_draw", "t", "layer", "probe", "split", "metric"]
    merged = memory.merge(streamed, on=key, suffixes=("_memory", "_streamed"))
    assert len(merged) == len(memory) == len(streamed)
    assert set(merged["labels_per_class"]) == {"20", "all"}
    np.testing.assert_array_equal(merged["value_memory"], merged["value_streamed"])


def test_streaming_refuses_probes_that_cannot_stream(tmp_path):
    from probekit.core.errors import ProbekitError

    path = synthetic_cache(tmp_path / "c.h5", 600, 200, [32])
    with pytest.raises(ProbekitError, match="cannot stream it from disk.*raise --max-memory"):
        probe_cache(path, ProbeRunConfig(probes=("linear", "sgd")), progress=False, max_memory=64 << 10)
