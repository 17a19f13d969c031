"""`probekit noisy-classifier`: DDAE's noise-conditional classifier on one layer, against noisy pixels.

1. The layer's features at every grid level are extracted once into ``OUT/features.h5`` with K
   noise draws per (image, level) (the usual cache, resumable). On a CPU, running the network at
   every training step is out of reach; a cache over the grid costs one forward per (image, level,
   draw) and the head then trains in seconds. What differs from DDAE: the training levels are the
   grid's, not every t in 1..T, and each (image, level) has K draws instead of fresh noise.
2. The same noisy inputs the network saw (same schedule, same keyed noise, same fit to the model's
   size and value range) are flattened into pixel vectors: the pixel baseline.
3. :func:`probekit.probes.noise_conditional.fit_noise_conditional` trains one head on each, and
   both are scored on the test split at every level (one noise draw, as DDAE tests).

Writes ``OUT/results.csv`` (probe ``noise-conditional``; model rows for the layer, ``pixels
(noisy)`` rows for the baseline), ``OUT/loss.csv`` (mean train loss per epoch) and
``OUT/accuracy_vs_<x>.png``. The head is trained for a fixed number of epochs and the final
epoch is reported, as DDAE does: nothing is selected, so no validation split is held out.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from probekit.core.errors import ProbekitError
from probekit.core.noise import sample_noise, split_seed
from probekit.core.types import CellInfo
from probekit.data import ImageDataset, fit_images
from probekit.evaluate import score_predictions
from probekit.evaluate.results import scores_to_table, write_table
from probekit.features.cache import FeatureCache
from probekit.features.extraction import ExtractConfig, extract, plan_extraction
from probekit.models.backbone import Backbone
from probekit.probes.noise_conditional import NoiseConditionalConfig, fit_noise_conditional, predict_per_level

log = logging.getLogger(__name__)

PROBE = "noise-conditional"
PIXELS = "pixels (noisy)"


@dataclass
class NoisyClassifierConfig:
    """``layer``: one name, alias or index; ``timesteps``: the schedule's indices (None = its
    default grid); ``draws``: noise draws per (image, level) for training; ``pixels``: also train
    the head on noisy pixels; ``x``: noise axis of the figure (sigma or logsnr).
    """

    layer: str
    timesteps: Sequence[int] | None = None
    draws: int = 2
    seed: int = 0
    batch_size: int = 64
    pixels: bool = True
    x: str = "sigma"
    head: NoiseConditionalConfig = field(default_factory=NoiseConditionalConfig)


def _layer_features(cache: FeatureCache, split: str, layer: str) -> np.ndarray:
    """(T, K, N, D) float32 of one layer, read draw by draw through the cache's reader."""
    draws = cache.draws
    return np.stack(
        [np.stack([cache.draw_features(split, layer, t, d) for d in range(draws)]) for t in cache.timesteps]
    )


def noisy_pixels(
    backbone: Backbone,
    images: np.ndarray,
    ids: np.ndarray,
    timesteps: Sequence[int],
    draws: int,
    seed: int,
    fit: dict | str = "auto",
    batch_size: int = 256,
) -> np.ndarray:
    """(T, K, N, C*H*W) float32: the exact noisy inputs extraction feeds the network, flattened.

    ``seed`` is the split's noise seed (:func:`probekit.core.noise.split_seed`); ``fit`` as in extraction.
    """
    points = backbone.schedule.points(timesteps)
    mode = fit["fit"] if isinstance(fit, dict) else fit
    out: np.ndarray | None = None
    for start in range(0, len(ids), batch_size):
        x0, _ = fit_images(
            images[start : start + batch_size],
            size=backbone.input_size,
            channels=backbone.input_channels,
            value_range=backbone.value_range,
            fit=mode,
        )
        x0 = backbone.encode(x0)
        if out is None:
            out = np.empty((len(points), draws, len(ids), int(np.prod(x0.shape[1:]))), dtype=np.float32)
        for i, point in enumerate(points):
            for d in range(draws):
                if point.alpha_bar >= 1.0:
                    x = x0
                else:
                    noise = sample_noise(x0.shape[1:], ids[start : start + batch_size], seed=seed, t=point.t, draw=d)
                    x = backbone.schedule.add_noise(x0, noise, point)
                out[i, d, start : start + len(x)] = x.reshape(len(x), -1).numpy()
    assert out is not None
    return out


