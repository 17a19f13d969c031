"""``probekit compare``: two runs' val-chosen cells, paired on the same test images."""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from probekit.core.errors import ProbekitError
from probekit.evaluate import PairedComparison, compare_correct
from probekit.evaluate.predictions import PredictionSet, predictions_path, read_predictions
from probekit.evaluate.results import best_cells, read_table


@dataclass(frozen=True)
class ChosenCell:
    """A run's val-chosen cell for one probe."""

    model: str
    probe: str
    t: int
    layer: str
    params: str
    chosen_on: str


@dataclass(frozen=True)
class RunComparison:
    """A minus B, with each side's chosen cell."""

    a: ChosenCell
    b: ChosenCell
    paired: PairedComparison


def chosen_cell(results_path: str | os.PathLike, probe: str, flag: str = "--probe") -> ChosenCell:
    """The val-chosen cell of ``probe`` in a results CSV (it must hold a single model).

    ``flag`` is the option that picks this side's probe, named in the error when it has none.
    """
    table = read_table(results_path)
    if "top1" not in set(table["metric"]):
        metrics = ", ".join(sorted(set(table["metric"].astype(str)))) or "none"
        raise ProbekitError(
            f"{results_path} has no 'top1' values (its metrics: {metrics}): compare needs a table written by "
            "`probekit probe` (a similarity table compares representations, not predictions)"
        )
    models = sorted(set(table["model"]))
    if len(models) != 1:
        raise ProbekitError(
            f"{results_path} holds {len(models)} models ({', '.join(models)}): compare runs of one model each"
        )
    best = best_cells(table)
    row = best[best["probe"] == probe]
    if row.empty:
        probes = sorted(set(best["probe"]))
        raise ProbekitError(
            f"{results_path} has no {probe!r} rows; it has probes {', '.join(probes)}: pick one with {flag} {probes[0]}"
        )
    r = row.iloc[0]
    return ChosenCell(
        model=str(r["model"]),
        probe=probe,
        t=int(r["t"]),
        layer=str(r["layer"]),
        params=str(r["params"]),
        chosen_on=str(r["chosen_on"]),
    )


def check_same_test_set(a: PredictionSet, b: PredictionSet, names: tuple[str, str]) -> None:
    """Refuse two sidecars whose test images or labels differ, naming what differs."""
    if a.dataset != b.dataset:
        raise ProbekitError(
            f"{names[0]} is on {a.dataset} but {names[1]} on {b.dataset}: a paired comparison needs the same test "
            "images"
        )
    if len(a.index) != len(b.index):
        raise ProbekitError(
            f"{names[0]} has {len(a.index)} test images but {names[1]} has {len(b.index)}: probe the same test set"
        )
    if not np.array_equal(a.index, b.index):
        first = int(np.flatnonzero(a.index != b.index)[0])
        raise ProbekitError(
            f"{names[0]} and {names[1]} hold different test images (first difference at position {first}: sample "
            f"{a.index[first]} vs {b.index[first]}): extract both with the same --data, --test-limit and --seed"
        )
    if not np.array_equal(a.labels, b.labels):
        raise ProbekitError(
            f"{names[0]} and {names[1]} have the same test images but different labels: check the datasets"
        )


def compare_runs(
    results_a: str | os.PathLike,
    results_b: str | os.PathLike,
    *,
    probe: str = "linear",
    probe_b: str | None = None,
    n_boot: int = 10_000,
    seed: int = 0,
) -> RunComparison:
    """Paired bootstrap interval and exact McNemar test of A's and B's val-chosen cells."""
    cell_a = chosen_cell(results_a, probe)
    cell_b = chosen_cell(results_b, probe_b or probe, "--probe-b")
    pred_a = read_predictions(predictions_path(results_a))
    pred_b = read_predictions(predictions_path(results_b))
    check_same_test_set(pred_a, pred_b, (str(results_a), str(results_b)))
    paired = compare_correct(
        pred_a.correct(cell_a.probe, cell_a.t, cell_a.layer),
        pred_b.correct(cell_b.probe, cell_b.t, cell_b.layer),
        n_boot=n_boot,
        seed=seed,
    )
    return RunComparison(a=cell_a, b=cell_b, paired=paired)


def format_comparison(c: RunComparison) -> str:
    """Three lines: both cells and accuracies, the difference with its interval, McNemar."""
    p = c.paired

    def describe(cell: ChosenCell, acc: float) -> str:
        setting = f" {cell.params}" if cell.params else ""
        note = "" if cell.chosen_on == "val" else " (chosen on test)"
        return f"{cell.model} {cell.probe} t={cell.t} {cell.layer}{setting}{note}: {100 * acc:.1f} %"

    return "\n".join(
        [
            f"A  {describe(c.a, p.acc_a)}",
            f"B  {describe(c.b, p.acc_b)}",
            f"A - B = {100 * p.diff:+.1f} points, paired bootstrap {100 * p.level:.0f} % interval "
            f"[{100 * p.ci_low:+.1f}, {100 * p.ci_high:+.1f}] ({p.n_boot} resamples of {p.n} test images)",
            f"exact McNemar: {p.only_a} images right only for A, {p.only_b} only for B, p = {p.p_value:.3g}",
        ]
    )
