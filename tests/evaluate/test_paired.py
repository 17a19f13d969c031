import numpy as np
import pytest
from scipy.stats import binomtest

from probekit.core.errors import ProbekitError
from probekit.evaluate import compare_correct, mcnemar_exact, paired_bootstrap


def _pair(n=400, p_a=0.8, p_b=0.75, seed=0):
    rng = np.random.default_rng(seed)
    return rng.random(n) < p_a, rng.random(n) < p_b


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_mcnemar_equals_scipy_binomtest_on_discordant_pairs(seed):
    a, b = _pair(seed=seed)
    only_a, only_b = int(np.sum(a & ~b)), int(np.sum(~a & b))
    expected = binomtest(only_a, only_a + only_b, 0.5, alternative="two-sided").pvalue
    assert mcnemar_exact(a, b) == pytest.approx(expected, rel=1e-9)


def test_mcnemar_with_no_discordant_pair_is_one_and_large_counts_stay_finite():
    a = np.array([True, False, True])
    assert mcnemar_exact(a, a) == 1.0
    a = np.zeros(20000, bool)
    b = np.zeros(20000, bool)
    a[:6000] = True
    b[3000:6500] = True  # 3000 vs 500 discordant
    expected = binomtest(500, 3500, 0.5).pvalue
    assert mcnemar_exact(a, b) == pytest.approx(expected, abs=1e-300)


def test_paired_bootstrap_equals_a_numpy_bootstrap_with_the_same_draws():
    a, b = _pair(n=300, seed=4)
    diff, low, high = paired_bootstrap(a, b, n_boot=2000, seed=7)
    rng = np.random.default_rng(7)
    idx = rng.integers(0, len(a), size=(2000, len(a)))  # one block: 2000 x 300 < 4 Mi
    boot = a[idx].mean(axis=1) - b[idx].mean(axis=1)
    assert diff == pytest.approx(a.mean() - b.mean())
    assert (low, high) == pytest.approx(tuple(np.quantile(boot, [0.025, 0.975])))
    assert low < diff < high


def test_compare_correct_counts_and_refuses_mismatched_lengths():
    a = np.array([1, 1, 0, 0, 1], bool)
    b = np.array([1, 0, 1, 0, 0], bool)
    c = compare_correct(a, b, n_boot=100)
    assert (c.n, c.only_a, c.only_b) == (5, 2, 1)
    assert c.diff == pytest.approx(0.2)
    with pytest.raises(ProbekitError, match="equal length"):
        compare_correct(a, b[:4])