def run_noisy_classifier(
    backbone: Backbone,
    dataset: ImageDataset,
    out_dir: str | Path,
    config: NoisyClassifierConfig,
    *,
    command: str = "",
    progress: bool = True,
) -> pd.DataFrame:
    """Extract (or reuse), train both heads, write the table, loss CSV and figure; return the table."""
    from probekit.plots import plot_model_comparison  # figures only here: the computation above needs no plotting

    if config.x not in ("sigma", "logsnr"):
        raise ProbekitError(f"--x must be sigma or logsnr, got {config.x!r}")
    if "test" not in dataset.splits or "train" not in dataset.splits:
        raise ProbekitError(f"{dataset.name} needs a train and a test split for the noise-conditional classifier")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    extract_config = ExtractConfig(
        timesteps=config.timesteps,
        layers=config.layer,
        draws=config.draws,
        seed=config.seed,
        batch_size=config.batch_size,
    )
    plan = plan_extraction(backbone, extract_config)
    if len(plan.layers) != 1:
        raise ProbekitError(f"--layer {config.layer!r} selects {len(plan.layers)} layers: give exactly one")
    layer = plan.layers[0]
    cache_path = out_dir / "features.h5"
    if not _complete(cache_path):
        extract(backbone, dataset, cache_path, extract_config, command=command, progress=progress)
    with FeatureCache(cache_path) as cache:
        wanted = [point.t for point in plan.grid]
        if (
            cache.timesteps != wanted
            or layer not in [l.name for l in cache.layers]
            or int(cache.attrs["draws"]) != config.draws
        ):
            raise ProbekitError(
                f"{cache_path} holds another extraction (grid {cache.timesteps}, draws {cache.attrs['draws']}): "
                f"delete it or choose another --out"
            )
        if cache.attrs.get("model_sha256") != backbone.weights_sha256():
            raise ProbekitError(f"{cache_path} was extracted from other weights: delete it or choose another --out")
        info = next(l for l in cache.layers if l.name == layer)
        grid = cache.grid
        fit = cache.attrs.get("fit", "auto")
        train = {"layer": _layer_features(cache, "train", layer)}
        test = {"layer": _layer_features(cache, "test", layer)}
        y_train, y_test = cache.labels("train"), cache.labels("test")
        ids = {split: cache.index(split) for split in ("train", "test")}
    if config.pixels:
        splits = {name: dataset.splits[name] for name in ("train", "test")}
        for name, target in (("train", train), ("test", test)):
            positions = _positions(splits[name].index, ids[name])
            target["pixels"] = noisy_pixels(
                backbone,
                splits[name].images[positions],
                ids[name],
                wanted,
                config.draws,
                split_seed(config.seed, name),
                fit,
            )
    num_classes = len(dataset.class_names)
    tables, losses = [], {}
    for name in train:
        log.info(
            "training the noise-conditional head on %s (%d dims)",
            layer if name == "layer" else "noisy pixels",
            train[name].shape[-1],
        )
        fitted = fit_noise_conditional(train[name], y_train, wanted, num_classes, config.head, progress=progress)
        predictions = predict_per_level(fitted, test[name])
        losses[name] = fitted.losses
        cells = {
            point.t: CellInfo(
                point.t,
                point.sigma,
                point.logsnr,
                point.alpha_bar,
                layer if name == "layer" else "pixels",
                info.stage if name == "layer" else "input",
                info.depth if name == "layer" else 0,
            )
            for point in grid
        }
        scores = {PROBE: {point.t: {"test": score_predictions(y_test, predictions[i])} for i, point in enumerate(grid)}}
        tables.append(
            scores_to_table(
                scores,
                cells,
                model=backbone.model_id if name == "layer" else PIXELS,
                dataset=dataset.name,
                n_train=len(y_train),
            )
        )
    table = pd.concat(tables, ignore_index=True)
    write_table(table, out_dir / "results.csv")
    loss_table = pd.DataFrame({"epoch": np.arange(1, config.head.epochs + 1)})
    for name, values in losses.items():
        loss_table[f"loss_{'pixels' if name == 'pixels' else 'features'}"] = values
    _write_csv(loss_table, out_dir / "loss.csv")
    if table["model"].nunique() > 1:
        plot_model_comparison(table, PROBE, out_dir / f"accuracy_vs_{config.x}.png", x=config.x)
    return table


def _write_csv(table: pd.DataFrame, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    table.to_csv(tmp, index=False)
    os.replace(tmp, path)


def _complete(path: Path) -> bool:
    if not path.exists():
        return False
    with FeatureCache(path) as cache:
        return cache.complete


def _positions(index: np.ndarray, wanted: np.ndarray) -> np.ndarray:
    """Positions in a split of the sample ids ``wanted`` (the cache's order)."""
    where = {int(sample): pos for pos, sample in enumerate(index)}
    missing = [int(s) for s in wanted if int(s) not in where]
    if missing:
        raise ProbekitError(
            f"the cache holds samples {missing[:5]} that the dataset lacks: use the same --data and limits"
        )
    return np.asarray([where[int(s)] for s in wanted], dtype=np.int64)
