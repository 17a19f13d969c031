"""`probekit sweep`: extract + probe + alignment/uniformity over the checkpoints of one training run.

A series is found from one path:

* a shipped model folder with ``intermediate/step-N/`` beside its own weights (its final step from
  ``record.json``), as ``checkpoints/fashion-mnist-ddpm``;
* a ``probekit train`` run folder with ``checkpoints/step-N/`` (``model/`` repeats the last one);
* ``ddae:CONFIG.yaml:DIR`` with DDAE's ``DIR/model_N.pth`` files (N is the epoch, counted from 0).

Images seen: step x batch size (``record.json``'s recipe) for the first two; (N + 1) x
``images_per_epoch`` for DDAE.

Each checkpoint gets a folder ``OUT/<label>/`` holding its cache (``features.h5``), results
(``results.csv`` with its predictions sidecar, for ``probekit compare``) and alignment/uniformity
rows (``align.csv``). A checkpoint whose two CSVs exist
is skipped, and an interrupted extraction resumes, so the sweep resumes checkpoint by checkpoint.
``OUT/sweep.csv`` has one row per checkpoint: the best cell of the probe, its accuracy, and
alignment and uniformity at that cell; ``OUT/sweep.png`` plots them against images seen.

The best cell is chosen on the validation split (``probekit probe``'s protocol); ``chosen_on``
says "test" only for a probe run without one.
"""

from __future__ import annotations

import glob
import json
import logging
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from probekit.core.errors import ProbekitError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Checkpoint:
    """``label``: folder name under OUT; ``spec``: what ``load_backbone`` takes; ``images_seen``: training images so
    far.
    """

    label: str
    spec: str
    step: int
    images_seen: int


@dataclass
class SweepConfig:
    """What each checkpoint gets: extraction settings, the probe whose best cell is followed."""

    timesteps: Sequence[int] | None = None
    layers: str | None = None
    draws: int = 2
    seed: int = 0
    batch_size: int = 64
    train_limit: int | None = None
    test_limit: int | None = None
    probe: str = "linear"
    align_split: str = "test"
    max_points: int = 4096
    images_per_epoch: int = 50000
    extra_probe_settings: dict = field(default_factory=dict)


def _batch_size(record: Path) -> int:
    try:
        return int(json.loads(record.read_text())["recipe"]["batch_size"])
    except (OSError, KeyError, ValueError, TypeError) as err:
        raise ProbekitError(
            f"cannot read the batch size from {record} ({err}): images seen are step x batch size"
        ) from err


def find_checkpoints(source: str, images_per_epoch: int = 50000) -> list[Checkpoint]:
    """The checkpoints of one run, in training order (see the module docstring for the layouts)."""
    if source.startswith("ddae:"):
        parts = source.split(":")
        if len(parts) != 3:
            raise ProbekitError(f"{source!r}: write ddae:CONFIG.yaml:FOLDER (the folder holding model_N.pth)")
        _, config, folder = parts
        found = []
        for path in glob.glob(os.path.join(folder, "model_*.pth")):
            match = re.fullmatch(r"model_(\d+)\.pth", os.path.basename(path))
            if match:
                epoch = int(match.group(1))
                found.append(
                    Checkpoint(f"epoch-{epoch:05d}", f"ddae:{config}:{path}", epoch, (epoch + 1) * images_per_epoch)
                )
        if not found:
            raise ProbekitError(f"no model_N.pth files in {folder}")
        return sorted(found, key=lambda c: c.step)
    root = Path(source)
    if not root.is_dir():
        raise ProbekitError(f"{source} is not a folder of checkpoints (nor ddae:CONFIG.yaml:FOLDER)")
    found: list[Checkpoint] = []
    record = root / "record.json"
    for sub in ("intermediate", "checkpoints"):
        for path in sorted((root / sub).glob("step-*")):
            match = re.fullmatch(r"step-(\d+)", path.name)
            if match and (path / "config.json").is_file():
                step = int(match.group(1))
                found.append(Checkpoint(path.name, str(path), step, step * _batch_size(record)))
    if (root / "config.json").is_file() and record.is_file():
        step = int(json.loads(record.read_text())["steps"])
        if step not in {c.step for c in found}:
            found.append(Checkpoint(f"step-{step:07d}", str(root), step, step * _batch_size(record)))
    if not found:
        raise ProbekitError(f"{source} holds no checkpoints (intermediate/step-N, checkpoints/step-N or model_N.pth)")
    return sorted(found, key=lambda c: c.step)


