"""Massive channels of a DiT and what dropping them does to kNN: the shipped Fashion-MNIST DiT and its random twin.

    nice -n 5 python experiments/massive.py [--out out/massive] [--train-limit 600] [--test-limit 300]

Extracts every block output of checkpoints/fashion-mnist-dit (trained, and ``--random-init``) at
t = 0, 100, 300 on a class-stratified Fashion-MNIST subset, probes every cell with kNN as is and
with ``--drop-massive``, and writes docs/results/massive.md: per cell the massive channels
(probekit.features.massive's rule) and the kNN test accuracy of the val-chosen k with and without
them, and a paired comparison of the val-chosen cells.
"""

from __future__ import annotations

import argparse
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from probekit.evaluate.paired import compare_correct
from probekit.evaluate.predictions import predictions_path, read_predictions
from probekit.features.cache import FeatureCache
from probekit.features.massive import RULE, SAMPLES, cache_massive

MODEL = "dit:checkpoints/fashion-mnist-dit/dit.pt?heads=3&vae=none"
TIMESTEPS = "0,100,300"


def _run(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "probekit", *args], check=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="out/massive")
    parser.add_argument("--train-limit", type=int, default=600)
    parser.add_argument("--test-limit", type=int, default=300)
    parser.add_argument("--page", default="docs/results/massive.md")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    limits = ["--train-limit", str(args.train_limit), "--test-limit", str(args.test_limit)]
    commands = []
    lines_cells, summary = [], []
    for name, extra in (("trained", []), ("random init", ["--random-init"])):
        tag = name.replace(" ", "-")
        cache = out / f"{tag}.h5"
        extract = ["extract", "--model", MODEL, *extra, "--data", "fashion-mnist", *limits, "--timesteps", TIMESTEPS,
                   "--precision", "fp32", "--out", str(cache), "--quiet"]  # fmt: skip
        if not cache.exists():
            _run(*extract)
        commands.append("probekit " + " ".join(extract))
        tables = {}
        for drop in (False, True):
            results = out / f"{tag}{'-drop' if drop else ''}.csv"
            probe = ["probe", "--cache", str(cache), "--probes", "knn", "--out", str(results), "--quiet"]
            probe += ["--drop-massive"] if drop else []
            if not results.exists():
                _run(*probe)
            commands.append("probekit " + " ".join(probe))
            tables[drop] = results
        with FeatureCache(cache) as c:
            massive = cache_massive(c)
            widths = {layer.name: layer.channels for layer in c.layers}
            # how far each cell is from the rule: its largest channel's mean |x| over the median channel's
            ratios = {}
            for point in c.grid:
                for layer in c.layers:
                    magnitude = np.abs(c.features("train", layer.name, point.t)[:SAMPLES].astype(np.float64)).mean(0)
                    ratios[(point.t, layer.name)] = magnitude.max() / np.median(magnitude)
        scores = {}
        for drop, path in tables.items():
            table = pd.read_csv(path)
            table = table[table["metric"] == "top1"]
            scores[drop] = table.pivot_table(index=["t", "layer"], columns="split", values="value")
        for (t, layer), channels in sorted(massive.items(), key=lambda item: (item[0][0], item[0][1])):
            kept, dropped = scores[False].loc[(t, layer)], scores[True].loc[(t, layer)]
            shown = ",".join(map(str, channels[:8])) + ("..." if len(channels) > 8 else "")
            lines_cells.append(
                f"| {name} | {t} | {layer} | {len(channels)} of {widths[layer]} ({shown or '-'}) | "
                f"{ratios[(t, layer)]:.1f} | "
                f"{100 * kept['test']:.1f} | {100 * dropped['test']:.1f} |"
            )
        picks = {}
        for drop, frame in scores.items():
            best = frame["val"].idxmax()
            picks[drop] = (best, frame.loc[best, "test"])
        a = read_predictions(predictions_path(tables[True])).correct("knn", int(picks[True][0][0]), picks[True][0][1])
        b = read_predictions(predictions_path(tables[False])).correct(
            "knn", int(picks[False][0][0]), picks[False][0][1]
        )
        result = compare_correct(a, b)
        summary.append(
            f"- **{name}**: {sum(len(c) > 0 for c in massive.values())} of {len(massive)} cells have massive channels. "
            f"Val-chosen cell with them dropped: t={picks[True][0][0]} {picks[True][0][1]}, test "
            f"{100 * result.acc_a:.1f} %; as is: t={picks[False][0][0]} {picks[False][0][1]}, test "
            f"{100 * result.acc_b:.1f} %; difference {100 * result.diff:+.1f} points, 95 % paired bootstrap "
            f"[{100 * result.ci_low:+.1f}, {100 * result.ci_high:+.1f}], exact McNemar p = {result.p_value:.3g}."
        )
    elapsed = time.perf_counter() - started
    page = [
        "# Massive channels (DiT) and kNN",
        "",
        f"Rule: {RULE} (probekit.features.massive; docs/guide/extraction.md). Model `{MODEL}` (the shipped "
        "Fashion-MNIST DiT, 6 blocks x 192 channels on 32 x 32 pixels, 64 tokens) and its `--random-init` twin; "
        f"every block output (gap over tokens) at t = {TIMESTEPS}; Fashion-MNIST subset ({args.train_limit} train "
        f"of which 10 % validation, {args.test_limit} test); kNN (cosine, k and temperature chosen on val).",
        "",
        *summary,
        "",
        "| model | t | layer | massive channels | largest / median channel | kNN test % as is | kNN test % dropped |",
        "| --- | ---: | --- | --- | ---: | ---: | ---: |",
        *lines_cells,
        "",
        "Commands (`nice -n 5 python experiments/massive.py` runs them):",
        "",
        "```",
        *commands,
        "```",
        "",
        f"Machine: {platform.platform()}, torch {torch.__version__}, CPU capability "
        f"{torch.backends.cpu.get_cpu_capability()}, shared with other work; {elapsed:.0f} s wall for this run.",
    ]
    Path(args.page).write_text("\n".join(page) + "\n")
    print("\n".join(page))


if __name__ == "__main__":
    main()
