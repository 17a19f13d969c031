"""Keypoint correspondence (PCK@alpha) on every (t, layer) cell of a spatial cache, as DIFT evaluates it.

For each pair and cell: the source keypoint's feature is read from the source's feature map
upsampled bilinearly to the image (:mod:`.frame`, at the keypoint pixel's centre); the feature of
every target pixel is read the same way; the prediction is the target pixel (column, row) of
highest cosine similarity (the first one in row-major order on ties, as ``numpy.argmax``); it is
correct when its distance to the ground truth is at most alpha x max(h, w) of the target box, or
of the target image where the pair has no box (:mod:`probekit.evaluate.dense`). Target pixels a
centre crop cut off from the model's view are not searched, and keypoints outside it not scored.

Reported per cell and split: ``pck`` (mean over pairs of each pair's share of correct keypoints,
DIFT's "per image" PCK) and ``pck_point`` (correct keypoints over all keypoints, DIFT's "per
point"). The cell is chosen on val ``pck`` and reported on test.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from probekit.analyses.dense.frame import ImageFrame, pixel_centres, read_maps
from probekit.analyses.dense.table import dense_rows
from probekit.core.errors import ProbekitError
from probekit.data.images import image_header
from probekit.data.pairs import DATASET_SPLIT, PairSet, image_paths, read_pairs
from probekit.evaluate.dense import keypoints_correct, pck_threshold
from probekit.evaluate.results import with_kind
from probekit.features.cache import FeatureCache
from probekit.features.group import cell_infos

log = logging.getLogger(__name__)
Cell = tuple[int, str]


@dataclass(frozen=True)
class CorrespondConfig:
    alpha: float = 0.1


@dataclass
class CorrespondResults:
    table: pd.DataFrame
    #: per cell, (n_test_pairs, 2) int64 (correct, total) keypoints of each scored test pair
    test_counts: dict[Cell, np.ndarray]
    test_pairs: np.ndarray  # the scored test pairs' numbers


def match_keypoints(
    source_features: torch.Tensor,
    target_features: torch.Tensor,
    target_hw: tuple[int, int],
    searchable: np.ndarray | None = None,
) -> np.ndarray:
    """(K, 2) predicted (x, y) pixel indices: each source feature's cosine nearest target pixel.

    ``source_features`` (K, C); ``target_features`` (H * W, C) row-major; ``searchable`` (H * W,)
    bool marks the pixels that may be chosen (all when None).
    """
    similarity = F.normalize(source_features, dim=1) @ F.normalize(target_features, dim=1).T  # (K, HW)
    if searchable is not None:
        similarity[:, torch.from_numpy(~searchable)] = -torch.inf
    best = similarity.argmax(dim=1).numpy()
    width = target_hw[1]
    return np.stack([best % width, best // width], axis=1).astype(np.float64)


def _sizes(root: Path, split: str) -> list[tuple[int, int]]:
    """(H, W) of every image of the split, from the file headers."""
    return [image_header(path)[1][::-1] for path in image_paths(root, split)]


def correspond_cache(
    cache_path: str | Path, data_root: str | Path, config: CorrespondConfig = CorrespondConfig()
) -> CorrespondResults:
    """Score every cell on the val and test pairs; see the module docstring."""
    if not 0 < config.alpha <= 1:
        raise ProbekitError(f"--alpha must be in (0, 1], got {config.alpha}")
    data_root = Path(data_root)
    with FeatureCache(cache_path) as cache:
        cache.require_complete()
        if not cache.spatial_side:
            raise ProbekitError(
                f"{cache_path} holds pooled vectors: extract it with --pooling spatialS (e.g. spatial8) to correspond"
            )
        splits = ["val", "test"]
        if any(DATASET_SPLIT[s] not in cache.splits for s in splits):
            raise ProbekitError(
                f"{cache_path} lacks the val or test pairs' images: extract it from a pair folder (`probekit pairs`)"
            )
        fit = cache.attrs["fit"]
        pairs = {split: read_pairs(data_root, split) for split in splits}
        sizes = {split: _sizes(data_root, split) for split in splits}
        for split in splits:
            index = cache.index(DATASET_SPLIT[split])
            if len(sizes[split]) != len(index) or not np.array_equal(index, np.arange(len(sizes[split]))):
                raise ProbekitError(
                    f"{cache_path}'s {split} images are not the {len(sizes[split])} images of {data_root}: "
                    "extract the whole pair folder (no --*-limit)"
                )
        frames = {split: [ImageFrame.from_fit(fit, hw) for hw in sizes[split]] for split in splits}
        cells = cell_infos(cache)
        scores: dict[Cell, dict[str, dict[str, float]]] = {}
        counts: dict[Cell, np.ndarray] = {}
        scored: dict[str, np.ndarray] = {}
        for cell in cells:
            scores[cell] = {}
            for split in splits:
                maps = torch.from_numpy(cache.feature_maps(DATASET_SPLIT[split], cell[1], cell[0]))
                per_pair, kept = _score_pairs(maps, pairs[split], sizes[split], frames[split], config.alpha)
                scored[split] = kept
                if len(per_pair) == 0:
                    raise ProbekitError(f"no {split} pair has a keypoint to score")
                scores[cell][split] = {
                    "pck": float(np.mean(per_pair[:, 0] / per_pair[:, 1])),
                    "pck_point": float(per_pair[:, 0].sum() / per_pair[:, 1].sum()),
                    "n_eval": len(per_pair),
                }
                if split == "test":
                    counts[cell] = per_pair
        attrs = cache.attrs
    table = with_kind(
        dense_rows(
            scores,
            cells,
            probe="correspond",
            metrics=("pck", "pck_point"),
            model=str(attrs.get("model_id")),
            dataset=str(attrs.get("dataset")),
            n_train=0,
            params=f"alpha={config.alpha:g}",
        ),
        "correspond",
    )
    return CorrespondResults(table=table, test_counts=counts, test_pairs=scored["test"])


def _score_pairs(
    maps: torch.Tensor, pairs: PairSet, sizes: list[tuple[int, int]], frames: list[ImageFrame], alpha: float
) -> tuple[np.ndarray, np.ndarray]:
    """(n, 2) (correct, total) per pair with at least one scorable keypoint, and those pairs' numbers."""
    rows, kept = [], []
    for p in range(len(pairs)):
        source, target = int(pairs.source[p]), int(pairs.target[p])
        src_kps, trg_kps = pairs.source_kps[p], pairs.target_kps[p]
        valid = np.isfinite(src_kps).all(axis=1) & np.isfinite(trg_kps).all(axis=1)
        valid &= frames[source].inside(np.nan_to_num(src_kps) + 0.5) & frames[target].inside(
            np.nan_to_num(trg_kps) + 0.5
        )
        if not valid.any():
            continue
        src_points = torch.from_numpy(frames[source].to_frame(src_kps[valid] + 0.5)).float()[None]
        src_features = read_maps(maps[source : source + 1], src_points, frames[source].frame_hw)[0]
        target_hw = sizes[target]
        centres = pixel_centres(*target_hw)
        trg_points = torch.from_numpy(frames[target].to_frame(centres)).float()[None]
        trg_features = read_maps(maps[target : target + 1], trg_points, frames[target].frame_hw)[0]
        predicted = match_keypoints(src_features, trg_features, target_hw, frames[target].inside(centres))
        box = pairs.target_bbox[p]
        threshold = pck_threshold(box if np.isfinite(box).all() else None, target_hw)
        correct = keypoints_correct(predicted, trg_kps[valid], threshold, alpha)
        rows.append((int(correct.sum()), int(valid.sum())))
        kept.append(p)
    return np.asarray(rows, dtype=np.int64).reshape(-1, 2), np.asarray(kept, dtype=np.int64)
