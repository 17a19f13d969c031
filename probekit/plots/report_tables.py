"""The report's tables: rows built from results tables (and caches), one function per table.

Every row is read from the tables given (``best_cells`` picks the val-chosen cell); the page
(:mod:`probekit.plots.report`) only lays them out. Imports no models and no probes.
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from probekit.core.errors import ProbekitError
from probekit.core.specs import DENSE_TASKS, probe_order
from probekit.evaluate.compare import ChosenCell, RunComparison, compare_runs
from probekit.evaluate.predictions import predictions_path
from probekit.evaluate.results import best_cells, table_kind
from probekit.features.cache import FeatureCache

FUSED = "fused"

#: the dense tasks by name (their metrics and units); a table whose kind is one of them is a dense run
DENSE = DENSE_TASKS


def percent(value: float) -> str:
    """A fraction as a percentage with one decimal; empty for a missing value."""
    return "" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{100 * value:.1f}"


def table_html(
    header: Sequence[str],
    rows: Sequence[Sequence[object]],
    numeric: Sequence[int] = (),
    keys: Sequence[str] = (),
) -> str:
    """An HTML table (every value escaped); ``keys`` gives rows a ``data-cell`` key that opens the cell's panel."""
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join(
        (f'<tr data-cell="{html.escape(keys[n])}">' if n < len(keys) and keys[n] else "<tr>")
        + "".join(f"<td{' class=num' if i in numeric else ''}>{html.escape(str(v))}</td>" for i, v in enumerate(r))
        + "</tr>"
        for n, r in enumerate(rows)
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def protocol_rows(tables: dict[Path, pd.DataFrame]) -> list[list[object]]:
    """One row per (results file, model, dataset): its kind, probes and the protocol it was scored with."""
    rows = []
    for path, table in tables.items():
        kind = table_kind(table)
        for (model, dataset), group in table.groupby(["model", "dataset"], sort=False):
            sizes = group.groupby("split")["n_eval"].max().to_dict()
            if kind == "similarity":
                protocol = f"{int(sizes.get('test', max(sizes.values())))} images, seeded subsample"
            elif kind in DENSE:
                unit = DENSE[kind].count_unit
                fit = f"fit on {int(group['n_train'].max())} {unit}, " if DENSE[kind].fits else "nothing fitted, "
                protocol = (
                    f"{fit}val {int(sizes.get('val', 0))} {unit}, test {int(sizes.get('test', 0))} {unit}; "
                    "chosen on val"
                )
            elif kind == "labels":
                budgets = ", ".join(dict.fromkeys(group["labels_per_class"].astype(str)))
                protocol = (
                    f"fit on {budgets} labels per class ({int(group['budget_draw'].max()) + 1} draws each), "
                    f"val {int(sizes.get('val', 0))}, test {int(sizes.get('test', 0))}; chosen on val per draw"
                )
            else:
                chosen = "val" if "val" in sizes else "test (no validation split)"
                protocol = (
                    f"fit on {int(group['n_train'].max())}, val {int(sizes.get('val', 0))}, "
                    f"test {int(sizes.get('test', 0))}; chosen on {chosen}"
                )
            probes = ", ".join(sorted(set(group["probe"]) - {""}))
            rows.append([path.name, kind, model, dataset, probes, protocol])
    return rows


def best_rows(tables: dict[Path, pd.DataFrame]) -> tuple[list[list[object]], list[str]]:
    """The val-chosen cell of every (model, probe) of the probe and fusion runs, and each row's cell key."""
    rows, keys = [], []
    for table in tables.values():
        if table_kind(table) not in ("probe", "fusion"):
            continue
        for r in best_cells(table).itertuples(index=False):
            cell = (
                str(getattr(r, "cells", "")).replace(";", "; ")
                if r.layer == FUSED
                else f"t={r.t} (σ={r.sigma:.3g}) {r.layer}"
            )
            rows.append(
                [
                    r.model,
                    r.probe,
                    cell,
                    r.params,
                    percent(r.val_value),
                    percent(r.value),
                    f"[{percent(r.ci_low)}, {percent(r.ci_high)}]",
                    r.chosen_on,
                ]
            )
            keys.append(f"{r.model}|{r.probe}|{int(r.t)}|{r.layer}")
    return rows, keys


def _common_probe(a: pd.DataFrame, b: pd.DataFrame) -> str | None:
    shared = set(a["probe"]) & set(b["probe"])
    return probe_order(shared)[0] if shared else None


@dataclass(frozen=True)
class Paired:
    """One paired comparison A - B of two runs' chosen cells: its result, or why there is none."""

    a: str  # "results_a.csv linear" (file and probe), shown when there is no result
    b: str
    result: RunComparison | None
    error: str = ""
    baseline: bool = False  # the first probe run against another probe run (the answer's comparisons)


def paired_comparisons(tables: dict[Path, pd.DataFrame], n_boot: int) -> list[Paired]:
    """A minus B for: first probe run vs every other probe run; each fusion probe vs its model's run."""
    runs = [p for p, t in tables.items() if table_kind(t) == "probe" and predictions_path(p).is_file()]
    pairs: list[tuple[Path, Path, str, str, bool]] = []
    for other in runs[1:]:
        probe = _common_probe(tables[runs[0]], tables[other])
        if probe:
            pairs.append((runs[0], other, probe, probe, True))
    for path, table in tables.items():
        if table_kind(table) != "fusion" or not predictions_path(path).is_file():
            continue
        model = table["model"].iloc[0]
        same = [p for p in runs if model in set(tables[p]["model"])]
        if not same:
            continue
        baseline = "linear" if "linear" in set(tables[same[0]]["probe"]) else sorted(set(tables[same[0]]["probe"]))[0]
        for probe in sorted(set(table.loc[table["layer"] == FUSED, "probe"])):
            pairs.append((path, same[0], probe, baseline, False))
    out = []
    for a, b, probe_a, probe_b, first in pairs:
        names = (f"{a.name} {probe_a}", f"{b.name} {probe_b}")
        try:
            out.append(
                Paired(*names, compare_runs(a, b, probe=probe_a, probe_b=probe_b, n_boot=n_boot), baseline=first)
            )
        except ProbekitError as err:
            out.append(Paired(*names, None, str(err), baseline=first))
    return out


def chosen_name(cell: ChosenCell) -> str:
    """How a compared run's chosen cell is named: "model probe (t=.. layer)" or "(fused)"."""
    return f"{cell.model} {cell.probe} ({'fused' if cell.layer == FUSED else f't={cell.t} {cell.layer}'})"


def comparison_rows(comparisons: Sequence[Paired]) -> list[list[object]]:
    """The rows of the paired-comparisons table: A, B, both accuracies, A - B, its interval, McNemar."""
    rows: list[list[object]] = []
    for c in comparisons:
        if c.result is None:
            rows.append([c.a, c.b, "", "", "", "", f"not comparable: {c.error}"])
            continue
        p = c.result.paired
        rows.append(
            [
                chosen_name(c.result.a),
                chosen_name(c.result.b),
                percent(p.acc_a),
                percent(p.acc_b),
                f"{100 * p.diff:+.1f}",
                f"[{100 * p.ci_low:+.1f}, {100 * p.ci_high:+.1f}]",
                f"p = {p.p_value:.3g} ({p.only_a} vs {p.only_b} discordant of {p.n})",
            ]
        )
    return rows


def cell_name(t: object, layer: object) -> str:
    """A single cell as "t=T layer"."""
    return f"t={t} {layer}"


def dense_rows(tables: dict[Path, pd.DataFrame]) -> list[list[object]]:
    """Val-chosen cell of every dense run: its val and test metric and the task's second metric on test."""
    rows = []
    for table in tables.values():
        kind = table_kind(table)
        if kind not in DENSE:
            continue
        metric, second = DENSE[kind].metric, DENSE[kind].second
        for r in best_cells(table, metric).itertuples(index=False):
            other = table[
                (table["model"] == r.model)
                & (table["t"] == r.t)
                & (table["layer"] == r.layer)
                & (table["split"] == "test")
                & (table["metric"] == second)
            ]["value"]
            rows.append(
                [
                    kind,
                    r.model,
                    cell_name(r.t, r.layer),
                    metric,
                    percent(r.val_value),
                    percent(r.value),
                    f"{second} {percent(float(other.iloc[0]))}" if len(other) else "",
                ]
            )
    return rows


def dense_comparison_rows(tables: dict[Path, pd.DataFrame], n_boot: int) -> list[list[object]]:
    """A minus B at the val-chosen cells: the first run of each dense task against every other run of it."""
    from probekit.evaluate.dense_sidecar import compare_dense, sidecar_path

    rows: list[list[object]] = []
    for task in DENSE:
        runs = [p for p, t in tables.items() if table_kind(t) == task and sidecar_path(p).is_file()]
        for other in runs[1:]:
            name_a, name_b = (str(tables[r]["model"].iloc[0]) for r in (runs[0], other))
            try:
                c = compare_dense(runs[0], other, n_boot=n_boot)
            except ProbekitError as err:
                rows.append([task, name_a, name_b, "", "", "", f"not comparable: {err}"])
                continue
            rows.append(
                [
                    task,
                    f"{name_a} ({cell_name(*c.cell_a)})",
                    f"{name_b} ({cell_name(*c.cell_b)})",
                    percent(c.value_a),
                    percent(c.value_b),
                    f"{100 * c.diff:+.1f}",
                    f"[{100 * c.ci_low:+.1f}, {100 * c.ci_high:+.1f}] over {c.n} test {DENSE[task].test_unit}",
                ]
            )
    return rows


def dense_vs_global(tables: dict[Path, pd.DataFrame]) -> str:
    """Where the first probe run's val-chosen cell scores on each dense task of the same model."""
    probes = [t for t in tables.values() if table_kind(t) == "probe"]
    if not probes:
        return ""
    table = probes[0]
    probe = "linear" if "linear" in set(table["probe"]) else sorted(set(table["probe"]))[0]
    best = best_cells(table[table["probe"] == probe]).iloc[0]
    parts = []
    for dense in (t for t in tables.values() if table_kind(t) in DENSE):
        kind = table_kind(dense)
        metric = DENSE[kind].metric
        own = dense[dense["model"] == best["model"]]
        if own.empty:
            continue
        chosen = best_cells(own, metric).iloc[0]
        there = own[
            (own["t"] == best["t"])
            & (own["layer"] == best["layer"])
            & (own["split"] == "test")
            & (own["metric"] == metric)
        ]["value"]
        at_global = f"{percent(float(there.iloc[0]))} % there" if len(there) else "not in the dense grid"
        same = "the same cell" if (chosen["t"], chosen["layer"]) == (best["t"], best["layer"]) else "a different cell"
        parts.append(
            f"{kind}: val-chosen {cell_name(chosen['t'], chosen['layer'])}, {same}, test {metric} "
            f"{percent(chosen['value'])} % (global cell: {at_global})"
        )
    if not parts:
        return ""
    return (
        f"The global {probe} probe's val-chosen cell of {best['model']} is {cell_name(best['t'], best['layer'])}. "
        + "; ".join(parts)
        + "."
    )


def label_rows(tables: dict[Path, pd.DataFrame]) -> list[list[object]]:
    """One row per (model, labels per class): the mean, min and max over draws of the val-chosen cell's test top-1."""
    from probekit.plots.label_efficiency import label_efficiency_table

    labelled = [t for t in tables.values() if table_kind(t) == "labels"]
    if not labelled:
        return []
    summary = label_efficiency_table(pd.concat(labelled, ignore_index=True))
    return [
        [
            r.model,
            r.labels_per_class,
            r.n_train,
            r.draws,
            percent(r.mean),
            f"[{percent(r.min)}, {percent(r.max)}]",
            r.cells,
        ]
        for r in summary.itertuples(index=False)
    ]


def cache_rows(caches: Sequence[Path]) -> tuple[list[list[object]], list[str]]:
    """One row per cache (model, framework, sizes, grid, layers, pooling, draws, views, the precision computed
    in and the model fingerprint) and the commands they record.
    """
    rows, commands = [], []
    for path in caches:
        with FeatureCache(path) as cache:
            a = cache.attrs
            sizes = ", ".join(f"{s} {cache.progress(s)[1]}" for s in cache.splits)
            rows.append(
                [
                    path.name,
                    a.get("model_id"),
                    a.get("framework"),
                    a.get("dataset"),
                    sizes,
                    f"{len(cache.timesteps)} ({', '.join(map(str, cache.timesteps))})",
                    len(cache.layers),
                    a.get("pooling"),
                    a.get("draws"),
                    a.get("views", 0),
                    a.get("precision", "fp32"),
                    str(a.get("model_fingerprint", ""))[:12] or "(not recorded)",
                ]
            )
            if a.get("command"):
                commands.append(str(a["command"]))
    return rows, commands
