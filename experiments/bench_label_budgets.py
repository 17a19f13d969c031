"""Label budgets: every budget and draw in one pass against one probe run per (budget, draw).

``probe_label_budgets`` opens the cache once, reads each cell once and solves the draws of a
budget as one batched problem (:func:`probekit.probes.run.probe_cache_subsets`). The loop it
replaces called :func:`probekit.probes.run.probe_cache` once per (budget, draw), each call
opening the cache, reading every cell and solving one draw. Both sides run on the same caches in
one process, alternated round by round (the order rotated), and the script reports each side's
median time, their ratio, and how far the two tables are apart (per-cell top-1 in points; the
draws' rows come in another order and are solved in one batch, so a cell may move by an image
within the solver's tolerance).

Usage (the main job's label-efficiency step: its three caches, linear, 1, 10, 50 labels per
class with 3 draws and all, at t = 0; run ``make demo`` first):
    python experiments/bench_label_budgets.py --repeats 3
Writes experiments/results/bench_label_budgets.csv (measure, value, unit, machine, setup).
"""

from __future__ import annotations

import argparse
import csv
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from probekit.core import threads  # noqa: E402
from probekit.core.precision import machine_description  # noqa: E402
from probekit.probes.label_budget import ALL, budget_positions, probe_label_budgets  # noqa: E402
from probekit.probes.run import ProbeRunConfig, probe_cache  # noqa: E402


def one_run_per_draw(cache: Path, config: ProbeRunConfig, budgets: list[int | None], draws: int) -> pd.DataFrame:
    """The replaced loop: one probe_cache call per (budget, draw), same draws, same table."""
    tables = []
    for per_class in budgets:
        for draw in range(1 if per_class is None else draws):
            subset = None
            if per_class is not None:

                def subset(y: np.ndarray, k: int = per_class, d: int = draw) -> np.ndarray:
                    return budget_positions(y, k, config.seed, d)

            table = probe_cache(cache, config, progress=False, fit_subset=subset).table
            table["labels_per_class"] = ALL if per_class is None else str(per_class)
            table["budget_draw"] = draw
            tables.append(table)
    return pd.concat(tables, ignore_index=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--caches", nargs="+", default=["out/demo/ddpm.h5", "out/demo/random-init.h5", "out/demo/pixels.h5"]
    )
    parser.add_argument("--budgets", default="1,10,50,all")
    parser.add_argument("--draws", type=int, default=3)
    parser.add_argument("--timesteps", type=int, nargs="+", default=[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default="experiments/results/bench_label_budgets.csv")
    args = parser.parse_args()
    threads.configure()
    budgets: list[int | None] = [None if b == ALL else int(b) for b in args.budgets.split(",")]
    caches = [Path(c) for c in args.caches]
    missing = [str(c) for c in caches if not c.is_file()]
    if missing:
        sys.exit(f"bench_label_budgets: {', '.join(missing)} not found: run `make demo` first, or pass --caches")

    def config_for(cache: Path) -> ProbeRunConfig:
        # pixels have one cell at t = 0 only; the model caches are probed on the chosen rows
        return ProbeRunConfig(probes=("linear",), timesteps=None if "pixels" in cache.name else args.timesteps)

    sides = {
        "one pass": lambda: [
            probe_label_budgets(c, config_for(c), budgets, draws=args.draws, progress=False) for c in caches
        ],
        "one run per draw": lambda: [one_run_per_draw(c, config_for(c), budgets, args.draws) for c in caches],
    }
    times: dict[str, list[float]] = {name: [] for name in sides}
    tables: dict[str, list[pd.DataFrame]] = {}
    load_before = os.getloadavg()[0]
    names = list(sides)
    for round_ in range(args.repeats):
        for name in names[round_ % 2 :] + names[: round_ % 2]:
            start = time.perf_counter()
            tables[name] = sides[name]()
            times[name].append(time.perf_counter() - start)
            print(f"round {round_ + 1}: {name} {times[name][-1]:.2f} s", flush=True)
    load_after = os.getloadavg()[0]
    key = ["model", "labels_per_class", "budget_draw", "t", "layer", "probe", "split", "metric"]
    a = pd.concat(tables["one pass"])
    b = pd.concat(tables["one run per draw"])
    merged = a.merge(b, on=key, suffixes=("_pass", "_runs"))
    assert len(merged) == len(a) == len(b), "the two sides must score the same cells"
    top1 = merged[merged["metric"] == "top1"]
    diff = (top1["value_pass"] - top1["value_runs"]).abs() * 100
    medians = {name: statistics.median(values) for name, values in times.items()}
    rows = [
        ("one pass, median", medians["one pass"], "s"),
        ("one run per draw, median", medians["one run per draw"], "s"),
        ("speed-up of one pass", medians["one run per draw"] / medians["one pass"], "x"),
        ("cells x (budget, draw) x split scored", len(top1), "count"),
        ("top-1 differing", int((diff > 0).sum()), "count"),
        ("top-1 |difference|, mean", float(diff.mean()), "points"),
        ("top-1 |difference|, max", float(diff.max()), "points"),
    ]
    setup = (
        f"{', '.join(c.name for c in caches)}; linear; budgets {args.budgets} x {args.draws} draws; "
        f"t = {args.timesteps}; {args.repeats} alternated rounds; load {load_before:.1f} -> {load_after:.1f}"
    )
    machine = machine_description()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["measure", "value", "unit", "machine", "setup"])
        for measure, value, unit in rows:
            writer.writerow([measure, value, unit, machine, setup])
    print(f"{machine}\n{setup}")
    for measure, value, unit in rows:
        print(f"{measure}: {value:.3f} {unit}" if isinstance(value, float) else f"{measure}: {value} {unit}")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
