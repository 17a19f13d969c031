"""Which activation kind wins: kind x noise-level classification on the shipped Fashion-MNIST UNet.

    nice -n 5 python experiments/kinds.py [--out out/kinds] [--train-limit 600] [--test-limit 300]

One extraction reads every block output and every activation kind (``--layers 'all,*:*'``) of
checkpoints/fashion-mnist-ddpm at t = 0, 25, 100, 200 (one forward per image and grid point
captures them all); ``probekit probe`` runs the linear probe and kNN on every cell, choosing on a
10 % validation split of train. This script then writes docs/results/kinds.md: per kind and t the
best val-chosen cell's test accuracy, the val-chosen kind cell against the val-chosen block output
(paired bootstrap and exact McNemar on the same test images), and each kind's cache bytes.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import torch

from probekit.evaluate.paired import compare_correct
from probekit.evaluate.predictions import predictions_path, read_predictions
from probekit.features.cache import FeatureCache

MODEL = "checkpoints/fashion-mnist-ddpm"
TIMESTEPS = "0,25,100,200"


def _run(*args: str) -> float:
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "probekit", *args], check=True)
    return time.perf_counter() - started


def _kind(layer: str) -> str:
    return layer.rsplit(":", 1)[1] if ":" in layer else "block output"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="out/kinds")
    parser.add_argument("--train-limit", type=int, default=600)
    parser.add_argument("--test-limit", type=int, default=300)
    parser.add_argument("--page", default="docs/results/kinds.md")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    cache, results = out / "kinds.h5", out / "kinds.csv"
    limits = ["--train-limit", str(args.train_limit), "--test-limit", str(args.test_limit)]
    extract = [
        "extract", "--model", MODEL, "--data", "fashion-mnist", *limits, "--timesteps", TIMESTEPS,
        "--layers", "all,*:*", "--precision", "fp32", "--out", str(cache), "--quiet",
    ]  # fmt: skip
    probe = ["probe", "--cache", str(cache), "--probes", "linear,knn", "--out", str(results), "--quiet"]
    # wall times of the first run, kept beside the outputs (a re-run only rewrites the page)
    timings_path = out / "timings.json"
    timings = json.loads(timings_path.read_text()) if timings_path.exists() else {}
    if not cache.exists():
        timings["extract_s"] = _run(*extract)
    if not results.exists():
        timings["probe_s"] = _run(*probe)
    timings_path.write_text(json.dumps(timings))
    extract_s, probe_s = timings.get("extract_s", float("nan")), timings.get("probe_s", float("nan"))

    table = pd.read_csv(results)
    top1 = table[table["metric"] == "top1"].copy()
    top1["kind"] = top1["layer"].map(_kind)
    val = top1[top1["split"] == "val"].set_index(["probe", "t", "layer"])["value"]
    test = top1[top1["split"] == "test"].set_index(["probe", "t", "layer"])["value"]
    cells = top1[top1["split"] == "val"][["probe", "t", "layer", "kind"]].copy()
    cells["val"] = [val[(p, t, l)] for p, t, l in zip(cells["probe"], cells["t"], cells["layer"])]
    cells["test"] = [test[(p, t, l)] for p, t, l in zip(cells["probe"], cells["t"], cells["layer"])]

    with FeatureCache(cache) as c:
        widths = {layer.name: int(c.file["train/feats/" + layer.name].shape[-1]) for layer in c.layers}
        samples = sum(len(c.labels(split)) for split in ("train", "test"))
        grid = len(c.timesteps)
        flops = c.attrs.get("flops_per_image")
    bytes_per_kind: dict[str, int] = {}
    for layer, width in widths.items():
        bytes_per_kind[_kind(layer)] = bytes_per_kind.get(_kind(layer), 0) + width * 4 * samples * grid

    predictions = read_predictions(predictions_path(results))
    lines = [
        "# Which activation kind wins (shipped Fashion-MNIST UNet)",
        "",
        "Every block output and every activation kind (`probekit layers --kinds`) of "
        f"`{MODEL}`, extracted in one pass (`--layers 'all,*:*'`) at t = {TIMESTEPS} on a class-stratified "
        f"Fashion-MNIST subset ({args.train_limit} train, of which 10 % validation, {args.test_limit} test), gap "
        "pooling, fp32; linear probe and kNN on every cell, every choice made on val, test reported.",
        "",
        "Command: `nice -n 5 python experiments/kinds.py` (which runs",
        f"`probekit {' '.join(extract)}` and `probekit {' '.join(probe)}`).",
        "",
        f"Machine: {platform.platform()}, CPU {_cpu()}, torch {torch.__version__} capability "
        f"{torch.backends.cpu.get_cpu_capability()}, {torch.get_num_threads()} threads, shared with other work. "
        f"Extraction {extract_s:.0f} s, probing {probe_s:.0f} s (wall).",
        "",
    ]
    for probe_name in ("linear", "knn"):
        mine = cells[cells["probe"] == probe_name]
        # per kind and t: the cell of that kind with the best val accuracy, its test accuracy
        best = mine.loc[mine.groupby(["kind", "t"])["val"].idxmax()]
        pivot = best.pivot(index="kind", columns="t", values="test").sort_index()
        lines += [f"## {probe_name}: test top-1 of the val-best cell per kind and t (%)", ""]
        lines.append("| kind | " + " | ".join(f"t={t}" for t in pivot.columns) + " | cells |")
        lines.append("| --- | " + " | ".join("---:" for _ in pivot.columns) + " | ---: |")
        counts = mine[mine["t"] == mine["t"].min()].groupby("kind").size()
        for kind, row in pivot.iterrows():
            lines.append(
                f"| {kind} | " + " | ".join(f"{100 * v:.1f}" for v in row.to_numpy()) + f" | {counts.get(kind, 0)} |"
            )
        chosen = mine.loc[mine["val"].idxmax()]
        blocks = mine[mine["kind"] == "block output"]
        block = blocks.loc[blocks["val"].idxmax()]
        kinds_only = mine[mine["kind"] != "block output"]
        kind_best = kinds_only.loc[kinds_only["val"].idxmax()]
        result = compare_correct(
            predictions.correct(probe_name, int(kind_best["t"]), kind_best["layer"]),
            predictions.correct(probe_name, int(block["t"]), block["layer"]),
        )
        lines += [
            "",
            f"Val-chosen cell over everything: `{chosen['layer']}` at t={chosen['t']} "
            f"(val {100 * chosen['val']:.1f}, test {100 * chosen['test']:.1f}). "
            f"Val-chosen kind cell: `{kind_best['layer']}` at t={kind_best['t']} "
            f"(test {100 * result.acc_a:.1f}) vs the "
            f"val-chosen block output `{block['layer']}` at t={block['t']} (test {100 * result.acc_b:.1f}): "
            f"difference {100 * result.diff:+.1f} points, {int(100 * result.level)} % paired bootstrap interval "
            f"[{100 * result.ci_low:+.1f}, {100 * result.ci_high:+.1f}], exact McNemar p = {result.p_value:.3g} "
            f"({result.only_a} images right only with the kind, {result.only_b} only with the block output; "
            f"n = {result.n}).",
            "",
        ]
    lines += [
        "## What each kind costs",
        "",
        "Cache bytes (float32 gap features, train + test, all grid points) per kind; the forward is shared: "
        f"every kind comes from the same {grid} x {samples} forwards"
        + (f" of {flops / 1e9:.2f} GFLOP each" if flops else "")
        + ". Hook cost of every kind at once: Benchmarks, "
        "[hooks on every activation kind](benchmarks.md#hooks-on-every-activation-kind).",
        "",
        "| kind | layers | MiB |",
        "| --- | ---: | ---: |",
    ]
    for kind, size in sorted(bytes_per_kind.items()):
        count = sum(_kind(layer) == kind for layer in widths)
        lines.append(f"| {kind} | {count} | {size / 2**20:.2f} |")
    Path(args.page).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def _cpu() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


if __name__ == "__main__":
    main()
