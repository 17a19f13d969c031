"""Probes of one cell too large for memory: the train rows are read from disk in blocks, every pass.

``linear``: the objective of :mod:`probekit.probes.linear` is a sum over rows, so its value and
gradient are sums of per-block products; each L-BFGS evaluation is one pass over the blocks, and
the solver (:func:`probekit.probes.linear.lbfgs`), its stopping rule and its preconditioner are
those of the in-memory probe. Standardisation takes one more pass (float64 sums), and the
preconditioner reads the same 4096 evenly spaced rows the in-memory probe samples.

``knn``: the query sets (val, test) stay in memory; each train block's top-k neighbours of every
query (ranked by similarity, then train index, as :mod:`probekit.probes.knn` ranks them) are
merged into the running top-k, so one pass over the train rows gives the neighbours of the
in-memory rule. A centred kNN takes one pass more for the train mean.

Memory: one block of rows (``TrainRows``), its (K, rows) logits or (1024, rows) similarities,
the query sets, and the solver state; never the cell.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from probekit.probes.knn import top_neighbours, unit_rows, weighted_votes
from probekit.probes.lbfgs import (
    CONSTANT_STD,
    PRECONDITION_MIN_ROWS_PER_FEATURE,
    PRECONDITION_ROWS,
    Problem,
    lbfgs,
)
from probekit.probes.linear import LinearHead, LinearProbeConfig, predict_linear_grid


@dataclass
class TrainRows:
    """The train rows of one cell, readable block by block from disk.

    ``blocks()`` yields consecutive float32 (b, C) blocks covering rows 0..n-1 in order (the
    same order as the labels); ``passes`` counts how often they were read.
    """

    n: int
    width: int
    blocks_fn: Callable[[], Iterator[np.ndarray]]
    passes: int = 0

    def blocks(self) -> Iterator[np.ndarray]:
        self.passes += 1
        return self.blocks_fn()

    def rows(self, positions: np.ndarray) -> np.ndarray:
        """float32 (len(positions), C) rows at ascending ``positions`` (one pass)."""
        out = np.empty((len(positions), self.width), dtype=np.float32)
        start = 0
        for block in self.blocks():
            lo, hi = np.searchsorted(positions, [start, start + len(block)])
            out[lo:hi] = block[positions[lo:hi] - start]
            start += len(block)
        return out


@dataclass(eq=False)
class _StreamedProblem(Problem):
    """One cell's :class:`~probekit.probes.linear.Problem` whose features stay on disk."""

    source: TrainRows = field(default=None)  # type: ignore[assignment]

    def __post_init__(self) -> None:  # no (G, K, N) buffers: evaluation works block by block
        pass

    @property
    def width(self) -> int:
        return self.source.width

    @property
    def device(self) -> torch.device:
        return self.mean.device

    @classmethod
    def stream(
        cls,
        key: object,
        source: TrainRows,
        labels: torch.Tensor,
        num_classes: int,
        device: torch.device,
        precondition: bool | str = "auto",
    ) -> _StreamedProblem:
        """Mean (float64 sums, one pass) and std (of the float32-centred rows, one pass)."""
        n, width = source.n, source.width
        if precondition == "auto":
            precondition = n >= PRECONDITION_MIN_ROWS_PER_FEATURE * width
        total = np.zeros(width, dtype=np.float64)
        for block in source.blocks():
            total += block.sum(axis=0, dtype=np.float64)
        mean = torch.from_numpy(total / n).float()
        squares = torch.zeros(width, dtype=torch.float64)
        for block in source.blocks():
            centred = torch.from_numpy(block) - mean
            squares += torch.square(centred).sum(dim=0, dtype=torch.float64)
        s = (squares / n).sqrt().float()
        std = torch.where(s < CONSTANT_STD, torch.ones_like(s), s)
        problem = cls(
            [key],
            torch.empty(0),
            mean[None].to(device),
            std[None].to(device),
            labels,
            num_classes,
            bool(precondition),
            source=source,
        )
        problem.full_var = (squares / n / torch.square(std.double())).to(device)
        return problem

    def standardised(self, block: np.ndarray) -> torch.Tensor:
        """(1, C, b): a block standardised as the in-memory probe standardises its stack."""
        x = torch.from_numpy(block).to(self.device).T[None]
        return (x - self.mean[:, :, None]) / self.std[:, :, None]

    def set_C(self, C: float) -> None:
        n, width = self.source.n, self.width
        self.l2 = 1.0 / (C * n)
        if not self.preconditioned:
            return
        if not hasattr(self, "_cov"):
            self._cov = self._sample_covariance()
        cov = self._cov.clone()
        sample_var = cov.diagonal().clone()
        scale = torch.where(
            sample_var > 0, (self.full_var / sample_var.clamp(min=1e-300)).sqrt(), torch.zeros_like(sample_var)
        )
        cov.mul_(scale[:, None]).mul_(scale[None, :])
        cov.diagonal().copy_(self.full_var)
        m = cov.div_(2)
        m.diagonal().add_(self.l2)
        factor = torch.linalg.cholesky(m)
        del cov, m
        identity = torch.eye(width, dtype=torch.float64, device=self.device)
        self.chol_inv = torch.linalg.solve_triangular(factor, identity, upper=False).float()[None]

    def _sample_covariance(self) -> torch.Tensor:
        """(C, C) float64 second moment of the standardised rows the in-memory probe samples
        (the same evenly spaced rows), summed 512 rows at a time: the float64 copy of the whole
        sample is never held, and it does not depend on C, so it is computed once.
        """
        n = self.source.n
        rows = torch.linspace(0, n - 1, min(n, PRECONDITION_ROWS)).long().numpy()
        # standardised in place (the same float32 operations as :meth:`standardised`), row-major
        sample = torch.from_numpy(self.source.rows(rows)).to(self.device)
        sample.sub_(self.mean).div_(self.std)
        cov = torch.zeros((self.width, self.width), dtype=torch.float64, device=self.device)
        for lo in range(0, len(sample), 512):
            part = sample[lo : lo + 512].double()
            cov.addmm_(part.T, part)
        return cov.div_(len(rows))

    def evaluate(self, theta: torch.Tensor, active: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """F and its gradient, as :meth:`Problem.evaluate`, summed over blocks read from disk."""
        n = self.source.n
        f = torch.full((1,), float("nan"), dtype=torch.float64, device=theta.device)
        grad = torch.zeros_like(theta)
        if not bool(active[0]):
            return f, grad
        weight_t, bias = self.split(theta)
        g_weight_t, g_bias = self.split(grad)
        ce = torch.zeros((), dtype=torch.float64, device=theta.device)
        start = 0
        for block in self.source.blocks():
            xt = self.standardised(block)  # (1, C, b)
            labels = self.labels[start : start + len(block)].view(1, 1, -1)
            start += len(block)
            logits = torch.baddbmm(bias, weight_t, xt)  # (1, K, b)
            logits.sub_(logits.amax(dim=1, keepdim=True))
            picked = logits.gather(1, labels)
            total = logits.exp_().sum(dim=1, keepdim=True)
            ce += (total.log() - picked).sum(dtype=torch.float64)
            residual = logits.div_(total)
            residual.scatter_add_(1, labels, torch.full_like(picked, -1.0))
            g_weight_t.baddbmm_(residual, xt.transpose(1, 2))
            g_bias.add_(residual.sum(dim=2, keepdim=True))
        g_weight_t.div_(n).add_(weight_t, alpha=self.l2)
        g_bias.div_(n)
        f[0] = ce / n + torch.square(weight_t).sum(dtype=torch.float64) * (self.l2 / 2)
        return f, grad


@torch.no_grad()
def fit_linear_streamed(
    key: object,
    source: TrainRows,
    y_train: np.ndarray,
    Cs: Sequence[float],
    config: LinearProbeConfig,
    *,
    device: str | torch.device = "cpu",
) -> dict[float, LinearHead]:
    """The heads :func:`probekit.probes.linear.fit_linear_path` fits for one cell, C -> head,
    with the features read from ``source`` on every evaluation.
    """
    device = torch.device(device)
    num_classes = config.num_classes or int(y_train.max()) + 1
    labels = torch.from_numpy(np.asarray(y_train, dtype=np.int64)).to(device)
    problem = _StreamedProblem.stream(key, source, labels, num_classes, device, config.precondition)
    heads: dict[float, LinearHead] = {}
    theta = None
    for c in sorted({float(c) for c in Cs}):
        problem.set_C(c)
        fitted, theta = lbfgs(problem, config, False, theta)
        heads[c] = fitted[key]
    return {float(c): heads[float(c)] for c in Cs}


def predict_linear_streamed(
    heads: Mapping[float, LinearHead], key: object, queries: np.ndarray
) -> dict[float, np.ndarray]:
    """Predictions of every C's head on in-memory ``queries`` (N_q, C)."""
    return {c: predict_linear_grid({key: head}, {key: queries})[key] for c, head in heads.items()}


@torch.no_grad()
def knn_streamed(
    source: TrainRows,
    y_train: np.ndarray,
    queries: Mapping[str, np.ndarray],
    ks: Sequence[int],
    temperatures: Sequence[float],
    *,
    centre: bool = False,
    num_classes: int | None = None,
    chunk_size: int = 1024,
) -> dict[tuple[int, float], dict[str, np.ndarray]]:
    """``knn_sweep``'s predictions for one cell, {(k, T): {query set: (N_q,) int64}}, with the
    train rows read block by block (one pass, two with ``centre``).
    """
    ks, temperatures = list(dict.fromkeys(int(k) for k in ks)), list(dict.fromkeys(float(t) for t in temperatures))
    y = torch.from_numpy(np.asarray(y_train, dtype=np.int64))
    num_classes = num_classes or int(y.max()) + 1
    k_max = min(max(ks), source.n)
    mean = None
    if centre:
        total = np.zeros(source.width, dtype=np.float64)
        for block in source.blocks():
            total += block.sum(axis=0, dtype=np.float64)
        mean = torch.from_numpy(total / source.n).float()
    units = {
        name: unit_rows(torch.from_numpy(np.ascontiguousarray(q, dtype=np.float32)), mean)
        for name, q in queries.items()
    }
    best = {
        name: (torch.full((len(q), 0), -math.inf), torch.zeros((len(q), 0), dtype=torch.int64))
        for name, q in units.items()
    }
    start = 0
    for block in source.blocks():
        bank = unit_rows(torch.from_numpy(block), mean)[None]  # (1, b, C)
        m = min(k_max, len(block))
        for name, q in units.items():
            top_sims, top_idx = [], []
            for lo in range(0, len(q), chunk_size):
                sim, idx = top_neighbours(q[None, lo : lo + chunk_size], bank, None, m)
                top_sims.append(sim[0])
                top_idx.append(idx[0] + start)
            # Running neighbours hold lower train indices than this block's: a stable sort by
            # similarity keeps ties in index order, as the in-memory ranking does.
            sims = torch.cat([best[name][0], torch.cat(top_sims)], dim=1)
            idx = torch.cat([best[name][1], torch.cat(top_idx)], dim=1)
            order = torch.sort(sims, dim=1, descending=True, stable=True).indices[:, :k_max]
            best[name] = (sims.gather(1, order), idx.gather(1, order))
        start += len(block)
    out: dict[tuple[int, float], dict[str, np.ndarray]] = {(k, t): {} for k in ks for t in temperatures}
    for name, (sims, idx) in best.items():
        votes = weighted_votes(sims[None], y[idx][None], ks, temperatures, num_classes)
        for kt, predictions in votes.items():
            out[kt][name] = predictions[0].numpy().astype(np.int64)
    return out


__all__ = ["TrainRows", "fit_linear_streamed", "knn_streamed", "predict_linear_streamed"]
