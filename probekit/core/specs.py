"""The probes and the dense tasks as registry entries: every fact about one of them in one spec.

The pipeline, the report, the sidecars and the CLI loop over :data:`PROBE_SPECS` and
:data:`DENSE_TASKS` instead of spelling names. Code is named by ``"module:attr"`` strings and
imported only when used (:func:`probekit.core.registry.resolve`), so this module imports nothing
above ``core`` and the figures can read the report order without importing a probe. Other
packages add entries through the entry-point groups ``probekit.probes`` and
``probekit.dense_tasks`` (:mod:`probekit.core.registry`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from probekit.core.registry import Registry


@dataclass(frozen=True)
class ProbeSpec:
    """A probe run by name on every cell (``probekit probe --probes NAME``).

    Attributes:
        name: the probe's name in ``--probes`` and in the results table's ``probe`` column.
        adapter: ``"module:attr"`` of ``adapter(task, settings, device, progress) -> {cell key:
            ProbeOutcome}`` (:mod:`probekit.probes.protocol`; ``settings`` a ``ProbeSettings``).
        epoch_based: trains on one (view, draw) slot per image per epoch under
            ``--train-features sample`` (the others see every slot at once).
        streamable: can read a cell larger than ``--max-memory`` from disk, block by block.
        memory: ``"module:attr"`` of ``working_bytes(width, rows, n_eval, num_classes, slots) ->
            int``, the bytes the probe holds besides the cell's float32 features (``rows`` fit rows,
            ``n_eval`` val + test rows); None: one more copy of the features.
        order: rank among a report's probes (smaller first; the first present is the preferred one).
    """

    name: str
    adapter: str
    epoch_based: bool = False
    streamable: bool = False
    memory: str | None = None
    order: int = 100


@dataclass(frozen=True)
class DenseTaskSpec:
    """A dense task: a command that scores every (t, layer) cell of a spatial cache on dense data.

    Attributes:
        name: its command (``probekit NAME --cache C --data D --out R``) and its results tables' kind.
        title: its name in the run's steps and the report ("segmentation").
        metric: the metric every choice is made on (val) and the report shows first.
        second: a second metric shown beside it in the report's cells.
        count_unit: what its tables' ``n_train`` and ``n_eval`` count ("pixels", "pairs").
        fits: it fits something on train (the report's protocol row says on how many).
        test_unit: what a paired comparison resamples ("images", "pairs").
        sidecar_kind: the ``kind`` of its per-unit sidecar (:mod:`probekit.evaluate.dense_sidecar`).
        data: the dense data it reads: ``mosaic`` (segmentation mosaics) or ``pairs`` (warp pairs),
            built once per run by the pipeline's dense data step.
        pixels: the raw-pixel baseline is scored on it too.
        seeded: its command takes ``--seed``.
        cli: ``"module:attr"`` of ``register(subparsers)`` adding its command (None: probekit's own
            dense commands, registered by :mod:`probekit.cli.dense`).
    """

    name: str
    title: str
    metric: str
    second: str
    count_unit: str
    fits: bool
    test_unit: str
    sidecar_kind: str
    data: str
    pixels: bool = False
    seeded: bool = False
    cli: str | None = None


PROBE_SPECS: Registry[ProbeSpec] = Registry(
    "probekit.probes",
    ProbeSpec,
    {
        "linear": ProbeSpec(
            "linear",
            "probekit.probes.registry:linear_adapter",
            streamable=True,
            memory="probekit.probes.memory:linear_bytes",
            order=0,
        ),
        "logreg": ProbeSpec("logreg", "probekit.probes.registry:logreg_adapter", order=1),
        "sgd": ProbeSpec("sgd", "probekit.probes.registry:sgd_adapter", epoch_based=True, order=2),
        "mlp": ProbeSpec("mlp", "probekit.probes.registry:mlp_adapter", epoch_based=True, order=3),
        "knn": ProbeSpec(
            "knn",
            "probekit.probes.registry:knn_adapter",
            streamable=True,
            memory="probekit.probes.memory:knn_bytes",
            order=4,
        ),
    },
)

DENSE_TASKS: Registry[DenseTaskSpec] = Registry(
    "probekit.dense_tasks",
    DenseTaskSpec,
    {
        "segment": DenseTaskSpec(
            "segment",
            "segmentation",
            metric="miou",
            second="pixel_accuracy",
            count_unit="pixels",
            fits=True,
            test_unit="images",
            sidecar_kind="confusion",
            data="mosaic",
            pixels=True,
            seeded=True,
        ),
        "correspond": DenseTaskSpec(
            "correspond",
            "correspondence",
            metric="pck",
            second="pck_point",
            count_unit="pairs",
            fits=False,
            test_unit="pairs",
            sidecar_kind="pck",
            data="pairs",
        ),
    },
)


def probe_order(names: Iterable[str]) -> list[str]:
    """``names`` in report order: registered probes by their ``order``, then any other by name."""
    return sorted(set(names), key=lambda name: (PROBE_SPECS[name].order if name in PROBE_SPECS else 1_000_000, name))


def streamable_probes() -> frozenset[str]:
    return frozenset(name for name, spec in PROBE_SPECS.items() if spec.streamable)


def epoch_based_probes() -> frozenset[str]:
    return frozenset(name for name, spec in PROBE_SPECS.items() if spec.epoch_based)


__all__ = [
    "ProbeSpec",
    "DenseTaskSpec",
    "PROBE_SPECS",
    "DENSE_TASKS",
    "probe_order",
    "streamable_probes",
    "epoch_based_probes",
]
