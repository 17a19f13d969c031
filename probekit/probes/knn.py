"""Weighted cosine k-nearest-neighbour probe (the InstDisc / DINO evaluation rule).

For each query sample, take the k train samples with the highest cosine similarity s, add
``exp(s / temperature)`` to each neighbour's class, and predict the class with the largest total.
No training, so it measures the geometry of the features rather than their linear separability.

:func:`knn_sweep` computes the similarities once per cell, keeps the top ``max(ks)`` neighbours,
and scores every (k, temperature) pair and every query set (val, test) from them, so a sweep costs
one pass of similarity products. The rule, exactly:

* **Cosine.** Rows are scaled to unit L2 norm; a zero row stays zero, so its cosine with every
  row is 0 (it is neither near nor far). With ``centre=True`` the train mean is subtracted from
  train and query rows first (see :func:`knn_sweep`).
* **Neighbour ties.** Neighbours are ranked by similarity, then by train index: of two train rows
  with equal similarity the one listed first ranks higher, also at the k-th place.
* **Vote ties.** The lowest class index among the classes with the largest total wins.
* **Precision.** Similarities are float32 products. On a GPU that runs bf16 / fp16 natively,
  candidates may be found in low precision and re-ranked exactly in float32; a row whose
  candidates cannot be proven to contain the float32 top k is recomputed in float32, so the
  neighbours are those of the float32 rule. (Two float32 dot products that differ only in their
  last bit may still order differently between devices, as in any float32 kNN.)
"""

from __future__ import annotations

import os
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from probekit.core.errors import ProbekitError
from probekit.core.threads import one_thread
from probekit.core.verbosity import progress_enabled
from probekit.probes._inputs import as_float32_tensor, check_probe_inputs, resolve_num_classes
from probekit.probes.metrics import CellScore, score_predictions

K = TypeVar("K", bound=Hashable)

#: similarity precisions of :func:`knn_sweep` (``auto``: low precision only on a GPU that runs it natively)
SIMILARITY_CHOICES = ("auto", "fp32", "bf16", "fp16")


@dataclass(frozen=True)
class KnnConfig:
    """Settings of the weighted kNN vote.

    Attributes:
        k: neighbours per test sample (capped at the number of train samples).
        temperature: softness of the vote; 0.07 is DINO's value for cosine similarities.
        num_classes: vote bins; None means the largest label in y_train / y_test + 1.
        chunk_size: test samples per similarity block; memory is chunk_size x N_train floats.
        centre: subtract the train mean before the cosine (see :func:`knn_sweep`).
    """

    k: int = 20
    temperature: float = 0.07
    num_classes: int | None = None
    chunk_size: int = 1024
    centre: bool = False

    def __post_init__(self) -> None:
        if self.k < 1 or self.chunk_size < 1 or self.temperature <= 0:
            raise ProbekitError("knn probe: need k >= 1, chunk_size >= 1 and temperature > 0")


def knn_probe(
    train: Mapping[K, np.ndarray],
    y_train: np.ndarray,
    test: Mapping[K, np.ndarray],
    y_test: np.ndarray,
    config: KnnConfig = KnnConfig(),
    *,
    device: str | torch.device = "cpu",
    progress: bool = False,
) -> dict[K, CellScore]:
    """Score every cell with the weighted cosine kNN rule; shapes as in ``linear_probe_grid``."""
    y_train, y_test = check_probe_inputs(train, y_train, test, y_test)
    num_classes = resolve_num_classes(config.num_classes, y_train, y_test)
    sweep = knn_sweep(
        train,
        y_train,
        {"test": test},
        [config.k],
        [config.temperature],
        centre=config.centre,
        num_classes=num_classes,
        device=device,
        chunk_size=config.chunk_size,
        progress=progress,
    )
    predictions = sweep[(config.k, config.temperature)]
    return {key: score_predictions(y_test, predictions[key]["test"]) for key in train}


