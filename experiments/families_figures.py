"""The figures and numbers of docs/results/families.md, from the families job's tables.

    python experiments/families_figures.py [--config experiments/families.yaml] [--run out/families]
        [--out docs/figures/families]

Reads the job's models and their random-init twins from its YAML (``probekit run --config
experiments/families.yaml``), the leaderboard and every model's results, and writes small PNGs:
test top-1 against log-SNR per model (the val-chosen layer at each noise level, the paper's
figure), the heatmaps side by side, the relative depth of the chosen layer per noise level; then
prints the paired comparisons the page quotes: each model against its random-init twin, and
every pair of models trained for the same number of steps (names ``FAMILY-BUDGET``, e.g.
``edm-2k``), and each family's budgets against each other.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from probekit.evaluate.compare import compare_runs, format_comparison  # noqa: E402
from probekit.evaluate.leaderboard import best_per_level, read_leaderboard  # noqa: E402
from probekit.evaluate.results import best_cells, read_table  # noqa: E402
from probekit.multirun import plan_models  # noqa: E402
from probekit.pipeline.config import RunConfig  # noqa: E402

#: run name -> its random-init twin's run name, in the YAML's order (set by main)
TWINS: dict[str, str] = {}
COLOURS = {"ddpm": "C0", "edm": "C1", "dit": "C2", "flow": "C3"}


def family(name: str) -> str:
    return name.split("-")[0]


def budget(name: str) -> str:
    return name.split("-", 1)[1] if "-" in name else ""


def _style(name: str) -> tuple[str, str]:
    """(colour by family, line style by budget: the largest budget of the job dashed)."""
    largest = max((budget(m) for m in TWINS), key=lambda b: float(b.rstrip("k") or 0))
    return COLOURS.get(family(name), "C7"), "--" if budget(name) == largest else "-"


def _results(run: Path, name: str) -> Path:
    return run / name / f"results_{name}.csv" if name in TWINS else run / f"results_{name}.csv"


def curves(run: Path, out: Path, probe: str, board: pd.DataFrame) -> Path:
    fig, (ax, depth_ax) = plt.subplots(1, 2, figsize=(11, 4.2), gridspec_kw={"width_ratios": [3, 2]})
    for name in TWINS:
        table = read_table(_results(run, name))
        best = best_per_level(table, probe)
        best = best[best["logsnr"].map(math.isfinite)]
        colour, style = _style(name)
        ax.plot(best["logsnr"], 100 * best["value"], style, marker="o", ms=4, color=colour, label=name)
        max_depth = table["depth"].max()
        depth_ax.plot(best["logsnr"], best["depth"] / max_depth, style, marker="o", ms=4, color=colour, label=name)
    rows = board[board["probe"] == probe].set_index("name")
    if "pixels" in rows.index:
        ax.axhline(100 * rows.loc["pixels", "test_top1"], color="k", ls=":", lw=1, label="pixels")
    for twin in sorted(set(TWINS.values())):
        if twin in rows.index:
            model = next(m for m, t in TWINS.items() if t == twin)
            ax.axhline(100 * rows.loc[twin, "test_top1"], color=_style(model)[0], ls=":", lw=0.8, alpha=0.7)
    for axis in (ax, depth_ax):
        axis.invert_xaxis()
        axis.set_xlabel("log-SNR (recorded per grid point; more noise to the right)")
        axis.grid(alpha=0.3)
    ax.set_ylabel(f"test top-1 (%), {probe} probe")
    ax.set_title("val-chosen layer at each noise level (dotted: pixels and random-init twins)", fontsize=9)
    depth_ax.set_ylabel("depth of that layer / deepest layer read")
    depth_ax.set_title("where the chosen layer sits", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = out / f"acc_vs_logsnr_{probe}.png"
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def heatmaps(run: Path, out: Path, probe: str) -> Path:
    fig, axes = plt.subplots(1, len(TWINS), figsize=(3.4 * len(TWINS), 5.6), gridspec_kw={"wspace": 1.0})
    for ax, name in zip(axes, TWINS):
        table = read_table(_results(run, name))
        rows = table[(table["probe"] == probe) & (table["metric"] == "top1") & (table["split"] == "test")]
        grid = rows.pivot_table(index=["depth", "layer"], columns="logsnr", values="value").sort_index()
        grid = grid[sorted(grid.columns, reverse=True)]
        image = ax.imshow(100 * grid.to_numpy(), aspect="auto", cmap="viridis", vmin=30, vmax=90)
        ax.set_xticks(range(len(grid.columns)), [f"{v:.1f}" for v in grid.columns], fontsize=7)
        labels = [layer for _, layer in grid.index]
        step = max(1, len(labels) // 14)
        ax.set_yticks(range(0, len(labels), step), labels[::step], fontsize=6)
        ax.set_xlabel("log-SNR", fontsize=8)
        ax.set_title(name, fontsize=9)
        overall = best_cells(table[table["probe"] == probe]).iloc[0]  # the val-chosen cell
        r = labels.index(overall["layer"])
        c = list(grid.columns).index(overall["logsnr"])
        ax.add_patch(plt.Rectangle((c - 0.5, r - 0.5), 1, 1, fill=False, ec="red", lw=1.5))
    fig.colorbar(image, ax=axes, shrink=0.6, label=f"test top-1 (%), {probe}")
    path = out / f"heatmaps_{probe}.png"
    fig.savefig(path, dpi=80, bbox_inches="tight")
    plt.close(fig)
    return path


def leaderboard_markdown(board: pd.DataFrame, probe: str) -> str:
    """The leaderboard of one probe as the page's table (rank, cell, val, test with interval, paired to the best)."""
    rows = board[board["probe"] == probe].sort_values("rank")
    lines = [
        "| rank | run | val-chosen cell | log-SNR | val % | test top-1 % [95 % bootstrap] "
        "| - best, points [paired 95 %] | McNemar p | Holm p |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows.itertuples():
        level = "clean" if not math.isfinite(r.logsnr) else f"{r.logsnr:.1f}"
        params = f" ({r.params})" if isinstance(r.params, str) and r.params.startswith("k=") else ""
        if r.name == r.best:
            paired, p, holm = "best on val", "", ""
        else:
            paired = f"{100 * r.diff:+.1f} [{100 * r.diff_low:+.1f}, {100 * r.diff_high:+.1f}]"
            p, holm = f"{r.p_value:.2g}", f"{r.p_holm:.2g}"
        lines.append(
            f"| {r.rank} | `{r.name}` | t={r.t} `{r.layer}`{params} | {level} | {100 * r.val_top1:.1f} | "
            f"{100 * r.test_top1:.1f} [{100 * r.ci_low:.1f}, {100 * r.ci_high:.1f}] | {paired} | {p} | {holm} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="experiments/families.yaml")
    parser.add_argument("--run", default="out/families")
    parser.add_argument("--out", default="docs/figures/families")
    args = parser.parse_args()
    run, out = Path(args.run), Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    TWINS.update({r.config.label: r.twin for r in plan_models(RunConfig.from_sources(args.config, {}))})
    board = read_leaderboard(run / "leaderboard.csv")
    for probe in ("linear", "knn"):
        print("wrote", curves(run, out, probe, board), heatmaps(run, out, probe))
        print(f"\n**{probe}**\n\n{leaderboard_markdown(board, probe)}\n")
    names = list(TWINS)
    pairs = [(m, TWINS[m]) for m in names]
    pairs += [(a, b) for i, a in enumerate(names) for b in names[i + 1 :] if budget(a) == budget(b)]
    pairs += [(b, a) for i, a in enumerate(names) for b in names[i + 1 :] if family(a) == family(b)]
    for a, b in pairs:
        print(f"\n## {a} vs {b}")
        print(format_comparison(compare_runs(_results(run, a), _results(run, b), probe="linear", n_boot=10_000)))
    for name in names:  # the chosen level's place on the grid: is it the noisiest end?
        table = read_table(_results(run, name))
        top = best_cells(table[table["probe"] == "linear"]).iloc[0]
        levels = np.sort(table["logsnr"].unique())
        print(f"{name}: best level log-SNR {top['logsnr']:.2f} (grid {levels.min():.2f}..{levels.max():.2f})")


if __name__ == "__main__":
    main()
