"""Representation similarity between two feature matrices of the same n samples (numpy only).

Notation: ``X`` is (n, d1), ``Y`` is (n, d2), row i of both describes sample i. ``K = X Xᵀ`` and
``L = Y Yᵀ`` are their linear (inner-product) kernels. Every score is a unit-free number; 1 means
the two representations agree fully.

Unbiased HSIC (Song et al., JMLR 2012, eq. 5), with ``K̃``, ``L̃`` equal to ``K``, ``L`` with the
diagonal set to zero and ``1`` the all-ones vector::

    HSIC_u(K, L) = [ tr(K̃ L̃) + (1ᵀK̃1)(1ᵀL̃1) / ((n-1)(n-2)) - 2/(n-2) · 1ᵀK̃L̃1 ] / (n (n-3))

It needs n >= 4. ``tr(K̃ L̃)`` is written ``Σ_ij K̃_ij L̃_ji`` so that it also holds for the
non-symmetric masked kernels of CKNNA.
"""

from __future__ import annotations

import numpy as np

from probekit.core.errors import ProbekitError


def _check_pair(x: np.ndarray, y: np.ndarray, *, min_n: int = 4) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if x.ndim != 2 or y.ndim != 2:
        raise ProbekitError(
            f"similarity needs two 2-D feature matrices (samples, features), got {x.shape} and {y.shape}"
        )
    if len(x) != len(y):
        raise ProbekitError(f"similarity needs the same samples on both sides, got {len(x)} and {len(y)} rows")
    if len(x) < min_n:
        raise ProbekitError(f"similarity needs at least {min_n} samples, got {len(x)}")
    if not (np.isfinite(x).all() and np.isfinite(y).all()):
        raise ProbekitError(
            "similarity got NaN or inf features; re-extract the cell (float16 overflow is a common cause)"
        )
    return x, y


def hsic_unbiased(k: np.ndarray, l: np.ndarray) -> float:
    """Unbiased HSIC estimator of Song et al. (2012, eq. 5) for two (n, n) kernel matrices, n >= 4.

    The diagonals are ignored (set to zero first). Formula in the module docstring.
    """
    n = k.shape[0]
    if n < 4:
        raise ProbekitError(f"the unbiased HSIC needs at least 4 samples, got {n}")
    k = np.array(k, dtype=np.float64)
    l = np.array(l, dtype=np.float64)
    np.fill_diagonal(k, 0.0)
    np.fill_diagonal(l, 0.0)
    trace = float(np.sum(k * l.T))
    sums = float(k.sum()) * float(l.sum()) / ((n - 1) * (n - 2))
    cross = float(k.sum(axis=0) @ l.sum(axis=1))  # 1ᵀ K̃ L̃ 1
    return (trace + sums - 2.0 * cross / (n - 2)) / (n * (n - 3))


def u_center(k: np.ndarray) -> np.ndarray:
    """The U-centred kernel (Székely & Rizzo 2014): for i != j

        Ũ_ij = K_ij - r_i/(n-2) - r_j/(n-2) + s/((n-1)(n-2)),   Ũ_ii = 0,

    with the diagonal of a symmetric K zeroed first, r_i its row sums and s its total. Then
    ``HSIC_u(K, L) = <Ũ(K), Ũ(L)>_F / (n(n-3))``, which turns many HSICs into one matrix product.
    """
    n = k.shape[0]
    u = np.array(k, dtype=np.float64)
    np.fill_diagonal(u, 0.0)
    rows = u.sum(axis=1)
    total = rows.sum()
    u -= rows[:, None] / (n - 2)
    u -= rows[None, :] / (n - 2)
    u += total / ((n - 1) * (n - 2))
    np.fill_diagonal(u, 0.0)
    return u