def knn_sweep(
    train: Mapping[K, np.ndarray],
    y_train: np.ndarray,
    queries: Mapping[str, Mapping[K, np.ndarray]],
    ks: Sequence[int],
    temperatures: Sequence[float],
    *,
    centre: bool = False,
    num_classes: int | None = None,
    device: str | torch.device = "cpu",
    chunk_size: int = 1024,
    similarity: str = "auto",
    progress: bool = False,
) -> dict[tuple[int, float], dict[K, dict[str, np.ndarray]]]:
    """KNN predictions for every (k, temperature), cell and query set, from one top-``max(ks)`` pass.

    Args:
        train: cell -> (N_train, C) features; y_train: (N_train,) integer labels.
        queries: query-set name (e.g. ``val``, ``test``) -> cell -> (N_q, C) features, same cells
            and widths as ``train``.
        ks: neighbour counts; each is capped at N_train (the result key keeps the value asked).
        temperatures: vote temperatures, > 0 (0.07 is DINO's).
        centre: subtract the train mean (per cell, computed in float64) from train and query rows
            before the cosine. The cosine then measures angles around the data's centre rather
            than around the origin, which matters for post-ReLU / post-SiLU features whose rows all
            share a large common component (their raw cosines are all close to 1).
        num_classes: vote bins; None means ``max(y_train) + 1``.
        device: where the products run; on CUDA, cells of one width are batched into one product.
        chunk_size: query rows per similarity block (memory: chunk_size x N_train floats per cell).
        similarity: ``fp32`` computes every product in float32; ``bf16`` / ``fp16`` find candidates
            in that precision and re-rank them exactly in float32; ``auto`` uses a low precision
            only where :func:`knn_similarity_precision` says (a GPU that runs it natively).
        progress: show a progress bar over cells.

    Returns:
        ``{(k, temperature): {cell: {query_set: (N_q,) int64 predictions}}}``.
    """
    y_train = _labels(y_train, train)
    ks, temperatures = _check_sweep(ks, temperatures, chunk_size)
    for name, cells in queries.items():
        if cells.keys() != train.keys():
            raise ProbekitError(f"query set {name!r} must hold the same cells as train")
        for key in cells:
            x = cells[key]
            if not isinstance(x, np.ndarray) or x.ndim != 2 or x.shape[1] != train[key].shape[1]:
                raise ProbekitError(
                    f"query set {name!r} cell {key!r}: expected a 2-D array with {train[key].shape[1]} columns"
                )
            if not np.isfinite(x).all():
                raise ProbekitError(f"query set {name!r} cell {key!r} holds NaN or inf features; re-extract the cell")
    needed = int(y_train.max()) + 1
    if num_classes is None:
        num_classes = needed
    elif num_classes < needed:
        raise ProbekitError(f"num_classes={num_classes} but y_train goes up to {needed - 1}; raise num_classes")
    device = torch.device(device)
    labels = torch.from_numpy(y_train).to(device)
    n_train = len(y_train)
    k_max = min(max(ks), n_train)
    low = knn_similarity_precision(similarity, device, k_max)

    out: dict[tuple[int, float], dict[K, dict[str, np.ndarray]]] = {(k, t): {} for k in ks for t in temperatures}
    bar = tqdm(total=len(train), desc="knn probe", unit="cell", disable=not progress_enabled(progress))
    for group in _cell_groups(train, device, chunk_size):
        banks, means = [], []
        for key in group:
            raw = as_float32_tensor(train[key]).to(device)
            mean = raw.double().mean(dim=0).float() if centre else None
            banks.append(unit_rows(raw, mean))
            means.append(mean)
        bank = torch.stack(banks)  # (G, N, C)
        bank_low = bank.to(low) if low is not None else None
        for name, cells in queries.items():
            sims, indices = [], []
            for start in range(0, len(cells[group[0]]), chunk_size):
                q = torch.stack(
                    [
                        unit_rows(as_float32_tensor(cells[key][start : start + chunk_size]).to(device), mean)
                        for key, mean in zip(group, means)
                    ]
                )  # (G, B, C)
                top_sim, top_idx = top_neighbours(q, bank, bank_low, k_max)
                sims.append(top_sim)
                indices.append(top_idx)
            # One vote over the whole query set (G, N_q, k_max): few large ops rather than many
            # small ones, which on a busy CPU each pay a thread-synchronisation delay.
            with one_thread(device.type == "cpu"):
                votes = weighted_votes(
                    torch.cat(sims, dim=1), labels[torch.cat(indices, dim=1)], ks, temperatures, num_classes
                )
            for kt, predictions in votes.items():
                predictions = predictions.cpu().numpy()  # (G, N_q)
                for g, key in enumerate(group):
                    out[kt].setdefault(key, {})[name] = predictions[g].astype(np.int64)
        bar.update(len(group))
    bar.close()
    return out


