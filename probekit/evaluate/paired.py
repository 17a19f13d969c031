"""Paired comparison of two classifiers on the same test images.

Two accuracies measured on the same images are correlated: an interval around each says little
about their difference. Here the difference is tested on the pairs themselves:

- a paired bootstrap interval: resample test images with replacement (the same resample for both
  classifiers) and take percentiles of the difference in accuracy;
- the exact McNemar test: under the null that both classifiers are equally accurate, each
  discordant image (right for one, wrong for the other) is equally likely to favour either, so
  the count favouring A among the n discordant images is Binomial(n, 1/2); the two-sided p-value
  is min(1, 2 * P(X <= min(b, c))).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from probekit.core.errors import ProbekitError


@dataclass(frozen=True)
class PairedComparison:
    """A minus B on the same images. Accuracies and differences are fractions in [0, 1] / [-1, 1].

    Attributes:
        n: images compared.
        acc_a, acc_b: top-1 accuracy of each.
        diff: acc_a - acc_b.
        ci_low, ci_high: paired bootstrap percentile interval of ``diff`` at ``level``.
        only_a, only_b: images right for A only, right for B only (the discordant pairs).
        p_value: two-sided exact McNemar p-value.
        level: confidence level of the interval (0.95).
        n_boot: bootstrap resamples.
    """

    n: int
    acc_a: float
    acc_b: float
    diff: float
    ci_low: float
    ci_high: float
    only_a: int
    only_b: int
    p_value: float
    level: float
    n_boot: int


def mcnemar_exact(correct_a: np.ndarray, correct_b: np.ndarray) -> float:
    """Two-sided exact McNemar p-value from per-image correctness (bool arrays of equal length)."""
    a, b = _pair(correct_a, correct_b)
    only_a = int(np.sum(a & ~b))
    only_b = int(np.sum(~a & b))
    return _binomial_two_sided(min(only_a, only_b), only_a + only_b)


def paired_bootstrap(
    correct_a: np.ndarray, correct_b: np.ndarray, *, n_boot: int = 10_000, level: float = 0.95, seed: int = 0
) -> tuple[float, float, float]:
    """(acc_a - acc_b, low, high): the difference and its paired bootstrap percentile interval.

    Each resample draws N image positions with replacement (``numpy.random.default_rng(seed)``)
    and scores both classifiers on the same draw. Memory is bounded: resamples run in blocks.
    """
    a, b = _pair(correct_a, correct_b)
    if n_boot < 1 or not 0.0 < level < 1.0:
        raise ProbekitError("paired bootstrap: need n_boot >= 1 and 0 < level < 1")
    delta = a.astype(np.float64) - b.astype(np.float64)  # per-image +1 / 0 / -1
    rng = np.random.default_rng(seed)
    n = len(delta)
    block = max(1, (1 << 22) // n)
    diffs = np.empty(n_boot)
    for start in range(0, n_boot, block):
        stop = min(n_boot, start + block)
        idx = rng.integers(0, n, size=(stop - start, n))
        diffs[start:stop] = delta[idx].mean(axis=1)
    tail = (1.0 - level) / 2
    low, high = np.quantile(diffs, [tail, 1.0 - tail])
    return float(delta.mean()), float(low), float(high)


def compare_correct(
    correct_a: np.ndarray, correct_b: np.ndarray, *, n_boot: int = 10_000, level: float = 0.95, seed: int = 0
) -> PairedComparison:
    """Both tests at once, from per-image correctness of A and B on the same images."""
    a, b = _pair(correct_a, correct_b)
    diff, low, high = paired_bootstrap(a, b, n_boot=n_boot, level=level, seed=seed)
    return PairedComparison(
        n=len(a),
        acc_a=float(a.mean()),
        acc_b=float(b.mean()),
        diff=diff,
        ci_low=low,
        ci_high=high,
        only_a=int(np.sum(a & ~b)),
        only_b=int(np.sum(~a & b)),
        p_value=mcnemar_exact(a, b),
        level=level,
        n_boot=n_boot,
    )


def _pair(correct_a: np.ndarray, correct_b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    a = np.asarray(correct_a).astype(bool)
    b = np.asarray(correct_b).astype(bool)
    if a.ndim != 1 or a.shape != b.shape or len(a) == 0:
        raise ProbekitError(
            f"a paired comparison needs two non-empty per-image results of equal length, got {a.shape} and {b.shape}"
        )
    return a, b


def _binomial_two_sided(k: int, n: int) -> float:
    """2 * P(X <= k) for X ~ Binomial(n, 1/2), capped at 1; exact in log space for large n."""
    if n == 0:
        return 1.0
    log_half_n = -n * math.log(2.0)
    terms = [math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1) + log_half_n for i in range(k + 1)]
    top = max(terms)
    cdf = math.exp(top) * sum(math.exp(t - top) for t in terms)
    return min(1.0, 2.0 * cdf)
