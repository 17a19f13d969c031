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
