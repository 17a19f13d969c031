"""Several runs ranked on the same test images: one val-chosen cell per run and probe.

For each probe, every run's cell is chosen on its validation split (:func:`.results.best_cells`)
and scored on test: top-1 with a percentile bootstrap interval (the same resampling of test
images as the paired tests). The *best* run is the one whose chosen cell has the highest
validation top-1 (ties: higher test top-1, then the first given), so that picking it uses no test
label. Every other run is compared with the best on the same test images (paired bootstrap
interval of the difference, exact McNemar test, :mod:`.paired`), and the McNemar p-values of
those m - 1 comparisons are adjusted together by Holm's step-down method, which bounds the chance
of any false "worse than the best" at the level without assuming the tests independent.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from probekit.core.errors import ProbekitError
from probekit.evaluate.compare import check_same_test_set
from probekit.evaluate.paired import compare_correct, paired_bootstrap
from probekit.evaluate.predictions import PredictionSet, predictions_path, read_predictions
from probekit.evaluate.results import best_cells, read_table

#: the leaderboard table's columns, in order (fractions in [0, 1]; ``diff`` and its interval in [-1, 1])
LEADERBOARD_COLUMNS = (
    "probe",
    "rank",
    "name",
    "model",
    "t",
    "sigma",
    "logsnr",
    "layer",
    "depth",
    "params",
    "val_top1",
    "test_top1",
    "ci_low",
    "ci_high",
    "best",
    "diff",
    "diff_low",
    "diff_high",
    "only_this",
    "only_best",
    "p_value",
    "p_holm",
    "n_test",
)


@dataclass(frozen=True)
class Run:
    """One run of the leaderboard: its display name and results CSV (one model, with its predictions sidecar)."""

    name: str
    results: Path


def holm_adjust(p_values: Sequence[float]) -> np.ndarray:
    """Holm's step-down adjusted p-values, in the order given.

    With the m p-values sorted ascending, p_(i) becomes max_{j <= i} min(1, (m - j + 1) p_(j)):
    rejecting every hypothesis whose adjusted value is below alpha controls the family-wise error
    rate at alpha.
    """
    p = np.asarray(p_values, dtype=np.float64)
    if p.ndim != 1 or np.any(~np.isfinite(p)) or np.any((p < 0) | (p > 1)):
        raise ProbekitError(f"Holm adjustment needs p-values in [0, 1], got {p_values!r}")
    m = len(p)
    order = np.argsort(p, kind="mergesort")
    stepped = np.minimum(1.0, (m - np.arange(m)) * p[order])
    adjusted = np.empty(m)
    adjusted[order] = np.maximum.accumulate(stepped) if m else stepped
    return adjusted


def parse_runs(results: Sequence[str | os.PathLike], names: Sequence[str] | None = None) -> list[Run]:
    """Pair results CSVs with names (default: each table's model); names must be unique."""
    if len(results) < 2:
        raise ProbekitError(f"a leaderboard needs at least two results CSVs, got {len(results)}")
    if names is not None and len(names) != len(results):
        raise ProbekitError(f"--names gives {len(names)} names for {len(results)} results CSVs: give one per file")
    runs = []
    for i, path in enumerate(results):
        if names is not None:
            name = names[i]
        else:
            models = sorted(set(read_table(path)["model"].astype(str)))
            name = models[0] if len(models) == 1 else str(Path(path).stem)
        runs.append(Run(name=name, results=Path(path)))
    seen = [r.name for r in runs]
    duplicates = sorted({n for n in seen if seen.count(n) > 1})
    if duplicates:
        raise ProbekitError(f"run name(s) {', '.join(duplicates)} given twice: give unique names with --names")
    return runs


def _chosen(run: Run, table: pd.DataFrame, probe: str) -> pd.Series | None:
    models = sorted(set(table["model"].astype(str)))
    if len(models) != 1:
        raise ProbekitError(f"{run.results} holds {len(models)} models ({', '.join(models)}): give one model per file")
    rows = table[(table["probe"] == probe) & (table["metric"] == "top1")]
    if rows.empty:
        return None
    return best_cells(rows).iloc[0]


def leaderboard(
    runs: Sequence[Run],
    *,
    probes: Sequence[str] | None = None,
    n_boot: int = 10_000,
    level: float = 0.95,
    seed: int = 0,
) -> pd.DataFrame:
    """The leaderboard (columns :data:`LEADERBOARD_COLUMNS`): per probe, runs sorted by test top-1.

    ``probes``: the probes ranked (default: every probe that at least two runs have). A run without
    a probe is left out of that probe's ranking.
    """
    tables = {run.name: read_table(run.results) for run in runs}
    predictions: dict[str, PredictionSet] = {run.name: read_predictions(predictions_path(run.results)) for run in runs}
    first = runs[0]
    for run in runs[1:]:
        check_same_test_set(predictions[first.name], predictions[run.name], (str(first.results), str(run.results)))
    if probes is None:
        counts: dict[str, int] = {}
        for table in tables.values():
            for probe in set(table.loc[table["metric"] == "top1", "probe"]):
                counts[probe] = counts.get(probe, 0) + 1
        probes = sorted(p for p, n in counts.items() if n >= 2)
        if not probes:
            raise ProbekitError("no probe was run on two or more of the results: nothing to rank")
    rows: list[dict[str, object]] = []
    for probe in probes:
        cells = {run.name: _chosen(run, tables[run.name], probe) for run in runs}
        present = [run for run in runs if cells[run.name] is not None]
        if len(present) < 2:
            raise ProbekitError(f"probe {probe!r} was run on {len(present)} of the results: rank a probe two runs have")
        correct = {
            r.name: predictions[r.name].correct(probe, int(cells[r.name]["t"]), str(cells[r.name]["layer"]))  # type: ignore[index]
            for r in present
        }

        val = {r.name: float(cells[r.name]["val_value"]) for r in present}  # type: ignore[index]
        # highest val top-1 (a run chosen on test ranks last), then test top-1; min is stable: ties go to the first
        best = min(
            present,
            key=lambda r: (-(val[r.name] if math.isfinite(val[r.name]) else -1.0), -float(np.mean(correct[r.name]))),
        )
        others = [r for r in present if r is not best]
        paired = {
            r.name: compare_correct(correct[r.name], correct[best.name], n_boot=n_boot, level=level, seed=seed)
            for r in others
        }
        adjusted = dict(zip(paired, holm_adjust([c.p_value for c in paired.values()])))
        for run in present:
            cell = cells[run.name]
            assert cell is not None
            acc, low, high = paired_bootstrap(
                correct[run.name], np.zeros_like(correct[run.name]), n_boot=n_boot, level=level, seed=seed
            )
            c = paired.get(run.name)
            rows.append(
                {
                    "probe": probe,
                    "name": run.name,
                    "model": str(cell["model"]),
                    "t": int(cell["t"]),
                    "sigma": float(cell["sigma"]),
                    "logsnr": float(cell["logsnr"]),
                    "layer": str(cell["layer"]),
                    "depth": int(cell["depth"]),
                    "params": str(cell["params"]),
                    "val_top1": float(cell["val_value"]),
                    "test_top1": acc,
                    "ci_low": low,
                    "ci_high": high,
                    "best": best.name,
                    "diff": 0.0 if c is None else c.diff,
                    "diff_low": math.nan if c is None else c.ci_low,
                    "diff_high": math.nan if c is None else c.ci_high,
                    "only_this": 0 if c is None else c.only_a,
                    "only_best": 0 if c is None else c.only_b,
                    "p_value": math.nan if c is None else c.p_value,
                    "p_holm": math.nan if c is None else adjusted[run.name],
                    "n_test": len(correct[run.name]),
                }
            )
    table = pd.DataFrame(rows)
    table = table.sort_values(["probe", "test_top1"], ascending=[True, False], kind="mergesort")
    table["rank"] = table.groupby("probe").cumcount() + 1
    return table[list(LEADERBOARD_COLUMNS)].reset_index(drop=True)


def best_per_level(table: pd.DataFrame, probe: str, metric: str = "top1") -> pd.DataFrame:
    """Per noise level of one model's table, the layer chosen on val at that level and its test row.

    One row per ``t`` (sorted by decreasing log-SNR, i.e. increasing noise): the test row of the
    layer with the highest val ``metric`` at that ``t`` (ties: the shallower layer), plus
    ``val_value``. Levels without val rows are chosen on test (``chosen_on``).
    """
    rows = table[(table["probe"] == probe) & (table["metric"] == metric) & table["value"].notna()]
    if rows.empty:
        raise ProbekitError(f"no {metric!r} rows of probe {probe!r} to choose a layer per noise level from")
    if rows["model"].nunique() != 1:
        raise ProbekitError("best_per_level needs the rows of one model")
    picked = []
    for _, level in rows.groupby("t", sort=True):
        test = level[level["split"] == "test"]
        if test.empty:
            continue
        chooser = level[level["split"] == "val"]
        chosen_on = "val" if not chooser.empty else "test"
        winner = (chooser if not chooser.empty else test).sort_values(
            ["value", "depth"], ascending=[False, True], kind="mergesort"
        )
        row = test[test["layer"] == winner["layer"].iloc[0]].iloc[0].copy()
        row["chosen_on"] = chosen_on
        row["val_value"] = float(winner["value"].iloc[0]) if chosen_on == "val" else math.nan
        picked.append(row)
    best = pd.DataFrame(picked)
    return best.sort_values("logsnr", ascending=False, kind="mergesort").reset_index(drop=True)


def write_leaderboard(table: pd.DataFrame, out: str | os.PathLike) -> Path:
    """Write the leaderboard CSV (full float precision) atomically."""
    from probekit.core.atomic import publish

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    table.to_csv(tmp, index=False, float_format="%.17g")
    publish(tmp, out)
    return out


def read_leaderboard(path: str | os.PathLike) -> pd.DataFrame:
    """Read a leaderboard CSV written by :func:`write_leaderboard`; its columns are checked."""
    path = Path(path)
    if not path.is_file():
        raise ProbekitError(f"leaderboard {path} does not exist: write it with `probekit leaderboard`")
    table = pd.read_csv(path, keep_default_na=False, na_values=[""], dtype={"name": str, "model": str, "params": str})
    missing = [c for c in LEADERBOARD_COLUMNS if c not in table.columns]
    if missing:
        raise ProbekitError(f"{path} lacks column(s) {', '.join(missing)}: it is not a probekit leaderboard")
    table["params"] = table["params"].fillna("")
    return table


def format_leaderboard(table: pd.DataFrame) -> str:
    """The leaderboard as text: one block per probe, one line per run."""
    lines = []
    for probe, rows in table.groupby("probe", sort=True):
        best = rows["best"].iloc[0]
        n = int(rows["n_test"].iloc[0])
        lines.append(
            f"{probe} probe: val-chosen cell of each run, test top-1 on {n} images [bootstrap interval]; "
            f"paired against {best} (best on val), McNemar p Holm-adjusted over {len(rows) - 1} comparisons"
        )
        width = max(len(str(name)) for name in rows["name"])
        for r in rows.itertuples():
            head = (
                f"  {r.rank:>2}. {r.name:<{width}}  t={r.t:<4} logSNR={r.logsnr:+6.2f} {r.layer:<24} "
                f"{100 * r.test_top1:5.1f} % [{100 * r.ci_low:.1f}, {100 * r.ci_high:.1f}]"
            )
            if r.name == best:
                lines.append(head + "  (best on val)")
            else:
                lines.append(
                    head + f"  {100 * r.diff:+5.1f} [{100 * r.diff_low:+.1f}, {100 * r.diff_high:+.1f}]  "
                    f"p={r.p_value:.3g} Holm {r.p_holm:.3g}"
                )
    return "\n".join(lines)