def linear_cka(x: np.ndarray, y: np.ndarray) -> float:
    """Debiased linear CKA (Kornblith et al. 2019 with the unbiased HSIC of Song et al. 2012)::

        CKA(X, Y) = HSIC_u(K, L) / sqrt(HSIC_u(K, K) · HSIC_u(L, L)),   K = X Xᵀ, L = Y Yᵀ.

    Invariant to orthogonal transforms and isotropic scaling of either side, and to adding a
    constant vector to every row (U-centring removes it), so features need no centring. No epsilon
    is added to the denominator; NaN when either side is constant.
    """
    x, y = _check_pair(x, y)
    ux, uy = u_center(x @ x.T), u_center(y @ y.T)
    return _cosine(float(np.sum(ux * uy)), float(np.sum(ux * ux)), float(np.sum(uy * uy)))


def _cosine(xy: float, xx: float, yy: float) -> float:
    denominator = np.sqrt(xx * yy) if xx > 0 and yy > 0 else 0.0
    return float(xy / denominator) if denominator > 0 else float("nan")


def l2_normalise(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit Euclidean norm (zero rows stay zero)."""
    x = np.asarray(x, dtype=np.float64)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(norms > 0, norms, 1.0)


def prh_preprocess(x: np.ndarray, q: float = 0.95) -> np.ndarray:
    """The platonic-representation (PRH) / REPA preprocessing applied before every metric:
    clip at ``±c`` where ``c`` is the mean over rows of each row's ``q``-quantile of ``|x|``, then
    scale rows to unit norm.
    """
    x = np.asarray(x, dtype=np.float64)
    limit = float(np.quantile(np.abs(x), q, axis=1).mean())
    return l2_normalise(np.clip(x, -limit, limit))


def knn_mask(k: np.ndarray, topk: int) -> np.ndarray:
    """(n, n) 0/1 matrix: row i marks the ``topk`` largest entries of K's row i, i itself excluded.

    With inner-product kernels these are i's nearest neighbours by (cosine, for unit rows)
    similarity.
    """
    n = k.shape[0]
    if not 1 <= topk <= n - 1:
        raise ProbekitError(f"k={topk} neighbours needs 1 <= k <= n-1 with n={n} samples; lower --k")
    scores = np.array(k, dtype=np.float64)
    np.fill_diagonal(scores, -np.inf)
    neighbours = np.argpartition(-scores, topk - 1, axis=1)[:, :topk]
    mask = np.zeros((n, n))
    np.put_along_axis(mask, neighbours, 1.0, axis=1)
    return mask


def mutual_knn(x: np.ndarray, y: np.ndarray, topk: int = 10) -> float:
    """Mutual k-nearest-neighbour alignment (Huh et al. 2024, the Platonic Representation Hypothesis)::

        m_NN(X, Y) = (1/n) Σ_i |N_X(i) ∩ N_Y(i)| / k

    where ``N_X(i)`` is the set of i's k nearest neighbours (i excluded) by inner product of the
    L2-normalised rows of X (cosine similarity), as that paper's alignment code normalises them.
    1 when both sides rank every sample's neighbours alike.
    """
    x, y = _check_pair(x, y, min_n=2)
    x, y = l2_normalise(x), l2_normalise(y)
    both = knn_mask(x @ x.T, topk) * knn_mask(y @ y.T, topk)
    return float(both.sum(axis=1).mean() / topk)


def cknna(x: np.ndarray, y: np.ndarray, topk: int = 10) -> float:
    """Centered Kernel Nearest-Neighbour Alignment (Huh et al. 2024; REPA, Yu et al. 2025, uses k=10).

    CKA restricted to mutual nearest neighbours. With rows L2-normalised, ``K = X Xᵀ``,
    ``L = Y Yᵀ``, ``M_K`` / ``M_L`` the k-NN masks of :func:`knn_mask` (self excluded) and
    ``∘`` the element-wise product::

        Align(K, L)  = HSIC_u(M ∘ K, M ∘ L),            M = M_K ∘ M_L
        CKNNA(X, Y)  = Align(K, L) / sqrt(Align(K, K) · Align(L, L))

    where ``Align(K, K)`` uses ``M = M_K`` (the mask of K with itself). The masked kernels are
    not symmetric; HSIC_u takes them as they are (trace term ``Σ_ij A_ij B_ji``). No epsilon is
    added to the denominator; NaN when it is zero.
    """
    if topk < 2:
        raise ProbekitError(f"CKNNA needs k >= 2 neighbours, got {topk}")
    x, y = _check_pair(x, y)
    x, y = l2_normalise(x), l2_normalise(y)
    k, l = x @ x.T, y @ y.T
    mask_k, mask_l = knn_mask(k, topk), knn_mask(l, topk)
    return cknna_from_masks(k, l, mask_k, mask_l)


def cknna_from_masks(
    k: np.ndarray, l: np.ndarray, mask_k: np.ndarray, mask_l: np.ndarray, *, ll: float | None = None
) -> float:
    """CKNNA from kernels and their k-NN masks; ``ll`` = ``Align(L, L)`` when already known
    (a reference's kernel, mask and self-alignment are computed once for every cell).
    """
    both = mask_k * mask_l
    kl = hsic_unbiased(both * k, both * l)
    kk = hsic_unbiased(mask_k * k, mask_k * k)
    if ll is None:
        ll = hsic_unbiased(mask_l * l, mask_l * l)
    return _cosine(kl, kk, ll)


def cka_matrix(features: list[np.ndarray], *, max_bytes: int = 2**30) -> np.ndarray:
    """(C, C) debiased linear CKA between every pair of C feature matrices of the same n samples.

    Uses ``HSIC_u(K, L) = 2 Σ_{i<j} Ũ_ij(K) Ũ_ij(L) / (n(n-3))`` (U-centring, :func:`u_center`):
    the strict upper triangles of the U-centred kernels are stacked as float32 rows and multiplied,
    in blocks of cells whose triangles fit ``max_bytes`` (two blocks are held at a time).
    """
    if not features:
        return np.zeros((0, 0))
    n = len(features[0])
    if any(len(f) != n for f in features):
        raise ProbekitError("every cell of the CKA matrix needs the same samples")
    if n < 4:
        raise ProbekitError(f"CKA needs at least 4 samples, got {n}")
    upper = np.triu_indices(n, k=1)
    row_bytes = 4 * len(upper[0])
    per_block = max(1, int(max_bytes // (2 * row_bytes)))
    if 2 * row_bytes > max_bytes:
        raise ProbekitError(
            f"one cell's kernel needs {2 * row_bytes / 2**20:.0f} MiB with {n} samples, more than the "
            f"{max_bytes / 2**20:.0f} MiB allowed: lower --samples or raise --max-memory"
        )

    def triangles(cells: range) -> np.ndarray:
        out = np.empty((len(cells), len(upper[0])), dtype=np.float32)
        for row, c in enumerate(cells):
            f = np.asarray(features[c], dtype=np.float64)
            out[row] = u_center(f @ f.T)[upper]
        return out

    count = len(features)
    blocks = [range(s, min(count, s + per_block)) for s in range(0, count, per_block)]
    gram = np.zeros((count, count))
    for i, block_i in enumerate(blocks):
        tri_i = triangles(block_i)
        for block_j in blocks[i:]:
            tri_j = tri_i if block_j == block_i else triangles(block_j)
            product = (tri_i @ tri_j.T).astype(np.float64)
            gram[block_i.start : block_i.stop, block_j.start : block_j.stop] = product
            gram[block_j.start : block_j.stop, block_i.start : block_i.stop] = product.T
    diag = np.sqrt(np.clip(np.diag(gram), 0.0, None))
    with np.errstate(divide="ignore", invalid="ignore"):
        out = gram / np.outer(diag, diag)
    out[~np.isfinite(out)] = np.nan
    return out
