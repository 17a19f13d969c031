"""Dense linear segmentation: a per-pixel linear classifier on every (t, layer) cell of a spatial cache.

For each cell, the cached S x S feature maps are read bilinearly at pixel centres of the original
images (:mod:`.frame`: the same as upsampling them to the image), and the batched ``linear``
solver (:mod:`probekit.probes.linear`: scikit-learn's standardised multinomial logistic
regression) is fitted on ``pixels_per_image`` labelled pixels drawn per train image (seeded,
uniform over the image's non-ignored pixels). Every pixel of the val and test images is then
predicted; mIoU and pixel accuracy come from one confusion matrix per split
(:mod:`probekit.evaluate.dense`). The cell is chosen on val mIoU and reported on test.

Val: the cache's own val split when it has one, else a seeded ``val_fraction`` of the train images.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from probekit.analyses.dense.frame import ImageFrame, pixel_centres, read_maps
from probekit.analyses.dense.table import dense_rows
from probekit.core.errors import ProbekitError
from probekit.data.segmentation import IGNORE_INDEX, read_masks, segmentation_classes
from probekit.evaluate.dense import confusion_matrix, segmentation_scores
from probekit.evaluate.results import with_kind
from probekit.features.cache import FeatureCache
from probekit.features.group import cell_infos
from probekit.probes.linear import (
    LinearProbeConfig,
    fit_linear_grid,
    predict_linear_grid,
)
from probekit.probes.run import plan_groups

log = logging.getLogger(__name__)
Cell = tuple[int, str]


@dataclass(frozen=True)
class SegmentConfig:
    """``pixels_per_image`` train pixels per image; ``C`` the linear probe's inverse L2 strength."""

    pixels_per_image: int = 64
    val_fraction: float = 0.2
    C: float = 1.0
    seed: int = 0
    eval_images: int = 32  # images predicted per block (bounds the per-pixel feature memory)


@dataclass
class SegmentResults:
    table: pd.DataFrame
    #: per cell, (n_test_images, K, K) confusion matrices of each test image (for paired comparisons)
    test_confusions: dict[Cell, np.ndarray]
    test_index: np.ndarray


def _split_positions(cache: FeatureCache, config: SegmentConfig) -> dict[str, tuple[str, np.ndarray]]:
    """Split name -> (cache split it is read from, positions in it)."""
    n_train = len(cache.labels("train"))
    if "val" in cache.splits:
        return {
            "train": ("train", np.arange(n_train)),
            "val": ("val", np.arange(len(cache.labels("val")))),
            "test": ("test", np.arange(len(cache.labels("test")))),
        }
    if not 0 < config.val_fraction < 1:
        raise ProbekitError(
            f"--val-fraction must be in (0, 1) for a cache without a val split, got {config.val_fraction}"
        )
    n_val = round(n_train * config.val_fraction)
    if not 1 <= n_val < n_train:
        raise ProbekitError(
            f"--val-fraction {config.val_fraction} of {n_train} train images leaves no val or no train image"
        )
    order = np.random.default_rng([config.seed, 1]).permutation(n_train)
    return {
        "train": ("train", np.sort(order[n_val:])),
        "val": ("train", np.sort(order[:n_val])),
        "test": ("test", np.arange(len(cache.labels("test")))),
    }


def _frames(fit: dict, masks: list[np.ndarray]) -> list[ImageFrame]:
    return [ImageFrame.from_fit(fit, mask.shape) for mask in masks]


