"""Cells of finished caches as probes and analyses read them: every cell's metadata, and several
caches of one extraction (each holding some of its layers) read as one.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from probekit.core.errors import ProbekitError
from probekit.core.types import CellInfo
from probekit.features.cache import FeatureCache

Cell = tuple[int, str]  # (t, layer)


def cell_infos(cache: FeatureCache) -> dict[Cell, CellInfo]:
    """Metadata of every cell, keyed by (t, layer), in grid x depth order."""
    return {
        (point.t, layer.name): CellInfo(
            t=point.t,
            sigma=point.sigma,
            logsnr=point.logsnr,
            alpha_bar=point.alpha_bar,
            layer=layer.name,
            stage=layer.stage,
            depth=layer.depth,
        )
        for point in cache.grid
        for layer in cache.layers
    }


def load_cells(cache: FeatureCache, split: str, cells: Sequence[Cell]) -> dict[Cell, np.ndarray]:
    """(N, D) float32 features of each cell (mean over noise draws)."""
    return {cell: cache.features(split, cell[1], cell[0]) for cell in cells}


#: what must agree for caches to be probed together, with the word used to name it in errors
_SAME_WORK = {
    "model_sha256": "model",
    "model_fingerprint": "model configuration",
    "dataset": "dataset",
    "pooling": "pooling",
    "draws": "draws",
    "views": "views",
    "seed": "seed",
    "precision": "precision",
    "fit": "image fitting",
}


class CacheGroup:
    """One or more finished caches of the same extraction read as one (e.g. train and test run apart).

    Splits present in several caches are concatenated in the order given; a sample id may appear
    once per split only. Caches whose model, dataset, grid, layers or extraction settings differ
    are refused, naming what differs.
    """

    def __init__(self, paths: Sequence[str | Path]) -> None:
        if not paths:
            raise ProbekitError("no cache given: pass --cache FILE [FILE ...]")
        self.caches: list[FeatureCache] = []
        try:
            for path in paths:
                cache = FeatureCache(path)
                self.caches.append(cache)
                cache.require_complete()
            self._check_same_work()
        except BaseException:
            self.close()
            raise
        first = self.caches[0]
        self.attrs = first.attrs
        self.cells = cell_infos(first)
        self.class_names = first.class_names
        self.splits = [s for s in ("train", "val", "test") if any(s in c.splits for c in self.caches)]
        self._parts = {split: [c for c in self.caches if split in c.splits] for split in self.splits}
        for split, parts in self._parts.items():
            ids = np.concatenate([c.index(split) for c in parts])
            if len(np.unique(ids)) != len(ids):
                raise ProbekitError(
                    f"the {split} split appears in {len(parts)} caches with overlapping samples: give each sample once"
                )

    def _check_same_work(self) -> None:
        first = self.caches[0]
        for other in self.caches[1:]:
            a, b = first.attrs, other.attrs
            differing = [word for key, word in _SAME_WORK.items() if a.get(key) != b.get(key)]
            if first.timesteps != other.timesteps:
                differing.append(f"grid ({first.timesteps} vs {other.timesteps})")
            if [l.name for l in first.layers] != [l.name for l in other.layers]:
                differing.append("layers")
            if first.class_names != other.class_names:
                differing.append("class names")
            if differing:
                raise ProbekitError(
                    f"{first.path} and {other.path} come from different extractions (they differ in "
                    f"{', '.join(differing)}): probe them separately"
                )

    def labels(self, split: str) -> np.ndarray:
        return np.concatenate([c.labels(split) for c in self._parts[split]])

    def index(self, split: str) -> np.ndarray:
        return np.concatenate([c.index(split) for c in self._parts[split]])

    def features(self, split: str, cell: Cell, draws: str = "mean") -> np.ndarray:
        """(N, D) clean-image features of ``split`` (mean over draws, or draw 0 with "single")."""
        parts = [c.features(split, cell[1], cell[0], draws=draws) for c in self._parts[split]]
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    def row_chunks(
        self, split: str, cell: Cell, draws: str = "mean", block_bytes: int = 16 << 20, *, check: bool = True
    ) -> Iterator[tuple[int, np.ndarray]]:
        """(first row, float32 block) over the caches holding ``split``, rows numbered as in
        :meth:`labels` (see :meth:`FeatureCache.row_chunks`; "slots" blocks are (S, b, D)).
        """
        offset = 0
        for cache in self._parts[split]:
            for start, rows in cache.row_chunks(
                split, cell[1], cell[0], draws=draws, block_bytes=block_bytes, check=check
            ):
                yield offset + start, rows
            offset += len(cache.labels(split))

    def fill(
        self,
        split: str,
        cell: Cell,
        targets: Sequence[tuple[np.ndarray, np.ndarray]],
        draws: str = "mean",
        use_views: int | None = None,
        block_bytes: int = 16 << 20,
    ) -> None:
        """Read one cell of ``split`` straight into preallocated float32 arrays, block by block.

        ``targets``: (out, positions): ``out[i] = row positions[i]`` (``out[:, i]`` for
        ``draws="slots"``); positions ascending. No whole-cell temporary is made; the blocks read
        are about ``block_bytes`` each.
        """
        keep = self.slots(use_views) if draws == "slots" else None
        for start, rows in self.row_chunks(split, cell, draws, block_bytes):
            stop = start + rows.shape[-2]
            for out, positions in targets:
                lo, hi = np.searchsorted(positions, [start, stop])
                if hi > lo:
                    local = positions[lo:hi] - start
                    if draws == "slots":
                        out[:, lo:hi] = rows[:keep, local]
                    else:
                        out[lo:hi] = rows[local]

    def train_slots(self, split: str, cell: Cell, use_views: int | None = None) -> np.ndarray:
        """(S, N, D) features of every sampled (view, draw) slot of ``split`` (of its first
        ``use_views`` augmented views when given).
        """
        keep = self.slots(use_views)
        parts = [c.train_slots(split, cell[1], cell[0])[:keep] for c in self._parts[split]]
        return parts[0] if len(parts) == 1 else np.concatenate(parts, axis=1)

    def slots(self, use_views: int | None = None) -> int:
        """Slots a sampling probe draws from per train image."""
        first = self.caches[0]
        if use_views is not None and not 1 <= use_views <= first.views:
            raise ProbekitError(
                f"--use-views {use_views}: {first.path} holds {first.views} augmented views; use 1..{first.views}"
                if first.views
                else f"--use-views needs a cache extracted with --views; {first.path} has none"
            )
        views = use_views if use_views is not None else first.views
        return first.draws * (views if views > 0 else 1)

    def cell_bytes(self, cell: Cell, train_slots: int = 1) -> int:
        """float32 bytes of one cell's features as probed: ``train_slots`` rows per train image,
        one per image of the other splits.
        """
        width = self.caches[0].width(cell[1])
        rows = sum(len(self.labels(split)) * (train_slots if split == "train" else 1) for split in self.splits)
        return 4 * width * rows

    def close(self) -> None:
        for cache in self.caches:
            cache.close()

    def __enter__(self) -> CacheGroup:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()
