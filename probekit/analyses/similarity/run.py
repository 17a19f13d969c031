"""FeatureCache (and a reference cache of the same images) -> similarity rows of the tidy table.

Memory is bounded by a seeded subsample: at most ``samples`` images of one split (uniformly
drawn without replacement with ``numpy.random.default_rng(seed)``, kept in their cache order)
enter every score, so each kernel is ``samples x samples``. The rows record that number in
``n_eval``.

Rows (results-table columns, plus the extra columns below)::

    probe      "similarity"
    metric     "cka" (debiased linear CKA), "cknna", "mutual_knn"
    split      the split the images came from
    value      the score (unit-free, 1 = same representation)
    params     "k=10": the neighbours of cknna / mutual_knn (empty for cka)
    ci_low/high  empty;  n_train 0;  n_eval the number of images scored
    reference  model id of the reference cache, or "self" for the cell x cell CKA matrix
    ref_t, ref_layer, ref_depth   the reference cell (for "self": the other cell of the cache)

The cell x cell matrix is stored once per unordered pair (the diagonal included).
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from probekit.analyses.similarity.metrics import (
    cka_matrix,
    cknna_from_masks,
    hsic_unbiased,
    knn_mask,
    l2_normalise,
    prh_preprocess,
    u_center,
)
from probekit.core.errors import ProbekitError
from probekit.core.types import CellInfo
from probekit.evaluate.results import COLUMNS, with_kind
from probekit.features.cache import FeatureCache
from probekit.features.group import cell_infos

log = logging.getLogger(__name__)

PROBE = "similarity"
METRICS = ("cka", "cknna", "mutual_knn")
SELF = "self"
EXTRA_COLUMNS = ("reference", "ref_t", "ref_layer", "ref_depth", "preprocess", "draws", "massive_dropped")
#: ``raw``: the features as cached (as the probes see them); ``prh``: clipped at the 0.95 quantile and
#: rows L2-normalised, as the platonic-representation and REPA code does before every metric
PREPROCESS = ("raw", "prh")
#: ``mean``: each image's noise draws averaged (as the probes score test images); ``single``: draw 0 only
DRAWS = ("mean", "single")


@dataclass
class SimilarityConfig:
    """``samples``: images scored (seeded subsample); ``k``: neighbours of cknna and mutual_knn;
    ``max_memory``: bytes for the cell x cell CKA matrix's kernels; ``reference_t`` /
    ``reference_layer`` pick the reference cell when the reference cache holds several.
    """

    k: int = 10
    samples: int = 1000
    seed: int = 0
    split: str = "test"
    matrix: bool = True
    max_memory: int = 2**30
    reference_t: int | None = None
    reference_layer: str | None = None
    preprocess: str = "raw"
    #: drop each cell's massive channels (probekit.features.massive) first, in the cache and the reference
    drop_massive: bool = False
    draws: str = "mean"


def _massive(cache: FeatureCache) -> dict[tuple[int, str], np.ndarray]:
    from probekit.features.massive import cache_massive

    return cache_massive(cache)


def _channels(cache: FeatureCache, layer: str) -> int:
    return next(info.channels for info in cache.layers if info.name == layer)


def _without(
    x: np.ndarray, massive: dict[tuple[int, str], np.ndarray], cell: tuple[int, str], channels: int
) -> np.ndarray:
    """``x`` without the columns of the cell's massive channels (as is when it has none)."""
    from probekit.features.massive import keep_columns

    found = massive.get(cell)
    if found is None or not len(found):
        return x
    width = x.shape[1]
    return x[:, keep_columns(width, channels if channels and width % channels == 0 else width, found)]


def _open(path: str | Path, split: str) -> FeatureCache:
    cache = FeatureCache(path)
    try:
        cache.require_complete()
        if split not in cache.splits:
            raise ProbekitError(f"{path} has no {split!r} split (it has {', '.join(cache.splits)}): choose --split")
    except BaseException:
        cache.close()
        raise
    return cache


def subsample(n: int, samples: int, seed: int) -> np.ndarray:
    """Sorted positions of ``min(n, samples)`` of ``n`` items, drawn with ``default_rng(seed)``."""
    if samples < 4:
        raise ProbekitError(f"--samples must be at least 4, got {samples}")
    if n <= samples:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=samples, replace=False))


