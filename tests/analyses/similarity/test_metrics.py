"""Each metric against a plain, loop-level numpy reading of its published formula."""

import numpy as np
import pytest
from scipy.stats import ortho_group

from probekit.analyses.similarity import cka_matrix, cknna, hsic_unbiased, linear_cka, mutual_knn
from probekit.core.errors import ProbekitError


def _hsic_song(k, l):
    """Song et al. (2012) eq. 5 written term by term with explicit centring-free sums."""
    n = len(k)
    kt, lt = k.copy(), l.copy()
    np.fill_diagonal(kt, 0)
    np.fill_diagonal(lt, 0)
    term1 = np.trace(kt @ lt)
    term2 = np.ones(n) @ kt @ np.ones(n) * (np.ones(n) @ lt @ np.ones(n)) / ((n - 1) * (n - 2))
    term3 = 2 / (n - 2) * (np.ones(n) @ kt @ lt @ np.ones(n))
    return (term1 + term2 - term3) / (n * (n - 3))


def _cka(x, y):
    k, l = x @ x.T, y @ y.T
    return _hsic_song(k, l) / np.sqrt(_hsic_song(k, k) * _hsic_song(l, l))


def _neighbours(x, k):
    """Each row's k nearest other rows by cosine similarity, by a full sort."""
    unit = x / np.linalg.norm(x, axis=1, keepdims=True)
    sim = unit @ unit.T
    out = []
    for i in range(len(x)):
        order = [j for j in np.argsort(-sim[i], kind="stable") if j != i]
        out.append(set(order[:k]))
    return out, sim


def _mutual_knn(x, y, k):
    nx, _ = _neighbours(x, k)
    ny, _ = _neighbours(y, k)
    return np.mean([len(a & b) / k for a, b in zip(nx, ny)])


def _cknna(x, y, k):
    nx, kx = _neighbours(x, k)
    ny, ky = _neighbours(y, k)
    n = len(x)

    def mask(*sets):
        m = np.zeros((n, n))
        for i in range(n):
            for j in set.intersection(*[s[i] for s in sets]):
                m[i, j] = 1
        return m

    both = mask(nx, ny)
    align = _hsic_song(both * kx, both * ky)
    return align / np.sqrt(_hsic_song(mask(nx) * kx, mask(nx) * kx) * _hsic_song(mask(ny) * ky, mask(ny) * ky))


@pytest.fixture
def pair():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 12))
    # y shares part of x's structure, so scores sit well inside (0, 1)
    y = x @ rng.normal(size=(12, 7)) + 0.8 * rng.normal(size=(60, 7))
    return x, y


def test_hsic_unbiased_matches_song_eq5(pair):
    x, y = pair
    assert hsic_unbiased(x @ x.T, y @ y.T) == pytest.approx(_hsic_song(x @ x.T, y @ y.T), rel=1e-10)
    # also for non-symmetric matrices (CKNNA's masked kernels)
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(30, 30)), rng.normal(size=(30, 30))
    assert hsic_unbiased(a, b) == pytest.approx(_hsic_song(a, b), rel=1e-10)


def test_linear_cka_matches_formula_and_is_rotation_invariant(pair):
    x, y = pair
    expected = _cka(x, y)
    assert 0.2 < expected < 0.95
    assert linear_cka(x, y) == pytest.approx(expected, rel=1e-9)
    q = ortho_group.rvs(12, random_state=3)
    assert linear_cka(x, x @ q) == pytest.approx(1.0, abs=1e-10)
    assert linear_cka(x, 3.0 * x + 5.0) == pytest.approx(1.0, abs=1e-10)  # scale and shift


def test_mutual_knn_matches_formula_and_identity(pair):
    x, y = pair
    expected = _mutual_knn(x, y, 5)
    assert 0.05 < expected < 0.95
    assert mutual_knn(x, y, 5) == pytest.approx(expected, abs=1e-12)
    assert mutual_knn(x, x, 5) == 1.0
    assert mutual_knn(x, 2.5 * x, 7) == 1.0


def test_cknna_matches_formula(pair):
    x, y = pair
    expected = _cknna(x, y, 6)
    assert 0.05 < expected < 0.99
    assert cknna(x, y, 6) == pytest.approx(expected, rel=1e-9)
    assert cknna(x, x, 6) == pytest.approx(1.0, abs=1e-10)


def test_cka_matrix_equals_pairwise_formula():
    rng = np.random.default_rng(2)
    base = rng.normal(size=(40, 6))
    cells = [
        base @ rng.normal(size=(6, w)) + s * rng.normal(size=(40, w))
        for w, s in ((3, 0.1), (8, 1.0), (5, 3.0), (6, 0.0))
    ]
    expected = np.array([[_cka(a, b) for b in cells] for a in cells])
    for budget in (2**30, 2 * 4 * 780):  # everything in one block; one cell per block
        got = cka_matrix(cells, max_bytes=budget)
        np.testing.assert_allclose(got, expected, atol=2e-5)
        np.testing.assert_allclose(np.diag(got), 1.0, atol=1e-5)


def test_bad_inputs_are_one_line_errors(pair):
    x, y = pair
    with pytest.raises(ProbekitError, match="same samples"):
        linear_cka(x, y[:-1])
    with pytest.raises(ProbekitError, match="k >= 2"):
        cknna(x, y, 1)
    with pytest.raises(ProbekitError, match="lower --k"):
        mutual_knn(x, y, 60)
    with pytest.raises(ProbekitError, match="NaN"):
        linear_cka(np.full_like(x, np.nan), y)
