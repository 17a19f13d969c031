"""Backbone x dataset x noise grid -> pooled features -> FeatureCache.

For each batch of clean images and each (grid point, draw), one forward captures every requested
layer. Noise comes from :mod:`probekit.noise` keyed by (split seed, sample id, t, draw), so features
do not depend on the batch size or order.
Writes happen on a background thread while the next batch computes.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from .cache import CacheLayout, CacheWriter, SplitLabels
from .data import ImageDataset, fit_images
from .errors import ProbekitError
from .models.backbone import Backbone
from .models.layers import select_layers
from .noise import sample_noise, split_seed
from .pooling import Pooling
from .schedule import GridPoint

log = logging.getLogger(__name__)


@dataclass
class ExtractConfig:
    """What to extract. ``timesteps`` are the schedule's own indices; None means its default grid."""

    timesteps: Sequence[int] | None = None
    layers: str | Sequence[str] | None = None
    draws: int = 1
    seed: int = 0
    batch_size: int = 64
    pooling: str = "gap"
    dtype: str = "float32"
    fit: str = "auto"
    splits: Sequence[str] = field(default=("train", "test"))


@dataclass
class ExtractPlan:
    """The resolved grid and layers (what ``extract`` will actually run)."""

    grid: list[GridPoint]
    layers: list[str]
    pooling: Pooling


def plan_extraction(backbone: Backbone, config: ExtractConfig) -> ExtractPlan:
    """Validate and resolve the config against the backbone; raises ProbekitError on bad input."""
    if config.draws < 1:
        raise ProbekitError(f"--draws must be at least 1, got {config.draws}")
    if config.batch_size < 1:
        raise ProbekitError(f"--batch-size must be at least 1, got {config.batch_size}")
    timesteps = list(config.timesteps) if config.timesteps is not None else backbone.schedule.default_grid()
    if not timesteps:
        raise ProbekitError("empty timestep list: give --timesteps t1,t2,... or --grid")
    if len(set(timesteps)) != len(timesteps):
        raise ProbekitError(f"repeated timesteps in {timesteps}: list each once")
    grid = sorted(backbone.schedule.points(timesteps), key=lambda point: point.t)
    layers = select_layers(backbone.layers(), config.layers)
    return ExtractPlan(grid=grid, layers=layers, pooling=Pooling.parse(config.pooling))


def _batch_features(
    backbone: Backbone,
    x0: torch.Tensor,
    ids: np.ndarray,
    plan: ExtractPlan,
    draws: int,
    seed: int,
    on_forward: Callable[[int], object] | None = None,
) -> dict[str, np.ndarray]:
    """{layer: (T, K, B, D)} for one batch of clean inputs ``x0`` (already on the device).

    ``seed`` is the split's noise seed (:func:`probekit.noise.split_seed`).
    """
    per_layer: dict[str, list[torch.Tensor]] = {name: [] for name in plan.layers}
    for point in plan.grid:
        for draw in range(draws):
            if point.alpha_bar >= 1.0:
                x_noisy = x0
            else:
                noise = sample_noise(x0.shape[1:], ids, seed=seed, t=point.t, draw=draw, device=x0.device)
                x_noisy = backbone.schedule.add_noise(x0, noise, point)
            feats = backbone.features(x_noisy, point, plan.layers, plan.pooling)
            for name in plan.layers:
                per_layer[name].append(feats[name].float())
            if on_forward is not None:
                on_forward(len(ids))
    shape = (len(plan.grid), draws)
    return {
        name: torch.stack(values).reshape(*shape, *values[0].shape).cpu().numpy() for name, values in per_layer.items()
    }


def _prepare(backbone: Backbone, images: np.ndarray, fit: str) -> tuple[torch.Tensor, dict]:
    x, how = fit_images(
        images, size=backbone.input_size, channels=backbone.input_channels, value_range=backbone.value_range, fit=fit
    )
    return x.to(backbone.device), how


def extract(
    backbone: Backbone,
    dataset: ImageDataset,
    out: str | Path,
    config: ExtractConfig = ExtractConfig(),
    *,
    command: str = "",
    overwrite: bool = False,
    progress: bool = True,
) -> Path:
    """Extract features of every requested layer at every grid point for ``dataset`` into ``out``.

    Returns the path of the finished cache. The file carries ``complete=True`` only when every
    sample was written; an interrupted run leaves ``complete=False`` behind.
    """
    out = Path(out)
    plan = plan_extraction(backbone, config)
    splits = {name: dataset.splits[name] for name in config.splits if name in dataset.splits}
    for name, split in splits.items():
        if len(split.labels) == 0:
            raise ProbekitError(f"the {name} split of {dataset.name} is empty: check the data path or the --*-limit options")
    if out.exists() and not overwrite:
        raise ProbekitError(f"{out} already exists: pass --overwrite or choose another --out")
    if not out.parent.exists():
        raise ProbekitError(f"output folder {out.parent} does not exist: create it or choose another --out")

    # One forward of one real sample gives the pooled widths and the record of how images were fitted.
    first = next(iter(splits.values()))
    x_probe, fit_record = _prepare(backbone, first.images[:1], config.fit)
    probe_feats = _batch_features(
        backbone, x_probe, first.index[:1], ExtractPlan(plan.grid[:1], plan.layers, plan.pooling), draws=1, seed=0
    )
    widths = {name: int(values.shape[-1]) for name, values in probe_feats.items()}
    layer_infos = [layer for layer in backbone.layers() if layer.name in plan.layers]

    layout = CacheLayout(
        attrs={
            "command": command,
            "model_id": backbone.model_id,
            "model_sha256": backbone.weights_sha256(),
            "framework": backbone.framework,
            "schedule": backbone.schedule.describe(),
            "dataset": dataset.name,
            "dataset_source": dataset.source,
            "dataset_info": dataset.info,
            "fit": fit_record,
            "seed": config.seed,
            "pooling": plan.pooling.name,
            "value_range": list(backbone.value_range),
        },
        grid=plan.grid,
        layers=layer_infos,
        widths=widths,
        splits={name: SplitLabels(split.labels, split.index) for name, split in splits.items()},
        class_names=list(dataset.class_names),
        draws=config.draws,
        dtype=config.dtype,
    )
    total = sum(len(split.labels) for split in splits.values()) * len(plan.grid) * config.draws
    log.info(
        "extracting %d layers x %d grid points x %d draws for %s -> %s",
        len(plan.layers), len(plan.grid), config.draws, ", ".join(f"{k}={len(v.labels)}" for k, v in splits.items()), out,
    )
    writer = CacheWriter(out, layout)
    complete = False
    started = time.perf_counter()
    try:
        with tqdm(total=total, unit="fwd", desc="extract", disable=not progress, smoothing=0.1) as bar:
            for split_name, split in splits.items():
                bar.set_postfix_str(split_name)
                seed = split_seed(config.seed, split_name)
                for start in range(0, len(split.labels), config.batch_size):
                    stop = min(start + config.batch_size, len(split.labels))
                    x0, _ = _prepare(backbone, split.images[start:stop], config.fit)
                    feats = _batch_features(backbone, x0, split.index[start:stop], plan, config.draws, seed, bar.update)
                    writer.write_batch(split_name, start, feats)
        complete = True
    finally:
        writer.close(complete=complete)
    log.info("wrote %s in %.1f s", out, time.perf_counter() - started)
    return out
