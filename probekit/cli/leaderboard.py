"""``probekit leaderboard``: several runs ranked on the same test images."""

from __future__ import annotations

import argparse

from probekit.cli.common import name_list


def cmd_leaderboard(args: argparse.Namespace) -> None:
    from probekit.evaluate.leaderboard import format_leaderboard, leaderboard, parse_runs, write_leaderboard

    runs = parse_runs(args.results, args.names)
    table = leaderboard(runs, probes=args.probes, n_boot=args.n_boot, seed=args.seed)
    if args.out:
        write_leaderboard(table, args.out)
    print(format_leaderboard(table))


def register(sub: argparse._SubParsersAction) -> None:
    """Add this group's commands to the top-level parser."""
    p = sub.add_parser(
        "leaderboard",
        help="rank several runs by their val-chosen cells: test top-1 with a bootstrap interval, paired tests "
        "against the best on val with Holm-adjusted McNemar p-values",
    )
    p.add_argument(
        "--results", required=True, nargs="+", help="results CSVs of one model each (with their sidecars), 2 or more"
    )
    p.add_argument("--names", type=name_list, help="comma-separated run names, one per results CSV (default: model)")
    p.add_argument("--probes", type=name_list, help="probes to rank (default: every probe two or more runs have)")
    p.add_argument("--n-boot", type=int, default=10_000, help="bootstrap resamples (default 10000)")
    p.add_argument("--seed", type=int, default=0, help="random seed of the resamples (default 0)")
    p.add_argument("--out", help="write the leaderboard CSV here (printed either way)")
    p.set_defaults(run=cmd_leaderboard)