def match_reference(cache: FeatureCache, reference: FeatureCache, split: str, positions: np.ndarray) -> np.ndarray:
    """Positions in ``reference`` of the images at ``positions`` of ``cache`` (matched by sample id).

    Refuses caches of different datasets, and images missing from the reference or labelled
    differently there, naming how many.
    """
    a, b = cache.attrs.get("dataset"), reference.attrs.get("dataset")
    if a != b:
        raise ProbekitError(
            f"{cache.path} holds dataset {a!r} but the reference {reference.path} holds {b!r}: "
            "extract the reference from the same images"
        )
    ids, labels = cache.index(split), cache.labels(split)
    ref_ids, ref_labels = reference.index(split), reference.labels(split)
    where = {int(i): p for p, i in enumerate(ref_ids)}
    missing = [int(i) for i in ids if int(i) not in where]
    if missing:
        raise ProbekitError(
            f"{len(missing)} of the {len(ids)} {split} images of {cache.path} are not in the reference "
            f"{reference.path} (e.g. sample id {missing[0]}): extract the reference with the same --data, "
            "--train-limit/--test-limit and --seed"
        )
    ref_positions = np.array([where[int(i)] for i in ids])
    wrong = np.flatnonzero(ref_labels[ref_positions] != labels)
    if len(wrong):
        raise ProbekitError(
            f"{len(wrong)} {split} images carry different labels in {cache.path} and {reference.path} "
            f"(e.g. sample id {int(ids[wrong[0]])}): they are not the same images"
        )
    return ref_positions[positions]


def _reference_cell(reference: FeatureCache, config: SimilarityConfig) -> CellInfo:
    cells = list(cell_infos(reference).values())
    if config.reference_t is None and config.reference_layer is None:
        if len(cells) == 1:
            return cells[0]
        raise ProbekitError(
            f"the reference {reference.path} holds {len(cells)} cells: pick one with "
            "--reference-t T --reference-layer NAME"
        )
    chosen = [
        c
        for c in cells
        if (config.reference_t is None or c.t == config.reference_t)
        and (config.reference_layer is None or c.layer == config.reference_layer)
    ]
    if len(chosen) != 1:
        raise ProbekitError(
            f"--reference-t {config.reference_t} --reference-layer {config.reference_layer} select "
            f"{len(chosen)} cells of {reference.path} (its grid: {reference.timesteps}; layers: "
            f"{', '.join(l.name for l in reference.layers)}): name exactly one"
        )
    return chosen[0]


def _row(
    cache_attrs: dict,
    cell: CellInfo,
    metric: str,
    value: float,
    n: int,
    split: str,
    reference: str,
    ref: CellInfo,
    k: int | None,
) -> dict[str, object]:
    return {
        "model": str(cache_attrs.get("model_id")),
        "dataset": str(cache_attrs.get("dataset")),
        **asdict(cell),  # t, sigma, logsnr, alpha_bar, layer, stage, depth
        "probe": PROBE,
        "params": "" if k is None else f"k={k}",
        "metric": metric,
        "split": split,
        "value": value,
        "ci_low": math.nan,
        "ci_high": math.nan,
        "n_train": 0,
        "n_eval": n,
        "reference": reference,
        "ref_t": ref.t,
        "ref_layer": ref.layer,
        "ref_depth": ref.depth,
    }


def _prepared(x: np.ndarray, config: SimilarityConfig) -> np.ndarray:
    return prh_preprocess(x) if config.preprocess == "prh" else x


def _finite(features: np.ndarray, cell: CellInfo) -> bool:
    if np.isfinite(features).all():
        return True
    log.warning("cell t=%s %s skipped: NaN/inf features", cell.t, cell.layer)
    return False