def knn_similarity_precision(similarity: str, device: torch.device, k: int = 20) -> torch.dtype | None:
    """The low-precision dtype that candidate search uses on ``device``, or None for pure float32.

    ``auto`` decides from the hardware, never from a timing: on a CUDA GPU that runs bf16 (else
    fp16: unit vectors cannot overflow fp16) natively, candidates are found in that precision and
    re-ranked exactly in float32; on CPUs it is float32, because the top-k over low-precision
    similarities is slower there than the float32 path even where the bf16 product itself is
    faster (measured on an AVX512-BF16 EPYC; ``experiments/bench_knn.py``). ``k`` is kept for
    callers that pass it; the choice does not depend on it.
    """
    from probekit.core.precision import AUTO_ENV, native_precisions, resolve_precision, torch_dtype

    if similarity not in SIMILARITY_CHOICES:
        raise ProbekitError(f"unknown kNN similarity precision {similarity!r}: use {', '.join(SIMILARITY_CHOICES)}")
    if similarity == "fp32":
        return None
    if similarity != "auto":
        return torch_dtype(resolve_precision(similarity, device))
    if os.environ.get(AUTO_ENV, "").strip():  # auto pinned for every computation
        pinned = resolve_precision("auto", device)
        return None if pinned == "fp32" else torch_dtype(pinned)
    if device.type != "cuda":
        return None
    native = native_precisions(device)
    return next((torch_dtype(name) for name in ("bf16", "fp16") if name in native), None)


def _labels(y_train: np.ndarray, train: Mapping[K, np.ndarray]) -> np.ndarray:
    y = np.asarray(y_train)
    if y.ndim != 1 or len(y) == 0 or not np.issubdtype(y.dtype, np.integer) or y.min() < 0:
        raise ProbekitError("y_train must be a non-empty 1-D array of non-negative integer class indices")
    if not train:
        raise ProbekitError("no cells to probe: the train mapping is empty")
    for key, x in train.items():
        if not isinstance(x, np.ndarray) or x.ndim != 2 or len(x) != len(y) or x.shape[1] == 0:
            raise ProbekitError(f"train[{key!r}] must be a 2-D array with one row per label ({len(y)})")
        if not np.isfinite(x).all():
            raise ProbekitError(f"train[{key!r}] holds NaN or inf features; re-extract the cell")
    return y.astype(np.int64, copy=False)


def _check_sweep(ks: Sequence[int], temperatures: Sequence[float], chunk_size: int) -> tuple[list[int], list[float]]:
    ks, temperatures = list(dict.fromkeys(int(k) for k in ks)), list(dict.fromkeys(float(t) for t in temperatures))
    if not ks or min(ks) < 1:
        raise ProbekitError(f"kNN: every k must be >= 1, got {ks}")
    if not temperatures or min(temperatures) <= 0:
        raise ProbekitError(f"kNN: every temperature must be > 0, got {temperatures}")
    if chunk_size < 1:
        raise ProbekitError(f"kNN: chunk_size must be >= 1, got {chunk_size}")
    return ks, temperatures


