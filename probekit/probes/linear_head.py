"""The batched linear probe's settings and its fitted head (shared by the API and the solver)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from probekit.core.errors import ProbekitError


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
