"""The results table: one tidy row per (cell, probe, metric), on disk as CSV.

Columns (in this order), units:

========== ==========================================================================
model      model id (free text, e.g. "ddpm-cifar10")
dataset    dataset id
t          the framework's own timestep index (DDPM: 0..T-1 with 0 least noisy)
sigma      noise std relative to signal, sqrt((1 - alpha_bar) / alpha_bar); 0 = clean
logsnr     log(alpha_bar / (1 - alpha_bar)), natural log; +inf for clean input
alpha_bar  cumulative signal fraction, in [0, 1]
layer      layer name as the backbone registry lists it
stage      "down" / "mid" / "up" / "block" / ...
depth      position of the layer in forward order (0 = first)
probe      "linear" / "logreg" / "sgd" / "mlp" / "knn" / ...
params     the probe's settings for this cell, chosen on val where it searches several
           (e.g. "C=1", "k=20,T=0.07"); empty when it has none
metric     "top1" or "mean_class_recall"
split      "val" (held out of train; every choice is made on it) or "test" (reported)
value      the metric as a fraction in [0, 1] (not percent)
ci_low     Wilson 95 % interval for top1; NaN for mean_class_recall
ci_high    idem
n_train    samples the probe was fitted on (train minus the validation split)
n_eval     samples this row was scored on (the size of its split)
========== ==========================================================================

A table that is not a probe run's records its kind in an extra column ``kind`` ("segment",
"similarity", "fusion", "labels", or a registered dense task's name; :func:`with_kind`), and
:func:`table_kind` reads it; a probe table has no such column (it is the default kind, and its
bytes stay those of earlier versions), and tables written before the column existed are
recognised by their columns and metrics.

"Best" always means chosen on val: :func:`best_cells` picks the cell with the highest val value
and reports its test row. A table without val rows (``--val-fraction 0``) is chosen on test, and
says so (column ``chosen_on``).

Plots read only this table, so anything a figure needs lives in a column.
"""

from __future__ import annotations

import math
import os
import tempfile
from collections.abc import Hashable, Mapping
from dataclasses import asdict
from pathlib import Path

import pandas as pd

from probekit.core.atomic import publish
from probekit.core.errors import ProbekitError
from probekit.core.types import CellInfo
from probekit.evaluate.metrics import CellScore, wilson_interval

COLUMNS: tuple[str, ...] = (
    "model",
    "dataset",
    "t",
    "sigma",
    "logsnr",
    "alpha_bar",
    "layer",
    "stage",
    "depth",
    "probe",
    "params",
    "metric",
    "split",
    "value",
    "ci_low",
    "ci_high",
    "n_train",
    "n_eval",
)
METRICS: tuple[str, ...] = ("top1", "mean_class_recall")
SPLITS: tuple[str, ...] = ("val", "test")

_DTYPES = {
    "model": str,
    "dataset": str,
    "t": "int64",
    "sigma": "float64",
    "logsnr": "float64",
    "alpha_bar": "float64",
    "layer": str,
    "stage": str,
    "depth": "int64",
    "probe": str,
    "params": str,
    "metric": str,
    "split": str,
    "value": "float64",
    "ci_low": "float64",
    "ci_high": "float64",
    "n_train": "int64",
    "n_eval": "int64",
}

# pandas < 3 parses floats with a fast, not always exact, parser unless asked; pandas 3 is exact
# by default and deprecates the option.
_EXACT_FLOATS = {"float_precision": "round_trip"} if int(pd.__version__.split(".")[0]) < 3 else {}


def scores_to_table(
    scores: Mapping[str, Mapping[Hashable, Mapping[str, CellScore]]],
    cells: Mapping[Hashable, CellInfo],
    *,
    model: str,
    dataset: str,
    n_train: int,
    params: Mapping[str, Mapping[Hashable, str]] | None = None,
) -> pd.DataFrame:
    """Flatten ``{probe: {cell key: {split: CellScore}}}`` into the tidy results table.

    ``cells`` maps every cell key used in ``scores`` to its :class:`CellInfo`; ``split`` is "val"
    or "test"; ``params[probe][cell]`` is the probe's setting for that cell (empty when absent).
    One row per (probe, cell, split, metric), in the order of ``scores``, then of each probe's
    cells, then val before test.
    """
    rows = []
    for probe, per_cell in scores.items():
        for key, per_split in per_cell.items():
            if key not in cells:
                raise KeyError(f"probe {probe!r} scored cell {key!r} that has no CellInfo")
            info = cells[key]
            setting = (params or {}).get(probe, {}).get(key, "")
            for split in SPLITS:
                if split not in per_split:
                    continue
                score = per_split[split]
                correct = round(score.top1 * score.n_test)
                ci = {
                    "top1": wilson_interval(correct, score.n_test),
                    "mean_class_recall": (math.nan, math.nan),
                }
                for metric in METRICS:
                    rows.append(
                        {
                            "model": model,
                            "dataset": dataset,
                            **asdict(info),  # t, sigma, logsnr, alpha_bar, layer, stage, depth
                            "probe": probe,
                            "params": setting,
                            "metric": metric,
                            "split": split,
                            "value": getattr(score, metric),
                            "ci_low": ci[metric][0],
                            "ci_high": ci[metric][1],
                            "n_train": n_train,
                            "n_eval": score.n_test,
                        }
                    )
    return pd.DataFrame(rows, columns=list(COLUMNS)).astype(_DTYPES)


