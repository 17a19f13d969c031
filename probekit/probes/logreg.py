"""Reference probe: scikit-learn multinomial logistic regression, one cell at a time.

This is the classical linear-probe protocol (standardise, then L2-regularised softmax regression
solved to convergence with L-BFGS). It runs on the CPU, one cell at a time; the batched
:mod:`probekit.probes.linear` probe solves the same problem for all cells at once.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Hashable, Mapping
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from tqdm.auto import tqdm

from probekit.core.errors import ProbekitError
from probekit.core.verbosity import progress_enabled
from probekit.probes._inputs import check_probe_inputs
from probekit.probes.metrics import CellScore, score_predictions

K = TypeVar("K", bound=Hashable)

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class LogRegConfig:
    """scikit-learn ``LogisticRegression`` settings (lbfgs solver, multinomial loss).

    Attributes:
        C: inverse L2 strength; the penalty is ``||W||^2 / (2 C)`` against the *summed*
            (not mean) cross-entropy, so the effective regularisation shrinks as N grows.
        max_iter: L-BFGS iteration limit; cells that reach it are flagged ``converged=False``.
    """

    C: float = 1.0
    max_iter: int = 1000

    def __post_init__(self) -> None:
        if self.C <= 0 or self.max_iter < 1:
            raise ProbekitError("logreg probe: need C > 0 and max_iter >= 1")


def logreg_probe(
    train: Mapping[K, np.ndarray],
    y_train: np.ndarray,
    test: Mapping[K, np.ndarray],
    y_test: np.ndarray,
    config: LogRegConfig = LogRegConfig(),
    *,
    progress: bool = False,
) -> dict[K, CellScore]:
    """Fit ``StandardScaler`` + ``LogisticRegression`` per cell and score it on the test split.

    Shapes as in :func:`probekit.probes.linear.linear_probe_grid`. Runs on the CPU. A cell whose
    solver hit ``max_iter`` gets ``converged=False`` and one summary warning is logged.
    """
    y_train, y_test = check_probe_inputs(train, y_train, test, y_test)
    scores: dict[K, CellScore] = {}
    for key in tqdm(train, desc="logreg probe", unit="cell", disable=not progress_enabled(progress)):
        model = make_pipeline(StandardScaler(), LogisticRegression(C=config.C, max_iter=config.max_iter))
        with warnings.catch_warnings(record=True) as caught:
            # Record instead of printing: one warning per cell would bury the progress bar.
            warnings.simplefilter("always", ConvergenceWarning)
            model.fit(train[key], y_train)
        converged = not any(issubclass(w.category, ConvergenceWarning) for w in caught)
        for w in caught:
            if not issubclass(w.category, ConvergenceWarning):
                warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
        predictions = model.predict(test[key]).astype(np.int64)
        scores[key] = score_predictions(y_test, predictions, converged=converged)

    not_converged = [key for key, score in scores.items() if not score.converged]
    if not_converged:
        logger.warning(
            "logreg: %d of %d cells stopped at max_iter=%d before converging (first: %r); "
            "raise LogRegConfig.max_iter if their scores matter",
            len(not_converged),
            len(scores),
            config.max_iter,
            not_converged[0],
        )
    return scores
