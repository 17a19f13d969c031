"""Figure commands: heatmaps and curves, the one-page report."""

from __future__ import annotations

import argparse
from pathlib import Path

from probekit.core.errors import ProbekitError
from probekit.core.specs import DENSE_TASKS


def cmd_plot(args: argparse.Namespace) -> None:
    import pandas as pd

    from probekit.evaluate.results import read_table
    from probekit.plots import plot_all

    table = pd.concat([read_table(path) for path in args.results], ignore_index=True)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    if "labels_per_class" in table.columns:  # tables of `probe --labels-per-class`: the label-efficiency curve
        from probekit.plots.label_efficiency import plot_label_efficiency

        if table["labels_per_class"].isna().any():
            raise ProbekitError("mix of label-budget and plain results tables: plot them separately")
        figure, summary = plot_label_efficiency(table, Path(args.out) / "label_efficiency.png")
        summary.to_csv(Path(args.out) / "label_efficiency.csv", index=False)
        print(summary.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
        print(f"wrote {figure} and {Path(args.out) / 'label_efficiency.csv'}")
        return
    for path in plot_all(table, args.out, metric=args.metric, x=args.x):
        print(f"wrote {path}")


def cmd_report(args: argparse.Namespace) -> None:
    from probekit.plots.report import build_report

    commands: list[str] = []
    if args.commands:
        path = Path(args.commands)
        if not path.is_file():
            raise ProbekitError(f"--commands {path} does not exist: give a text file with one command per line")
        commands = [
            line.rstrip()
            for line in path.read_text().splitlines()
            if line.strip() and not line.lstrip().startswith("#")
        ]
    out = build_report(
        args.results,
        args.out,
        caches=args.cache or (),
        images=args.images or (),
        commands=commands,
        title=args.title,
        x=args.x,
        n_boot=args.n_boot,
        leaderboard=args.leaderboard,
    )
    print(f"wrote {out}")


def register(sub: argparse._SubParsersAction) -> None:
    """Add this group's commands to the top-level parser."""
    p = sub.add_parser("plot", help="heatmaps and accuracy-vs-noise curves from results tables")
    p.add_argument("--results", required=True, nargs="+", help="one or more results CSVs")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--x", default="t", choices=["t", "sigma", "logsnr"], help="noise axis of the curves")
    p.add_argument(
        "--metric",
        default="top1",
        help="metric drawn (default top1; "
        + ", ".join(f"{spec.metric} / {spec.second} for {name}" for name, spec in DENSE_TASKS.items())
        + ")",
    )
    p.set_defaults(run=cmd_plot)

    p = sub.add_parser(
        "report",
        help="one self-contained HTML page: the answer first, interactive heatmaps whose cells open their "
        "confusion matrix, the tables, figures and commands",
    )
    p.add_argument(
        "--results",
        required=True,
        nargs="+",
        help="results CSVs: probe runs (with their sidecars), fusion, similarity, segment, correspond and "
        "label-budget tables",
    )
    p.add_argument("--out", required=True, help="HTML file to write")
    p.add_argument(
        "--cache",
        nargs="*",
        help="caches the results came from: their metadata, recorded commands, class names, and the images of "
        "the val-chosen cells' panels (nearest neighbours, embedding, feature maps)",
    )
    p.add_argument("--images", nargs="*", help="extra PNG figures to embed (e.g. a t-SNE from `probekit tsne`)")
    p.add_argument("--commands", help="text file of further commands to list (blank and # lines skipped)")
    p.add_argument("--title", default="probekit report", help="title of the page (default: probekit report)")
    p.add_argument("--x", default="t", choices=["t", "sigma", "logsnr"], help="noise axis of the curves")
    p.add_argument("--n-boot", type=int, default=10_000, help="bootstrap resamples of the paired comparisons")
    p.add_argument(
        "--leaderboard",
        help="a leaderboard CSV (`probekit leaderboard`): the page opens on the models compared, on one log-SNR axis",
    )
    p.set_defaults(run=cmd_report)
