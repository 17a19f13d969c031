"""Weighted cosine k-nearest-neighbour probe (the InstDisc / DINO evaluation rule).

For each test sample, take the k train samples with the highest cosine similarity s, add
``exp(s / temperature)`` to each neighbour's class, and predict the class with the largest total.
No training, so it measures the geometry of the features rather than their linear separability.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from probekit.errors import ProbekitError
from probekit.probes._inputs import as_float32_tensor, check_probe_inputs, resolve_num_classes
from probekit.probes.metrics import CellScore, score_predictions

K = TypeVar("K", bound=Hashable)


@dataclass(frozen=True)
class KnnConfig:
    """Settings of the weighted kNN vote.

    Attributes:
        k: neighbours per test sample (capped at the number of train samples).
        temperature: softness of the vote; 0.07 is DINO's value for cosine similarities.
        num_classes: vote bins; None means the largest label in y_train / y_test + 1.
        chunk_size: test samples per similarity block; memory is chunk_size x N_train floats.
    """

    k: int = 20
    temperature: float = 0.07
    num_classes: int | None = None
    chunk_size: int = 1024

    def __post_init__(self) -> None:
        if self.k < 1 or self.chunk_size < 1 or self.temperature <= 0:
            raise ProbekitError("knn probe: need k >= 1, chunk_size >= 1 and temperature > 0")


def knn_probe(
    train: Mapping[K, np.ndarray],
    y_train: np.ndarray,
    test: Mapping[K, np.ndarray],
    y_test: np.ndarray,
    config: KnnConfig = KnnConfig(),
    *,
    device: str | torch.device = "cpu",
    progress: bool = False,
) -> dict[K, CellScore]:
    """Score every cell with the weighted cosine kNN rule; shapes as in ``linear_probe_grid``."""
    y_train, y_test = check_probe_inputs(train, y_train, test, y_test)
    num_classes = resolve_num_classes(config.num_classes, y_train, y_test)
    device = torch.device(device)
    labels = torch.from_numpy(y_train).to(device)
    k = min(config.k, len(y_train))
    scores: dict[K, CellScore] = {}
    for key in tqdm(train, desc="knn probe", unit="cell", disable=not progress):
        bank = _unit_rows(train[key], device)  # (N_train, C)
        predictions = []
        for start in range(0, len(y_test), config.chunk_size):
            queries = _unit_rows(test[key][start : start + config.chunk_size], device)
            predictions.append(
                _vote(queries, bank, labels, k, config.temperature, num_classes).cpu().numpy()
            )
        scores[key] = score_predictions(y_test, np.concatenate(predictions))
    return scores


@torch.no_grad()
def _vote(
    queries: torch.Tensor,
    bank: torch.Tensor,
    bank_labels: torch.Tensor,
    k: int,
    temperature: float,
    num_classes: int,
) -> torch.Tensor:
    """Predicted class per query row; queries (B, C) and bank (N, C) are unit-norm rows."""
    similarity = queries @ bank.T  # (B, N) cosine similarities
    top_sim, top_idx = similarity.topk(k, dim=1)
    votes = torch.zeros((len(queries), num_classes), device=queries.device)
    votes.scatter_add_(1, bank_labels[top_idx], (top_sim / temperature).exp())
    return votes.argmax(dim=1)


def _unit_rows(x: np.ndarray, device: torch.device) -> torch.Tensor:
    """Rows of ``x`` as float32 on ``device``, scaled to unit L2 norm (zero rows stay zero)."""
    rows = as_float32_tensor(x).to(device)
    return F.normalize(rows, dim=1)
