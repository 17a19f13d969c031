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
L-BFGS is preconditioned where N_train >= 4 x width (see :class:`Problem`): its initial inverse
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
from collections.abc import Hashable, Mapping, Sequence
from typing import TypeVar

import numpy as np
import torch

from probekit.core.errors import ProbekitError
from probekit.probes._inputs import as_float32_tensor, check_probe_inputs, resolve_num_classes
from probekit.probes.lbfgs import CONSTANT_STD, Problem, lbfgs
from probekit.probes.linear_head import LinearHead, LinearProbeConfig
from probekit.probes.metrics import CellScore, score_predictions

K = TypeVar("K", bound=Hashable)

logger = logging.getLogger(__name__)


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
        problem = Problem.build(keys, train, labels, num_classes, device, config.precondition)
        theta = None
        for c in path:
            problem.set_C(c)
            fitted, theta = lbfgs(problem, config, progress, theta)
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