def best_row(results: pd.DataFrame, probe: str) -> pd.Series:
    """The chosen ``probe`` cell's test top-1 row, with ``chosen_on`` and ``val_value`` (see
    :func:`probekit.evaluate.results.best_cells`).
    """
    from probekit.evaluate.results import best_cells

    rows = results[results["probe"] == probe]
    if rows.empty:
        raise ProbekitError(f"the results hold no rows of probe {probe!r}")
    return best_cells(rows, "top1").iloc[0]


def run_sweep(
    checkpoints: Sequence[Checkpoint],
    data: Callable[[], object],
    out: str | Path,
    config: SweepConfig,
    *,
    device: str = "cpu",
    progress: bool = True,
    probe_config: object | None = None,
) -> pd.DataFrame:
    """Process every checkpoint not yet done, then write ``sweep.csv`` and ``sweep.png``; returns the summary.

    ``data`` returns the (already subset) dataset; it is called once, when a checkpoint needs extracting.
    ``probe_config`` is a :class:`probekit.probes.run.ProbeRunConfig` (default: ``config.probe`` only).
    """
    from probekit.analyses.alignment import AlignConfig, measure
    from probekit.evaluate.predictions import predictions_path, write_predictions
    from probekit.evaluate.results import read_table, write_table
    from probekit.features.extraction import ExtractConfig, extract
    from probekit.models import load_backbone
    from probekit.probes.run import ProbeRunConfig, probe_cache

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    dataset = None
    summary = []
    for checkpoint in checkpoints:
        folder = out / checkpoint.label
        folder.mkdir(exist_ok=True)
        results_path, align_path = folder / "results.csv", folder / "align.csv"
        if results_path.is_file() and align_path.is_file():
            log.info("%s: done before, skipped", checkpoint.label)
        else:
            log.info("%s: %s (%d images seen)", checkpoint.label, checkpoint.spec, checkpoint.images_seen)
            cache = folder / "features.h5"
            if not _complete(cache):
                dataset = dataset if dataset is not None else data()
                backbone = load_backbone(checkpoint.spec, device=device)
                extract(
                    backbone,
                    dataset,
                    cache,
                    ExtractConfig(
                        timesteps=config.timesteps,
                        layers=config.layers,
                        draws=config.draws,
                        seed=config.seed,
                        batch_size=config.batch_size,
                    ),
                    command=f"probekit sweep ({checkpoint.spec})",
                    progress=progress,
                )
            run_config = probe_config or ProbeRunConfig(probes=[config.probe], device=device, seed=config.seed)
            probed = probe_cache([cache], run_config, progress=progress)
            write_predictions(predictions_path(results_path), probed.predictions)
            write_table(probed.table, results_path)  # last: its presence marks the probing done
            write_table(
                measure(cache, AlignConfig(split=config.align_split, max_points=config.max_points, seed=config.seed)),
                align_path,
            )
        row = best_row(read_table(results_path), config.probe)
        geometry = read_table(align_path)
        at_cell = geometry[(geometry["t"] == row["t"]) & (geometry["layer"] == row["layer"])]
        metric = dict(zip(at_cell["metric"], at_cell["value"]))
        summary.append(
            {
                "label": checkpoint.label,
                "step": checkpoint.step,
                "images_seen": checkpoint.images_seen,
                "model": checkpoint.spec,
                "probe": config.probe,
                "chosen_on": row["chosen_on"],
                "t": int(row["t"]),
                "sigma": float(row["sigma"]),
                "layer": row["layer"],
                "val_top1": float(row["val_value"]),
                "test_top1": float(row["value"]),
                "test_ci_low": float(row["ci_low"]),
                "test_ci_high": float(row["ci_high"]),
                "alignment": metric.get("alignment"),
                "uniformity": metric.get("uniformity"),
            }
        )
    table = pd.DataFrame(summary)
    tmp = out / ".sweep.csv.tmp"
    table.to_csv(tmp, index=False)
    os.replace(tmp, out / "sweep.csv")
    from probekit.plots.sweep import plot_sweep

    plot_sweep(table, out / "sweep.png")
    return table


def _complete(path: Path) -> bool:
    from probekit.features.cache import FeatureCache

    if not path.exists():
        return False
    with FeatureCache(path) as cache:
        return cache.complete
