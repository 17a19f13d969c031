"""How many bytes probing one cell holds: the cell's features plus the largest working set of the
probes run on it, each probe's from its spec's memory model (:data:`probekit.core.specs.PROBE_SPECS`).
"""

from __future__ import annotations

from collections.abc import Sequence

from probekit.core.registry import resolve
from probekit.core.specs import PROBE_SPECS


def linear_bytes(width: int, rows: int, n_eval: int, num_classes: int, slots: int) -> int:
    """linear: the standardised, transposed copy of the fit rows, the (K + 1, N) logits buffers,
    the val + test rows joined into one evaluation set, the C x C preconditioner (float64 while
    it is built) and the L-BFGS history.
    """
    return (
        4 * width * (rows + n_eval)
        + 4 * (num_classes + 1) * rows
        + 8 * 3 * width * width
        + 2 * 10 * 4 * (width + 1) * num_classes
        + (4 * width * rows if slots > 1 else 0)
    )


def knn_bytes(width: int, rows: int, n_eval: int, num_classes: int, slots: int) -> int:
    """knn: the unit-row train bank, one (1024, N) block of similarities and its top-k copy, the
    unit-row queries.
    """
    return 4 * width * (rows + n_eval) + 2 * 4 * 1024 * rows + (4 * width * rows if slots > 1 else 0)


def probe_bytes(width: int, n_fit: int, n_eval: int, num_classes: int, probes: Sequence[str], slots: int = 1) -> int:
    """Bytes that probing one cell holds at its peak: its float32 features (``slots`` rows per
    fit image, one per val / test image) plus the largest working set of ``probes``, which run
    one after the other. A probe without a memory model (sgd / mlp / logreg) counts one more copy
    of the features (minibatch tensors, scikit-learn's copy).

    The model was checked against the peak RSS of ``probekit probe`` (tests/probes/test_probe_memory.py).
    """
    rows = slots * n_fit
    features = 4 * width * (rows + n_eval)

    def working(name: str) -> int:
        spec = PROBE_SPECS.get(name)
        if spec is None or spec.memory is None:
            return features
        return int(resolve(spec.memory)(width, rows, n_eval, num_classes, slots))

    return features + max(working(name) for name in probes)


#: the fewest train rows per block a streamed cell is read in
STREAM_MIN_BLOCK_ROWS = 256


def streamed_block_rows(
    budget: int,
    width: int,
    n_fit: int,
    eval_bytes: int,
    num_classes: int,
    probes: Sequence[str],
    *,
    after_another: bool = False,
) -> tuple[int, int]:
    """(rows per block, bytes that blocks of :data:`STREAM_MIN_BLOCK_ROWS` rows need) when one
    cell's ``n_fit`` train rows are streamed within ``budget`` bytes.

    Held besides the blocks: the val + test rows (``eval_bytes``; twice where kNN runs, for its
    unit-row copy) and, where linear runs, its solver state: the preconditioner's float64 C x C
    matrices (the covariance kept and, while factorising, the penalised copy, its factor, the
    identity and the inverse factor), its float32 inverse factor, the float32 sample of rows the
    covariance is estimated on, and the L-BFGS history. Per block row (float32): the row as read,
    its copy taken by row index, its standardised copy and its K + 1 logits, with a factor 4 for
    the allocator and temporaries (measured: 3 peaked 4 MiB over a 64 MiB budget in one run);
    where kNN runs, its similarities to 1024 queries and their top-k copy, with a factor 5
    (measured: 4 peaked at the budget).

    ``after_another``: a probe that streams the cell after another probe did gets half the room
    for its blocks: the heap keeps part of what the first probe's blocks used (measured at
    width 512: linear then kNN peaked 6 MiB over a 56 MiB budget that each alone kept).
    """
    from probekit.probes.lbfgs import PRECONDITION_ROWS

    knn = "knn" in probes
    held = eval_bytes * (2 if knn else 1)
    if "linear" in probes:
        params = (width + 1) * num_classes
        held += 8 * 5 * width * width + 4 * width * width + 4 * min(n_fit, PRECONDITION_ROWS) * width
        held += 4 * params * (2 * 10 + 8)
    per_row = 4 * (4 * (3 * width + num_classes + 1) + (5 * 2 * 1024 if knn else 0))
    share = 2 if after_another else 1
    return max(0, (budget - held) // (share * per_row)), held + share * STREAM_MIN_BLOCK_ROWS * per_row