def _cell_groups(train: Mapping[K, np.ndarray], device: torch.device, chunk_size: int) -> list[list[K]]:
    """Cells processed together: one at a time on the CPU; on CUDA, cells of one width in batches
    whose banks and similarity blocks fit in a quarter of the free memory.
    """
    keys = list(train)
    if device.type != "cuda":
        return [[key] for key in keys]
    free, _ = torch.cuda.mem_get_info(device)
    by_width: dict[int, list[K]] = {}
    for key in keys:
        by_width.setdefault(train[key].shape[1], []).append(key)
    groups = []
    for width, members in by_width.items():
        n = len(train[members[0]])
        per_cell = 4 * n * (2 * width + 2 * min(chunk_size, n))  # bank (+ low copy) and one block (+ topk)
        size = max(1, int(free // 4 // per_cell))
        groups += [members[i : i + size] for i in range(0, len(members), size)]
    return groups


def unit_rows(rows: torch.Tensor, mean: torch.Tensor | None) -> torch.Tensor:
    """``rows`` (float32), minus ``mean`` when given, scaled to unit L2 norm (zero rows stay zero)."""
    if mean is not None:
        rows = rows - mean
    return F.normalize(rows, dim=-1)


@torch.no_grad()
def top_neighbours(
    q: torch.Tensor, bank: torch.Tensor, bank_low: torch.Tensor | None, k: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``k`` nearest train rows of each query, ranked by (similarity desc, train index asc).

    q (G, B, C) and bank (G, N, C) hold unit rows; returns float32 similarities and int64 indices,
    both (G, B, k). One row beyond k is kept to detect a tie at the k-th place; such rows (rare
    in real features) are re-ranked over all N train rows.
    """
    n = bank.shape[1]
    m = min(k + 1, n)
    if bank_low is None:
        sim = torch.bmm(q, bank.transpose(1, 2))  # (G, B, N) float32 cosines
        top_sim, top_idx = sim.topk(m, dim=2)
        full_row = lambda g, b: sim[g, b]  # noqa: E731
    else:
        top_sim, top_idx, unsure = _low_precision_candidates(q, bank, bank_low, m)
        full_row = lambda g, b: bank[g] @ q[g, b]  # noqa: E731
    with one_thread(q.device.type == "cpu"):
        # topk returns values in descending order; only rows holding equal values need their tied
        # entries put in index order, and only a tie at the k-th place can change which rows are in.
        tied = (top_sim[..., 1:] == top_sim[..., :-1]).any(dim=-1)
        boundary = top_sim[..., k - 1] == top_sim[..., k] if m > k else torch.zeros_like(tied)
        if bank_low is not None:
            boundary |= unsure
        for g, b in (tied & ~boundary).nonzero().tolist():
            top_sim[g, b], top_idx[g, b] = _index_order(top_sim[g, b], top_idx[g, b])
        for g, b in boundary.nonzero().tolist():
            row = full_row(g, b)
            order = torch.sort(row, descending=True, stable=True).indices[:m]  # stable: lower index first on ties
            top_sim[g, b], top_idx[g, b] = row[order], order
        return top_sim[..., :k].contiguous(), top_idx[..., :k].contiguous()


def _index_order(sim: torch.Tensor, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Candidates of one row by similarity descending, ties by index ascending (two stable sorts)."""
    idx, by_index = idx.sort()
    sim = sim[by_index]
    sim, by_sim = sim.sort(descending=True, stable=True)
    return sim, idx[by_sim]


def _low_precision_candidates(
    q: torch.Tensor, bank: torch.Tensor, bank_low: torch.Tensor, m: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Top ``m`` by exact float32 similarity among candidates found with low-precision products.

    Returns (similarities, indices, unsure): a row is *unsure* when a train row outside its
    candidates could still reach the m-th float32 similarity, given the low precision's error
    bound; such rows must be recomputed in float32.
    """
    n, width = bank.shape[1], bank.shape[2]
    dtype = bank_low.dtype
    unit = 2.0**-8 if dtype == torch.bfloat16 else 2.0**-11
    # |low - exact| for unit rows: input rounding (2u + u^2), output rounding (u), fp32
    # accumulation (width * 2^-24) and fp16 subnormals (width * 2^-24); doubled for safety.
    bound = 2 * (3 * unit + unit * unit + width * 2.0**-23)
    candidates = min(n, 2 * m + 16)
    sim_low = torch.bmm(q.to(dtype), bank_low.transpose(1, 2))
    low_top, cand_idx = sim_low.topk(candidates, dim=2)
    # Exact float32 similarity of each candidate: (G, B, M, C) x (G, B, C).
    picked = torch.gather(bank, 1, cand_idx.flatten(1)[..., None].expand(-1, -1, width)).view(*cand_idx.shape, width)
    exact = torch.einsum("gbmc,gbc->gbm", picked, q)
    top_sim, pos = exact.topk(m, dim=2)
    top_idx = cand_idx.gather(2, pos)
    if candidates == n:
        unsure = torch.zeros(top_sim.shape[:2], dtype=torch.bool, device=q.device)
    else:
        unsure = low_top[..., -1].float() + bound >= top_sim[..., -1]
    return top_sim, top_idx, unsure


def weighted_votes(
    top_sim: torch.Tensor, top_labels: torch.Tensor, ks: list[int], temperatures: list[float], num_classes: int
) -> dict[tuple[int, float], torch.Tensor]:
    """(G, B) predicted classes per (k, temperature) from ranked neighbours (G, B, k_max).

    Weights are ``exp((s - s_1) / T)`` with s_1 the nearest neighbour's similarity: the common
    factor ``exp(-s_1 / T)`` leaves the vote unchanged and keeps small temperatures finite.
    """
    shifted = top_sim - top_sim[..., :1]
    k_used = {k: min(k, top_sim.shape[-1]) for k in ks}
    # contiguous slices: scatter_add_ on strided views takes a far slower path on the CPU
    labels = {k: top_labels[..., : k_used[k]].contiguous() for k in ks}
    out = {}
    for t in temperatures:
        weights = (shifted / t).exp()  # the weights of a prefix are the prefix of the weights
        for k in ks:
            votes = torch.zeros((*top_sim.shape[:2], num_classes), device=top_sim.device)
            votes.scatter_add_(2, labels[k], weights[..., : k_used[k]].contiguous())
            out[(k, t)] = votes.argmax(dim=2)  # the first (lowest) class on ties
    return out
