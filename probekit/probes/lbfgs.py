"""The solver of the batched linear probe: L-BFGS over many (cell, C) problems at once.

Each problem is scikit-learn's multinomial logistic regression (``C`` times the summed
cross-entropy plus half the squared weight norm, intercept unpenalised) on one cell's standardised
features; :class:`Problem` holds the features once per cell and evaluates every problem's loss
and gradient in batched products, and :func:`lbfgs` runs a preconditioned L-BFGS with a
backtracking Armijo line search on all of them, each stopping at its own gradient tolerance.
Used in memory by :mod:`probekit.probes.linear` and on streamed cells by :mod:`probekit.probes.streamed`.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from tqdm.auto import tqdm

from probekit.core.verbosity import progress_enabled
from probekit.probes._inputs import as_float32_tensor
from probekit.probes.linear_head import LinearHead, LinearProbeConfig

# A feature whose train std is below this is treated as constant and left unscaled (divided by
# 1), as scikit-learn's StandardScaler does; dividing by a tiny std would blow float noise up.
CONSTANT_STD = 1e-6
# Armijo sufficient-decrease constant and the most step halvings tried per iteration.
ARMIJO = 1e-4
MAX_BACKTRACKS = 30
# Rows of a cell used to estimate its feature covariance for the preconditioner.
PRECONDITION_ROWS = 4096
# precondition="auto" builds the preconditioner only where N_train >= this x width.
PRECONDITION_MIN_ROWS_PER_FEATURE = 4


@dataclass(eq=False)
class Problem:
    """The G cells of one feature width C: standardised features, objective and preconditioner.

    Preconditioner: L-BFGS starts each two-loop recursion from ``H0 = M^-1`` (per class) instead
    of the identity, with ``M = cov / 2 + l2 I`` (l2 = 1 / (C N)), Boehning's bound on the
    Hessian of the objective restricted to one class's weights. It undoes the features'
    correlations, which otherwise make L-BFGS crawl along near-collinear directions. ``cov`` is
    estimated on at most ``PRECONDITION_ROWS`` rows (a preconditioner needs no precision), with
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
    ) -> Problem:
        """Standardised features of ``keys``; call :meth:`set_C` before solving."""
        n, width = train[keys[0]].shape
        if precondition == "auto":
            precondition = n >= PRECONDITION_MIN_ROWS_PER_FEATURE * width
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
        rows = torch.linspace(0, n - 1, min(n, PRECONDITION_ROWS), device=self.xt.device).long()
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


def lbfgs(
    problem: Problem, config: LinearProbeConfig, progress: bool, start: torch.Tensor | None = None
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
        for _ in range(MAX_BACKTRACKS):
            theta_try[pending] = theta[pending] + step[pending, None] * direction[pending]
            f_new, g_new = problem.evaluate(theta_try, pending)
            decrease = f[pending] + ARMIJO * (step[pending] * slope[pending]).double()
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