def segment_cache(
    cache_path: str | Path,
    data_root: str | Path,
    config: SegmentConfig = SegmentConfig(),
    *,
    max_memory: int | None = None,
) -> SegmentResults:
    """Fit and score the per-pixel linear classifier on every cell; see the module docstring."""
    if config.pixels_per_image < 1:
        raise ProbekitError(f"--pixels-per-image must be at least 1, got {config.pixels_per_image}")
    class_names = segmentation_classes(data_root)
    num_classes = len(class_names)
    with FeatureCache(cache_path) as cache:
        cache.require_complete()
        if not cache.spatial_side:
            raise ProbekitError(
                f"{cache_path} holds pooled vectors: extract it with --pooling spatialS (e.g. spatial8) to segment"
            )
        fit = cache.attrs["fit"]
        parts = _split_positions(cache, config)
        masks = {
            name: read_masks(data_root, source, cache.index(source)[positions])
            for name, (source, positions) in parts.items()
        }
        frames = {name: _frames(fit, split_masks) for name, split_masks in masks.items()}
        points, y_train = _train_pixels(masks["train"], frames["train"], config)
        cells = cell_infos(cache)
        side = cache.spatial_side
        images_read = sum(len(p) for _, p in parts.values())
        sizes = {cell: 4 * cache.width(cell[1]) * (images_read + len(y_train) // side**2 + 1) for cell in cells}
        scores: dict[Cell, dict[str, dict[str, float]]] = {}
        confusions: dict[Cell, np.ndarray] = {}
        for group in plan_groups(sizes, max_memory):
            train_features = {}
            for cell in group:
                maps = torch.from_numpy(cache.feature_maps("train", cell[1], cell[0], rows=parts["train"][1]))
                train_features[cell] = _read_points(maps, points, frames["train"])
            heads = fit_linear_grid(train_features, y_train, LinearProbeConfig(C=config.C, num_classes=num_classes))
            del train_features
            per_split = {}
            for name in ("val", "test"):
                source, positions = parts[name]
                per_split[name] = _predict_confusions(
                    cache, source, positions, group, heads, masks[name], frames[name], num_classes, config.eval_images
                )
            for cell in group:
                scores[cell] = {
                    name: {
                        **segmentation_scores(per_split[name][cell].sum(axis=0)),
                        "n_eval": int(per_split[name][cell].sum()),
                    }
                    for name in ("val", "test")
                }
                confusions[cell] = per_split["test"][cell]
        attrs = cache.attrs
        test_index = cache.index("test")
    table = with_kind(
        dense_rows(
            scores,
            cells,
            probe="segment-linear",
            metrics=("miou", "pixel_accuracy"),
            model=str(attrs.get("model_id")),
            dataset=str(attrs.get("dataset")),
            n_train=len(y_train),
            params=f"C={config.C:g},pixels={config.pixels_per_image}",
        ),
        "segment",
    )
    return SegmentResults(table=table, test_confusions=confusions, test_index=test_index)


def _train_pixels(
    masks: list[np.ndarray], frames: list[ImageFrame], config: SegmentConfig
) -> tuple[np.ndarray, np.ndarray]:
    """(N, P, 2) model-frame points and (N * P,) labels of ``pixels_per_image`` labelled pixels per image.

    An image with fewer labelled pixels (inside the frame) than asked repeats some (drawn with replacement).
    """
    rng = np.random.default_rng([config.seed, 2])
    points, labels = [], []
    for mask, frame in zip(masks, frames):
        centres = pixel_centres(*mask.shape)
        usable = np.flatnonzero((mask.reshape(-1) != IGNORE_INDEX) & frame.inside(centres))
        if len(usable) == 0:
            raise ProbekitError("a train image has no labelled pixel: every mask value is the ignore index 255")
        chosen = rng.choice(usable, size=config.pixels_per_image, replace=len(usable) < config.pixels_per_image)
        points.append(frame.to_frame(centres[chosen]))
        labels.append(mask.reshape(-1)[chosen])
    return np.stack(points), np.concatenate(labels).astype(np.int64)


def _read_points(maps: torch.Tensor, points: np.ndarray, frames: list[ImageFrame]) -> np.ndarray:
    """(N * P, C) float32 features of ``maps`` (N, C, S, S) at the (N, P, 2) model-frame points."""
    features = read_maps(maps, torch.from_numpy(points).float(), frames[0].frame_hw)
    return features.reshape(-1, features.shape[-1]).numpy()


def _predict_confusions(
    cache: FeatureCache,
    source: str,
    positions: np.ndarray,
    cells: list[Cell],
    heads: dict,
    masks: list[np.ndarray],
    frames: list[ImageFrame],
    num_classes: int,
    block: int,
) -> dict[Cell, np.ndarray]:
    """Cell -> (n_images, K, K) confusion matrix of each image, every pixel predicted."""
    out = {cell: np.zeros((len(positions), num_classes, num_classes), dtype=np.int64) for cell in cells}
    for start in range(0, len(positions), block):
        stop = min(start + block, len(positions))
        maps = {
            cell: torch.from_numpy(cache.feature_maps(source, cell[1], cell[0], rows=positions[start:stop]))
            for cell in cells
        }
        for i in range(start, stop):
            mask, frame = masks[i], frames[i]
            centres = pixel_centres(*mask.shape)
            # pixels a centre crop cut away have no features of their own: left out like ignored ones
            mask = np.where(frame.inside(centres).reshape(mask.shape), mask, IGNORE_INDEX)
            centres = frame.to_frame(centres)[None]
            features = {cell: _read_points(maps[cell][i - start : i - start + 1], centres, [frame]) for cell in cells}
            predicted = predict_linear_grid({cell: heads[cell] for cell in cells}, features)
            for cell in cells:
                out[cell][i] = confusion_matrix(predicted[cell], mask, num_classes)
    return out
