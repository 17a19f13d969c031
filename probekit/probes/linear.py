"""Batched linear probe: scikit-learn's logistic regression, solved for every cell at once.

Each (timestep, layer) cell gets the classifier that :mod:`probekit.probes.logreg` (scikit-learn
``StandardScaler`` + ``LogisticRegression``, lbfgs) fits: multinomial logistic regression on
standardised features minimising

    0.5 * ||W||^2 + C * sum_i CE(x_i W + b, y_i)      (the intercept b is not penalised),

solved here in the equivalent scaled form F = mean_i CE + ||W||^2 / (2 C N) whose gradient is
what the tolerance is checked on (scikit-learn checks the same scaled gradient). The problem is
strictly convex in W, so two solvers that meet the tolerance land on (almost) the same weights,
and the top-1 of the two probes agrees by construction, not by tuning.

Solver: batched L-BFGS with a per-cell backtracking (Armijo) line search. Why L-BFGS:
- it is what scikit-learn runs, with the same stopping rule (max |gradient| <= tol);
- a step needs only the loss and gradient, i.e. two batched matmuls over the features,
  ``torch.baddbmm`` over the G cells of one width, which is where the speed comes from: one pass
  of float32 BLAS serves every cell, instead of a Python/Cython loop of float64 solves;
- Newton-CG would need Hessian-vector products (another pass over the data each) and a per-cell
  CG loop whose iteration counts differ across cells; the L-BFGS two-loop recursion is a few
  vector operations on (G, P) tensors with a per-cell scalar per history entry.
L-BFGS is preconditioned where N_train >= 4 x width (see :class:`_Problem`): its initial inverse
Hessian is the inverse of
Boehning's curvature bound built from each cell's feature covariance (one C x C Cholesky factor
per cell), so correlated features do not slow the solver down.
Every cell keeps its own history, step length and convergence state; a converged cell leaves the
active set, and the loss is only evaluated over contiguous runs of still-active cells (views of
the stacked features, no copies), so it stops costing compute. Cells that reach ``max_iter``, or
whose line search fails before the tolerance, are reported ``converged=False``.

Precision: features, weights and gradients are float32; per-cell losses are summed in float64 so
that the line search can still see decreases of order tol^2 near the optimum.

Device: everything runs on ``device``; on "cuda" the same code runs on the GPU. Only the CPU path
is tested here (no GPU on the test machine); a CUDA test runs where one is present.

Memory: one float32 copy of the train features, (G, C, N) per width, standardised in place, plus
a (G, K, N) logits buffer reused by every evaluation and the L-BFGS history
(``history`` x 2 x G x (C+1) x K floats).
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal, TypeVar

import numpy as np
import torch
from tqdm.auto import tqdm

from probekit.core.errors import ProbekitError
from probekit.core.verbosity import progress_enabled
from probekit.probes._inputs import as_float32_tensor, check_probe_inputs, resolve_num_classes
from probekit.probes.metrics import CellScore, score_predictions

K = TypeVar("K", bound=Hashable)

logger = logging.getLogger(__name__)

# A feature whose train std is below this is treated as constant and left unscaled (divided by
# 1), as scikit-learn's StandardScaler does; dividing by a tiny std would blow float noise up.
CONSTANT_STD = 1e-6
# Armijo sufficient-decrease constant and the most step halvings tried per iteration.
_ARMIJO = 1e-4
_MAX_BACKTRACKS = 30
# Rows of a cell used to estimate its feature covariance for the preconditioner.
_PRECONDITION_ROWS = 4096
# precondition="auto" builds the preconditioner only where N_train >= this x width.
_PRECONDITION_MIN_ROWS_PER_FEATURE = 4


@dataclass(frozen=True)
class LinearProbeConfig:
    """The optimisation problem and the solver's stopping rule, shared by every cell.

    Attributes:
        C: inverse L2 strength, exactly scikit-learn's ``LogisticRegression(C=...)``: the penalty
            ``||W||^2 / 2`` is weighed against the *summed* cross-entropy times C (so the
            effective regularisation shrinks as N grows). The intercept is not penalised.
        tol: stop a cell when the largest absolute entry of the gradient of
            ``mean CE + ||W||^2 / (2 C N)`` is at most ``tol`` (scikit-learn's ``tol`` for lbfgs,
            default 1e-4, on the same scaled objective).
        ftol: also stop a cell when one iteration lowers that objective by less than
            ``ftol * max(|F|, 1)``. Off (0) by default: float32 losses are noisy at ~1e-8
            relative, so a small ``ftol`` would stop cells on noise rather than on progress.
        max_iter: L-BFGS iteration limit per cell; cells that reach it report converged=False.
        history: number of (step, gradient change) pairs kept per cell (scipy's ``maxcor``, 10).
        precondition: start L-BFGS's inverse-Hessian estimate from the inverse of
            ``cov / 2 + I / (C N)`` (cov from at most 4096 rows; one C x C Cholesky per cell,
            O(4096 C^2 + C^3)) instead of the identity. Same optimum, fewer iterations.
            ``"auto"`` (the default) does so where N_train >= 4 x width: with fewer rows the
            covariance is rank-deficient, so the factor is mostly the penalty's identity, and
            building it costs about width / (4 K) loss evaluations, more than it saves (measured
            by ``experiments/bench_linear.py``: 2000 x 1024 cells solved 2.3x faster without it,
            20000 x 256 cells 1.7x faster with it).
        num_classes: classifier outputs; None means the largest label in y_train / y_test + 1.
        eval_batch_size: test samples per evaluation chunk (bounds evaluation memory).
    """

    C: float = 1.0
    tol: float = 1e-4
    ftol: float = 0.0
    max_iter: int = 1000
    history: int = 10
    precondition: bool | Literal["auto"] = "auto"
    num_classes: int | None = None
    eval_batch_size: int = 4096

    def __post_init__(self) -> None:
        if not (self.C > 0 and self.tol > 0 and self.ftol >= 0):
            raise ProbekitError("linear probe: need C > 0, tol > 0 and ftol >= 0")
        if self.precondition not in (True, False, "auto"):
            raise ProbekitError("linear probe: precondition must be True, False or 'auto'")
        if self.max_iter < 1 or self.history < 1 or self.eval_batch_size < 1:
            raise ProbekitError("linear probe: max_iter, history and eval_batch_size must be >= 1")


@dataclass(frozen=True, eq=False)
class LinearHead:
    """A fitted probe for one cell: ``logits = ((x - mean) / std) @ weight + bias``.

    Tensors are float32 and live on the device the grid was trained on.
    Shapes: mean, std (C,); weight (C, num_classes); bias (num_classes,).
    ``converged`` says whether the solver met the tolerance, ``n_iter`` after how many L-BFGS
    iterations, ``objective`` the final ``mean CE + ||W||^2 / (2 C N)`` on the train split.
    """

    mean: torch.Tensor
    std: torch.Tensor
    weight: torch.Tensor
    bias: torch.Tensor
    converged: bool = True
    n_iter: int = 0
    objective: float = float("nan")


def linear_probe_grid(
    train: Mapping[K, np.ndarray],
    y_train: np.ndarray,
    test: Mapping[K, np.ndarray],
    y_test: np.ndarray,
    config: LinearProbeConfig = LinearProbeConfig(),
    *,
    device: str | torch.device = "cpu",
    progress: bool = False,
) -> dict[K, CellScore]:
    """Fit scikit-learn's logistic regression on every cell at once; score it on the test split.

    Args:
        train: cell key -> float features, shape (N_train, C_key); widths may differ by cell.
        y_train: int labels 0..num_classes-1, shape (N_train,).
        test: the same cells' test features, shape (N_test, C_key).
        y_test: int labels, shape (N_test,).
        config: problem and stopping rule (see :class:`LinearProbeConfig`).
        device: where to solve ("cpu", "cuda", "cuda:1", ...).
        progress: show a tqdm bar over solver iterations.

    Returns:
        cell key -> :class:`CellScore` (``converged`` from the solver), in the order of ``train``.
    """
    path = linear_probe_path(train, y_train, test, y_test, [config.C], config, device=device, progress=progress)
    return path[config.C]


def linear_probe_path(
    train: Mapping[K, np.ndarray],
    y_train: np.ndarray,
    test: Mapping[K, np.ndarray],
    y_test: np.ndarray,
    Cs: Sequence[float],
    config: LinearProbeConfig = LinearProbeConfig(),
    *,
    device: str | torch.device = "cpu",
    progress: bool = False,
) -> dict[float, dict[K, CellScore]]:
    """:func:`linear_probe_grid` for every C in ``Cs`` (``config.C`` is ignored), as one path.

    Each C is the same problem solved to the same tolerance as a separate call would solve it;
    the features are standardised once, and each C after the first starts from the solution of
    the next smaller C (see :func:`fit_linear_path`). Returns C -> cell key -> score.
    """
    y_train, y_test = check_probe_inputs(train, y_train, test, y_test)
    num_classes = resolve_num_classes(config.num_classes, y_train, y_test)
    config = dataclasses.replace(config, num_classes=num_classes)
    path = _fit(train, y_train, Cs, config, torch.device(device), progress)
    scores: dict[float, dict[K, CellScore]] = {}
    for c, heads in path.items():
        predictions = predict_linear_grid(heads, test, eval_batch_size=config.eval_batch_size)
        scores[c] = {key: score_predictions(y_test, predictions[key], converged=heads[key].converged) for key in train}
    return scores


def fit_linear_grid(
    train: Mapping[K, np.ndarray],
    y_train: np.ndarray,
    config: LinearProbeConfig = LinearProbeConfig(),
    *,
    device: str | torch.device = "cpu",
    progress: bool = False,
) -> dict[K, LinearHead]:
    """Fit one standardised multinomial logistic regression per cell, all cells batched.

    Shapes and units as in :func:`linear_probe_grid`; ``num_classes`` defaults to the largest
    train label + 1. Memory: one float32 copy of the train features on ``device`` beyond the
    input. Returns cell key -> :class:`LinearHead`, in the order of ``train``.
    """
    return fit_linear_path(train, y_train, [config.C], config, device=device, progress=progress)[config.C]


def fit_linear_path(
    train: Mapping[K, np.ndarray],
    y_train: np.ndarray,
    Cs: Sequence[float],
    config: LinearProbeConfig = LinearProbeConfig(),
    *,
    device: str | torch.device = "cpu",
    progress: bool = False,
) -> dict[float, dict[K, LinearHead]]:
    """:func:`fit_linear_grid` for every C in ``Cs`` (``config.C`` is ignored): C -> key -> head.

    A regularisation path: per width, the features are standardised once and the C values are
    solved from the smallest up, each starting from the previous C's weights (zero for the
    first). A larger C only relaxes the penalty, so the previous optimum is close to the next
    one and L-BFGS needs fewer iterations than from zero (about 1.3-2x fewer on the second C of
    ``experiments/bench_linear.py``'s path setups). Every C still stops on its own gradient
    tolerance, so each head is what :func:`fit_linear_grid` with that C would return, up to
    that tolerance.
    """
    y_train, _ = check_probe_inputs(train, y_train, train, y_train)  # no test split here
    return _fit(train, y_train, Cs, config, torch.device(device), progress)


@torch.no_grad()
def predict_linear_grid(
    heads: Mapping[K, LinearHead],
    features: Mapping[K, np.ndarray],
    *,
    eval_batch_size: int = 4096,
) -> dict[K, np.ndarray]:
    """Predicted class (int64, shape (N,)) per cell, evaluating same-width cells together.

    ``features[key]`` has shape (N, C_key) with the same N for every cell. Samples are processed
    ``eval_batch_size`` at a time, so memory is bounded by cells x chunk, not by N.
    """
    out: dict[K, list[np.ndarray]] = {key: [] for key in heads}
    n = len(next(iter(features.values())))
    for keys in group_by_width(features).values():
        first = heads[keys[0]]
        device = first.weight.device
        mean = torch.stack([heads[k].mean for k in keys])[:, None]  # (G, 1, C)
        std = torch.stack([heads[k].std for k in keys])[:, None]  # (G, 1, C)
        weight = torch.stack([heads[k].weight for k in keys])  # (G, C, K)
        bias = torch.stack([heads[k].bias for k in keys])[:, None]  # (G, 1, K)
        for start in range(0, n, eval_batch_size):
            stop = min(start + eval_batch_size, n)
            x = torch.empty((len(keys), stop - start, weight.shape[1]), device=device)
            for i, key in enumerate(keys):
                x[i].copy_(as_float32_tensor(features[key][start:stop]))
            logits = torch.baddbmm(bias, x.sub_(mean).div_(std), weight)
            pred = logits.argmax(dim=-1).cpu().numpy()
            for i, key in enumerate(keys):
                out[key].append(pred[i])
    return {key: np.concatenate(parts).astype(np.int64) for key, parts in out.items()}


def group_by_width(cells: Mapping[K, np.ndarray]) -> dict[int, list[K]]:
    """Cell keys grouped by feature width (the cells that can share one batched matmul)."""
    groups: dict[int, list[K]] = {}
    for key, x in cells.items():
        groups.setdefault(int(x.shape[1]), []).append(key)
    return groups


@torch.no_grad()
def _fit(
    train: Mapping[K, np.ndarray],
    y_train: np.ndarray,
    Cs: Sequence[float],
    config: LinearProbeConfig,
    device: torch.device,
    progress: bool,
) -> dict[float, dict[K, LinearHead]]:
    path = sorted({float(c) for c in Cs})
    if not path or path[0] <= 0:
        raise ProbekitError("linear probe: need one or more C values, all > 0")
    num_classes = resolve_num_classes(config.num_classes, y_train, y_train)
    labels = torch.from_numpy(y_train).to(device)
    heads: dict[float, dict[K, LinearHead]] = {c: {} for c in path}
    for keys in group_by_width(train).values():
        problem = _Problem.build(keys, train, labels, num_classes, device, config.precondition)
        theta = None
        for c in path:
            problem.set_C(c)
            fitted, theta = _lbfgs(problem, config, progress, theta)
            heads[c].update(fitted)
        del problem  # free this width's feature copy before stacking the next
    for c, fitted in heads.items():
        not_converged = [key for key, head in fitted.items() if not head.converged]
        if not_converged:
            logger.warning(
                "linear: %d of %d cells did not reach tol=%g within max_iter=%d at C=%g "
                "(first: %r); raise LinearProbeConfig.max_iter if their scores matter",
                len(not_converged),
                len(fitted),
                config.tol,
                config.max_iter,
                c,
                not_converged[0],
            )
    return {float(c): {key: heads[float(c)][key] for key in train} for c in Cs}


@dataclass(eq=False)
class _Problem:
    """The G cells of one feature width C: standardised features, objective and preconditioner.

    Preconditioner: L-BFGS starts each two-loop recursion from ``H0 = M^-1`` (per class) instead
    of the identity, with ``M = cov / 2 + l2 I`` (l2 = 1 / (C N)), Boehning's bound on the
    Hessian of the objective restricted to one class's weights. It undoes the features'
    correlations, which otherwise make L-BFGS crawl along near-collinear directions. ``cov`` is
    estimated on at most ``_PRECONDITION_ROWS`` rows (a preconditioner needs no precision), with
    its diagonal set to each feature's variance over all rows (see :meth:`set_C`), and
    M is Cholesky-factorised once per cell and C: O(rows C^2 + C^3) per cell, never O(N C^2).
    What is kept is the inverse factor L^-1 (M = L L^T), so that applying
    ``M^-1 = L^-T L^-1`` is two batched matmuls over all G cells; a batched triangular solve
    (``cholesky_solve``) runs one small LAPACK call per cell and was 1.5x (4 x 1024^2) to 5x
    (16 x 32^2) slower here. The product form keeps H0 positive semi-definite in float32
    (q^T H0 q = ||L^-1 q||^2), which an explicitly inverted M cast to float32 would not guarantee.

    Parameters of all cells are one flat (G, P) tensor, P = (C + 1) * K: W^T (K, C) row-major,
    then the bias (K,). Features are stored feature-major, X^T (C, N) contiguous, and logits
    class-major, (G, K, N): with K << C the products ``W^T X^T`` and ``R X`` in that layout were
    the fastest orientation on CPU (one thread, 20000 x 256: 2.9 and 2.8 ms, against 4.1 ms for
    ``W^T X^T`` over row-major X, and 7 to 15 ms for ``X W`` and ``X^T R``).
    """

    keys: list
    xt: torch.Tensor  # (G, C, N) standardised train features, feature-major (see the class doc)
    mean: torch.Tensor  # (G, C)
    std: torch.Tensor  # (G, C)
    labels: torch.Tensor  # (N,) int64
    num_classes: int
    preconditioned: bool
    logits: torch.Tensor = dataclasses.field(init=False)  # (G, K, N) buffer, reused per evaluation
    minus_one: torch.Tensor = dataclasses.field(init=False)  # (G, 1, N) of -1: the one-hot's scatter
    l2: float = float("nan")  # 1 / (C N), set by set_C
    chol_inv: torch.Tensor | None = None  # (G, C, C) L^-1, M = L L^T, for this l2 (lower)

    def __post_init__(self) -> None:
        # Kept across evaluations: a fresh (G, K, N) tensor per call costs the page faults of a
        # new allocation, which on narrow cells took as long as the products (1350 x 32 cells:
        # one evaluation 7 ms -> 4.5 ms with the reused buffer, one thread).
        g, n = len(self.keys), self.xt.shape[2]
        self.logits = torch.empty((g, self.num_classes, n), device=self.xt.device)
        self.minus_one = torch.full((g, 1, n), -1.0, device=self.xt.device)

    @classmethod
    def build(
        cls,
        keys: list,
        train: Mapping,
        labels: torch.Tensor,
        num_classes: int,
        device: torch.device,
        precondition: bool | Literal["auto"] = "auto",
    ) -> _Problem:
        """Standardised features of ``keys``; call :meth:`set_C` before solving."""
        n, width = train[keys[0]].shape
        if precondition == "auto":
            precondition = n >= _PRECONDITION_MIN_ROWS_PER_FEATURE * width
        # Fill a preallocated stack cell by cell: peak memory is the input plus this one copy.
        xt = torch.empty((len(keys), width, n), dtype=torch.float32, device=device)
        mean = torch.empty((len(keys), width), dtype=torch.float32, device=device)
        std = torch.empty_like(mean)
        for i, key in enumerate(keys):
            # A float64 mean, so that a large offset (50 +- 1) cannot eat the variance's digits;
            # numpy's buffered row reduction computes it several times faster than torch here.
            mean[i] = torch.from_numpy(np.mean(train[key], axis=0, dtype=np.float64)).float()
            xi = xt[i]
            xi.copy_(as_float32_tensor(train[key]).T)
            xi.sub_(mean[i, :, None])
            # Once centred, the float32 norm gives the std to ~1e-6 relative (float64: ~1e-7).
            s = torch.linalg.vector_norm(xi, dim=1) / math.sqrt(n)
            std[i] = torch.where(s < CONSTANT_STD, torch.ones_like(s), s)
            xi.div_(std[i, :, None])
        return cls(list(keys), xt, mean, std, labels, num_classes, bool(precondition))

    def set_C(self, C: float) -> None:
        """Set the penalty to scikit-learn's C and, if preconditioned, factor M for it."""
        width, n = self.xt.shape[1:]
        self.l2 = 1.0 / (C * n)
        if not self.preconditioned:
            return
        rows = torch.linspace(0, n - 1, min(n, _PRECONDITION_ROWS), device=self.xt.device).long()
        self.chol_inv = torch.empty((len(self.keys), width, width), device=self.xt.device)
        identity = torch.eye(width, dtype=torch.float64, device=self.xt.device)
        for i in range(len(self.keys)):
            sample = self.xt[i][:, rows].T.double()
            cov = sample.T @ sample / len(rows)
            # The rows can miss a rare feature (a corner pixel lit in a few of 54 000 images):
            # its sampled variance reads ~0, and M^-1 would step ~1 / l2 along it, which stalls
            # the solver. Every feature's variance over all rows is known (1 once standardised,
            # 0 if constant), so keep the sample's correlations and put in the true variances.
            full_var = torch.square(torch.linalg.vector_norm(self.xt[i], dim=1).double()) / n
            sample_var = cov.diagonal().clone()
            scale = torch.where(
                sample_var > 0, (full_var / sample_var.clamp(min=1e-300)).sqrt(), torch.zeros_like(sample_var)
            )
            cov.mul_(scale[:, None]).mul_(scale[None, :])
            cov.diagonal().copy_(full_var)
            m = cov / 2
            m.diagonal().add_(self.l2)
            factor = torch.linalg.cholesky(m)
            self.chol_inv[i] = torch.linalg.solve_triangular(factor, identity, upper=False).float()

    @property
    def width(self) -> int:
        return self.xt.shape[1]

    @property
    def device(self) -> torch.device:
        return self.xt.device

    @property
    def n_params(self) -> int:
        return (self.width + 1) * self.num_classes

    def split(self, theta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(g, P) parameters -> W^T (g, K, C) and bias (g, K, 1) views."""
        width = self.width
        weight_t = theta[:, : width * self.num_classes].view(-1, self.num_classes, width)
        bias = theta[:, width * self.num_classes :].view(-1, self.num_classes, 1)
        return weight_t, bias

    def precondition(self, q: torch.Tensor) -> torch.Tensor:
        """H0 q per cell: the weight part solved against M, the bias part unscaled (G, P)."""
        if self.chol_inv is None:
            return q.clone()
        out = q.clone()
        q_weight_t, _ = self.split(q)
        out_weight_t, _ = self.split(out)
        # (M^-1 Q^T)^T = Q M^-1 = (Q L^-T) L^-1, rows of Q^T being the K classes' weights.
        half = torch.bmm(q_weight_t, self.chol_inv.transpose(1, 2))
        out_weight_t.copy_(torch.bmm(half, self.chol_inv))
        return out

    def weights(self, theta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Weight (G, C, K) and bias (G, K) on standardised features, from parameters."""
        weight_t, bias = self.split(theta)
        return weight_t.transpose(1, 2).contiguous(), bias[:, :, 0]

    def evaluate(self, theta: torch.Tensor, active: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Objective F (G,) float64 and gradient (G, P) float32 of the ``active`` cells.

        F = mean_i CE + ||W||^2 / (2 C N). Rows of inactive cells are returned as NaN (F) and 0.
        Computed over contiguous runs of active cells, which are views of the stacked features.
        """
        n = self.xt.shape[2]
        f = torch.full((len(theta),), float("nan"), dtype=torch.float64, device=theta.device)
        grad = torch.zeros_like(theta)
        for run in _runs(active):
            xt = self.xt[run]
            weight_t, bias = self.split(theta[run])
            index = self.labels.view(1, 1, -1).expand(len(xt), 1, -1)
            logits = self.logits[run]
            torch.baddbmm(bias, weight_t, xt, out=logits)  # (g, K, N)
            # CE = log sum_k exp(l_k - max) - (l_y - max), all in place in the logits buffer.
            logits.sub_(logits.amax(dim=1, keepdim=True))
            picked = logits.gather(1, index)
            total = logits.exp_().sum(dim=1, keepdim=True)
            ce = (total.log() - picked).sum(dim=(1, 2), dtype=torch.float64) / n
            penalty = torch.square(weight_t).sum(dim=(1, 2), dtype=torch.float64) * (self.l2 / 2)
            f[run] = ce + penalty
            # dCE/dlogits = softmax - onehot.
            residual = logits.div_(total)
            residual.scatter_add_(1, index, self.minus_one[run])
            g_weight_t, g_bias = self.split(grad[run])
            torch.baddbmm(weight_t, residual, xt.transpose(1, 2), beta=self.l2, alpha=1 / n, out=g_weight_t)
            g_bias.copy_(residual.sum(dim=2, keepdim=True) / n)
        return f, grad


def _runs(mask: torch.Tensor) -> list[slice]:
    """Maximal runs of consecutive True entries of a 1-D bool tensor, as slices."""
    runs: list[slice] = []
    start = None
    for i, on in enumerate(mask.tolist()):
        if on and start is None:
            start = i
        elif not on and start is not None:
            runs.append(slice(start, i))
            start = None
    if start is not None:
        runs.append(slice(start, len(mask)))
    return runs


def _lbfgs(
    problem: _Problem, config: LinearProbeConfig, progress: bool, start: torch.Tensor | None = None
) -> tuple[dict[Hashable, LinearHead], torch.Tensor]:
    """Batched L-BFGS from ``start`` (G, P) or zero weights: every cell its own history, step
    and stopping state. Returns the heads and the final parameters (G, P).
    """
    n_cells, device = len(problem.keys), problem.device
    m = config.history
    theta = torch.zeros((n_cells, problem.n_params), device=device) if start is None else start.clone()
    s_hist = torch.zeros((m, *theta.shape), device=device)
    y_hist = torch.zeros_like(s_hist)
    rho = torch.zeros((m, n_cells), device=device)  # 0 marks an empty / skipped pair
    gamma = torch.ones(n_cells, device=device)  # initial inverse-Hessian scale s.y / y.y
    slot = 0

    active = torch.ones(n_cells, dtype=torch.bool, device=device)
    f, grad = problem.evaluate(theta, active)
    converged = grad.abs().amax(dim=1) <= config.tol
    active &= ~converged
    n_iter = torch.zeros(n_cells, dtype=torch.int64, device=device)
    first = True

    bar = tqdm(total=config.max_iter, desc="linear probe", unit="iter", disable=not progress_enabled(progress))
    for _ in range(config.max_iter):
        if not bool(active.any()):
            break
        direction = -_two_loop(grad, s_hist, y_hist, rho, gamma, slot, problem.precondition)
        slope = (grad * direction).sum(dim=1)
        # A direction that does not descend (numerically): fall back to steepest descent.
        bad = slope >= 0
        if bool(bad.any()):
            direction[bad] = -grad[bad]
            slope = torch.where(bad, -(grad * grad).sum(dim=1), slope)
            rho[:, bad] = 0.0
        step = torch.ones(n_cells, device=device)
        if first and problem.chol_inv is None:  # as scipy: a first step of unit length
            step = torch.clamp(1.0 / grad.norm(dim=1), max=1.0)
            first = False

        theta_try = theta.clone()
        f_try = f.clone()
        grad_try = grad.clone()
        pending = active.clone()
        accepted = torch.zeros_like(active)
        for _ in range(_MAX_BACKTRACKS):
            theta_try[pending] = theta[pending] + step[pending, None] * direction[pending]
            f_new, g_new = problem.evaluate(theta_try, pending)
            decrease = f[pending] + _ARMIJO * (step[pending] * slope[pending]).double()
            ok_sub = f_new[pending] <= decrease
            ok = torch.zeros_like(pending)
            ok[pending] = ok_sub
            f_try[ok] = f_new[ok]
            grad_try[ok] = g_new[ok]
            accepted |= ok
            pending &= ~ok
            if not bool(pending.any()):
                break
            # Minimiser of the quadratic through f, slope and f_new, kept in [0.1, 0.5] x step.
            a = step[pending].double()
            curvature = (f_new[pending] - f[pending] - slope[pending].double() * a) / (a * a)
            a_new = -slope[pending].double() / (2 * curvature.clamp(min=1e-300))
            step[pending] = torch.minimum(torch.maximum(a_new, 0.1 * a), 0.5 * a).float()

        # Cells whose line search failed can no longer make float32 progress: stop them.
        failed = pending
        active &= ~failed
        n_iter += accepted.long()

        s = theta_try - theta
        y = grad_try - grad
        sy = (s * y).sum(dim=1)
        yy = (y * y).sum(dim=1)
        keep = accepted & (sy > 1e-10 * yy.clamp(min=1e-30).sqrt() * s.norm(dim=1))
        s_hist[slot] = torch.where(keep[:, None], s, 0.0)
        y_hist[slot] = torch.where(keep[:, None], y, 0.0)
        rho[slot] = torch.where(keep, 1.0 / sy.clamp(min=1e-30), 0.0)
        y_h0_y = (y * problem.precondition(y)).sum(dim=1)
        gamma = torch.where(keep, sy / y_h0_y.clamp(min=1e-30), gamma)
        slot = (slot + 1) % m

        f_drop = (f - f_try).where(accepted, torch.zeros_like(f))
        theta = torch.where(accepted[:, None], theta_try, theta)
        grad = torch.where(accepted[:, None], grad_try, grad)
        f_scale = torch.maximum(f.abs(), torch.ones_like(f))
        f = torch.where(accepted, f_try, f)
        done = accepted & ((grad.abs().amax(dim=1) <= config.tol) | (f_drop <= config.ftol * f_scale))
        converged |= done
        active &= ~done
        bar.update(1)
        if progress:
            bar.set_postfix(active=int(active.sum()))
    bar.close()

    weight, bias = problem.weights(theta)
    heads = {
        key: LinearHead(
            mean=problem.mean[i],
            std=problem.std[i],
            weight=weight[i].clone(),
            bias=bias[i].clone(),
            converged=bool(converged[i]),
            n_iter=int(n_iter[i]),
            objective=float(f[i]),
        )
        for i, key in enumerate(problem.keys)
    }
    return heads, theta


def _two_loop(
    grad: torch.Tensor,
    s_hist: torch.Tensor,
    y_hist: torch.Tensor,
    rho: torch.Tensor,
    gamma: torch.Tensor,
    slot: int,
    h0: Callable[[torch.Tensor], torch.Tensor],
) -> torch.Tensor:
    """L-BFGS inverse-Hessian times gradient, per cell, from the initial ``gamma * h0``;
    pairs with rho = 0 are skipped exactly.
    """
    m = len(rho)
    order = [(slot - 1 - j) % m for j in range(m)]  # newest first
    q = grad.clone()
    alphas = []
    for j in order:
        alpha = rho[j] * (s_hist[j] * q).sum(dim=1)
        q -= alpha[:, None] * y_hist[j]
        alphas.append(alpha)
    r = gamma[:, None] * h0(q)
    for j, alpha in zip(reversed(order), reversed(alphas)):
        beta = rho[j] * (y_hist[j] * r).sum(dim=1)
        r += (alpha - beta)[:, None] * s_hist[j]
    return r


__all__ = [
    "CONSTANT_STD",
    "LinearHead",
    "LinearProbeConfig",
    "fit_linear_grid",
    "fit_linear_path",
    "group_by_width",
    "linear_probe_grid",
    "linear_probe_path",
    "predict_linear_grid",
]