def best_cells(table: pd.DataFrame, metric: str = "top1", *, choose_on: str = "val") -> pd.DataFrame:
    """The chosen cell per (model, dataset, probe), reported with its test row.

    The choice is made on the ``choose_on`` split ("val", the default and the protocol; "test"
    only to show what choosing on test would have picked). A (model, dataset, probe) without val
    rows (probed with ``--val-fraction 0``) is chosen on test. Best = highest value; ties go to
    the lower t (less noise), then the lower depth (shallower layer), so the choice is
    deterministic.

    Returns the chosen cells' test rows (all table columns) plus ``chosen_on`` ("val" / "test")
    and ``val_value`` (the chosen cell's val value; NaN when chosen on test), sorted by model,
    dataset, probe, with a fresh index.
    """
    rows = table[(table["metric"] == metric) & table["value"].notna()]
    if rows.empty:
        raise ProbekitError(f"the results table has no {metric!r} values to rank")
    picked = []
    for _, group in rows.groupby(["model", "dataset", "probe"], sort=True):
        test = group[group["split"] == "test"]
        if test.empty:
            continue
        chooser = group[group["split"] == choose_on]
        chosen_on = choose_on if not chooser.empty else "test"
        if chooser.empty:
            chooser = test
        winner = chooser.sort_values(["value", "t", "depth"], ascending=[False, True, True], kind="mergesort").iloc[0]
        report = test[(test["t"] == winner["t"]) & (test["layer"] == winner["layer"])]
        if report.empty:
            raise ProbekitError(
                f"cell t={winner['t']} {winner['layer']} of {winner['model']} has {chosen_on} rows but no test row"
            )
        row = report.iloc[0].copy()
        row["chosen_on"] = chosen_on
        row["val_value"] = winner["value"] if chosen_on == "val" else math.nan
        picked.append(row)
    if not picked:
        raise ProbekitError(f"the results table has no test {metric!r} rows to report")
    best = pd.DataFrame(picked)
    return best.sort_values(["model", "dataset", "probe"], kind="mergesort").reset_index(drop=True)


def best_cell(
    table: pd.DataFrame,
    *,
    probe: str = "linear",
    model: str | None = None,
    require_val: bool = True,
    source: str = "the results table",
) -> tuple[int, str]:
    """(t, layer) of the best top-1 cell of one probe of one model, as :func:`best_cells` chooses it.

    The policy, the same for every caller: the table must hold rows of ``probe``; of one model,
    or of ``model`` when it is named; and, with ``require_val``, the choice must have been made
    on a validation split (a choice made on test would make any later test number optimistic).
    Anything else is refused with a :class:`ProbekitError` naming ``source``; nothing falls back.
    """
    rows = table[table["probe"] == probe]
    if rows.empty:
        raise ProbekitError(
            f"{source} has no rows of probe {probe!r} (its probes: {', '.join(sorted(table['probe'].unique()))})"
        )
    models = sorted(rows["model"].unique())
    if model is not None:
        if model not in models:
            raise ProbekitError(f"{source} has no rows of model {model!r} (its models: {', '.join(models)})")
        rows = rows[rows["model"] == model]
    elif len(models) > 1:
        raise ProbekitError(f"{source} holds several models ({', '.join(models)}): name the cell or the model")
    best = best_cells(rows, "top1").iloc[0]
    if require_val and best["chosen_on"] != "val":
        raise ProbekitError(
            f"{source} has no validation rows: probe with a validation split (--val-fraction > 0) first"
        )
    return int(best["t"]), str(best["layer"])