def similarity_table(
    cache_path: str | Path, reference_path: str | Path | None = None, config: SimilarityConfig = SimilarityConfig()
) -> pd.DataFrame:
    """Similarity rows for every cell of ``cache_path`` (see the module docstring).

    Against ``reference_path`` (a cache of the same images, one cell or one chosen with
    ``reference_t`` / ``reference_layer``): cka, cknna and mutual_knn per cell. With
    ``config.matrix``: the debiased linear CKA between every pair of cells of the cache.
    """
    if config.preprocess not in PREPROCESS:
        raise ProbekitError(f"unknown --preprocess {config.preprocess!r}: use {' or '.join(PREPROCESS)}")
    if config.draws not in DRAWS:
        raise ProbekitError(f"unknown --draws {config.draws!r}: use {' or '.join(DRAWS)}")
    if reference_path is None and not config.matrix:
        raise ProbekitError("nothing to compute: give --reference, or leave the cell x cell matrix on")
    if config.k < 2:
        raise ProbekitError(f"--k must be at least 2 (CKNNA needs 2 neighbours), got {config.k}")
    rows: list[dict[str, object]] = []
    with _open(cache_path, config.split) as cache:
        attrs = cache.attrs
        cells = list(cell_infos(cache).values())
        positions = subsample(len(cache.labels(config.split)), config.samples, config.seed)
        n = len(positions)
        if config.k > n - 1:
            raise ProbekitError(f"--k {config.k} needs more than {config.k} images; only {n} are scored")
        log.info(
            "similarity over %d %s images (seeded subsample, seed %d) of %s", n, config.split, config.seed, cache_path
        )
        features = {}
        massive = _massive(cache) if config.drop_massive else {}
        for cell in cells:
            x = cache.features(config.split, cell.layer, cell.t, draws=config.draws)[positions]
            x = _without(x, massive, (cell.t, cell.layer), _channels(cache, cell.layer))
            if _finite(x, cell):
                features[(cell.t, cell.layer)] = _prepared(x, config)
        if reference_path is not None:
            with _open(reference_path, config.split) as reference:
                ref_positions = match_reference(cache, reference, config.split, positions)
                ref = _reference_cell(reference, config)
                y = reference.features(config.split, ref.layer, ref.t, draws=config.draws)[ref_positions].astype(
                    np.float64
                )
                if config.drop_massive:
                    y = _without(y, _massive(reference), (ref.t, ref.layer), _channels(reference, ref.layer))
                ref_name = str(reference.attrs.get("model_id"))
            if not np.isfinite(y).all():
                raise ProbekitError(f"the reference cell t={ref.t} {ref.layer} holds NaN/inf features: re-extract it")
            rows += _against_reference(attrs, cells, features, _prepared(y, config), ref, ref_name, n, config)
        if config.matrix:
            kept = [cell for cell in cells if (cell.t, cell.layer) in features]
            matrix = cka_matrix([features[(c.t, c.layer)] for c in kept], max_bytes=config.max_memory)
            for i, a in enumerate(kept):
                for j in range(i, len(kept)):
                    rows.append(_row(attrs, a, "cka", float(matrix[i, j]), n, config.split, SELF, kept[j], None))
    if not rows:
        raise ProbekitError("every cell has NaN/inf features: nothing to compare")
    table = pd.DataFrame(rows)
    table["preprocess"], table["draws"] = config.preprocess, config.draws  # what every number was computed on
    table["massive_dropped"] = config.drop_massive
    ordered = [c for c in COLUMNS if c in table.columns]
    return with_kind(table[ordered + [c for c in table.columns if c not in ordered]], "similarity")


def _against_reference(
    attrs: dict,
    cells: list[CellInfo],
    features: dict,
    y: np.ndarray,
    ref: CellInfo,
    ref_name: str,
    n: int,
    config: SimilarityConfig,
) -> list[dict[str, object]]:
    """cka, cknna and mutual_knn of every cell against the reference features ``y``."""
    # Reference-side kernels and neighbour masks are computed once and reused for every cell.
    ref_u = u_center(y @ y.T)
    ref_uu = float(np.sum(ref_u * ref_u))
    y_unit = l2_normalise(y)
    ref_kernel = y_unit @ y_unit.T
    ref_mask = knn_mask(ref_kernel, config.k)
    ref_align = hsic_unbiased(ref_mask * ref_kernel, ref_mask * ref_kernel)
    rows = []
    for cell in cells:
        x = features.get((cell.t, cell.layer))
        if x is None:
            continue
        x = x.astype(np.float64)
        u = u_center(x @ x.T)
        uu = float(np.sum(u * u))
        cka = float(np.sum(u * ref_u) / np.sqrt(uu * ref_uu)) if uu > 0 and ref_uu > 0 else math.nan
        x_unit = l2_normalise(x)
        kernel = x_unit @ x_unit.T
        mask = knn_mask(kernel, config.k)
        mutual = float((mask * ref_mask).sum(axis=1).mean() / config.k)
        cknna = cknna_from_masks(kernel, ref_kernel, mask, ref_mask, ll=ref_align)
        for metric, value, k in (("cka", cka, None), ("cknna", cknna, config.k), ("mutual_knn", mutual, config.k)):
            rows.append(_row(attrs, cell, metric, value, n, config.split, ref_name, ref, k))
    return rows
