"""Representation similarity: each cell of a cache against a reference cache of the same images
(debiased linear CKA, CKNNA, mutual k-NN), and the cell x cell CKA matrix within one cache.
"""

from probekit.analyses.similarity.metrics import cka_matrix, cknna, hsic_unbiased, linear_cka, mutual_knn, u_center
from probekit.analyses.similarity.run import METRICS, SimilarityConfig, similarity_table, subsample

__all__ = [
    "METRICS",
    "SimilarityConfig",
    "cka_matrix",
    "cknna",
    "hsic_unbiased",
    "linear_cka",
    "mutual_knn",
    "similarity_table",
    "subsample",
    "u_center",
]