def format_summary(table: pd.DataFrame, metric: str = "top1") -> str:
    """Plain-text lines naming the val-chosen cell per probe, grouped under each (model, dataset).

    Example::

        linear  t=100 (sigma=0.34) up_blocks.1.resnets.0  val 88.0 %  test 87.3 % [86.6, 88.0]
                (choosing on test would have picked t=50 down_blocks.2 at 87.5 %)

    A probe without a validation split says that its cell was chosen on test.
    """
    best = best_cells(table, metric)
    on_test = best_cells(table, metric, choose_on="test")
    width = max(len(p) for p in best["probe"])
    lines: list[str] = []
    for (model, dataset), group in best.groupby(["model", "dataset"], sort=False):
        lines.append(f"{model} on {dataset}")
        for row in group.itertuples(index=False):
            ci = ""
            if not (math.isnan(row.ci_low) or math.isnan(row.ci_high)):
                ci = f" [{100 * row.ci_low:.1f}, {100 * row.ci_high:.1f}]"
            setting = f" {row.params}" if row.params else ""
            if row.chosen_on == "val":
                chosen = f"val {100 * row.val_value:.1f} %  test"
            else:
                chosen = "CHOSEN ON TEST (no validation split; optimistic)"
            lines.append(
                f"  {row.probe:<{width}}  t={row.t} (sigma={row.sigma:.3g}) {row.layer}{setting}  "
                f"{chosen} {metric}={100 * row.value:.1f} %{ci}"
            )
            alt = on_test[
                (on_test["model"] == model) & (on_test["dataset"] == dataset) & (on_test["probe"] == row.probe)
            ]
            if row.chosen_on == "val" and not alt.empty:
                other = alt.iloc[0]
                if (other["t"], other["layer"]) != (row.t, row.layer):
                    lines.append(
                        f"  {'':<{width}}  (the test-best cell differs: t={other['t']} {other['layer']} at "
                        f"{100 * other['value']:.1f} %; reported is the val-chosen one)"
                    )
    return "\n".join(lines)


def write_table(table: pd.DataFrame, path: str | os.PathLike) -> Path:
    """Write ``table`` as CSV atomically (a reader never sees a half-written file)."""
    check_columns(table, where="the table to write")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", newline="") as f:
            # Full float precision; +inf logsnr is written as "inf" and NaN as an empty field.
            table.to_csv(f, index=False)
        publish(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def read_table(path: str | os.PathLike) -> pd.DataFrame:
    """Read a results CSV written by :func:`write_table`; columns are checked and typed."""
    path = Path(path)
    if not path.is_file():
        raise ProbekitError(f"results file {path} does not exist; run `probekit probe` first")
    try:
        # Only an empty field is missing: a layer or model called "NA" or "null" stays a name.
        table = pd.read_csv(
            path,
            keep_default_na=False,
            na_values=[""],
            dtype={column: str for column, dtype in _DTYPES.items() if dtype is str},
            **_EXACT_FLOATS,
        )
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise ProbekitError(f"{path} is not a probekit results table (unreadable CSV: {err})") from err
    check_columns(table, where=str(path))
    table["params"] = table["params"].fillna("")
    try:
        table = table.astype(_DTYPES)
    except (ValueError, TypeError) as err:
        raise ProbekitError(f"{path} has a column of the wrong type ({err}); is it a probekit results table?") from err
    extra = [c for c in table.columns if c not in COLUMNS]
    return table[list(COLUMNS) + extra]


#: the column where a table records what it holds (absent: a probe table, or an older file)
KIND_COLUMN = "kind"


def with_kind(table: pd.DataFrame, kind: str) -> pd.DataFrame:
    """``table`` recording that it holds ``kind`` ("segment", "similarity", "fusion", "labels", ...)."""
    return table.assign(**{KIND_COLUMN: kind})


def table_kind(table: pd.DataFrame) -> str:
    """What a results table holds: its recorded kind, else "probe"; for a table written before
    kinds were recorded, the kind its columns and metrics show.
    """
    from probekit.core.specs import DENSE_TASKS

    if KIND_COLUMN in table.columns and len(table):
        return str(table[KIND_COLUMN].iloc[0])
    # Tables of earlier versions: recognised by what they hold.
    if (table["probe"] == "similarity").all():
        return "similarity"
    if "labels_per_class" in table.columns:
        return "labels"
    for task in ("segment", "correspond"):
        if (table["metric"] == DENSE_TASKS[task].metric).any():
            return task
    if (table["layer"] == "fused").any():
        return "fusion"
    return "probe"


def check_columns(table: pd.DataFrame, *, where: str = "the table") -> None:
    """Raise :class:`ProbekitError` naming the required columns that ``table`` lacks."""
    missing = [c for c in COLUMNS if c not in table.columns]
    if missing:
        raise ProbekitError(f"{where} lacks column(s) {', '.join(missing)}: it is not a probekit results table")
