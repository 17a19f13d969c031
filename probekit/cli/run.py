"""The whole question for one model in one command."""

from __future__ import annotations

import argparse
import signal

from probekit.cli.common import Interrupted, raise_interrupt
from probekit.core.settings import add_arguments


def run_command(argv: list[str]) -> None:
    """One step of `probekit run`: the same parser and handler as typing the command by hand."""
    from probekit.cli import build_parser  # the parser that holds this module

    args = build_parser().parse_args(argv)
    args.argv, args.debug = argv, False
    args.run(args)


def cmd_run(args: argparse.Namespace) -> None:
    from probekit.pipeline import RunConfig, run_all

    config = RunConfig.from_args(args)
    signal.signal(signal.SIGTERM, raise_interrupt)
    try:
        if config.models:
            from probekit.multirun import run_models

            report = run_models(config, run_command)
        else:
            report = run_all(config, run_command)
    except KeyboardInterrupt:
        raise Interrupted(
            f"{config.out} is unfinished: run the same command again to continue where it stopped"
        ) from None
    print(f"report: {report}")


def register(sub: argparse._SubParsersAction) -> None:
    """Add this group's commands to the top-level parser."""
    p = sub.add_parser(
        "run",
        help="the whole question for one model: extract it and its baselines, probe, compare, "
        "plot, similarity, fusion and the report; re-running continues where it stopped",
    )
    p.add_argument(
        "--config",
        help="YAML file of the settings below (underscored names, e.g. train_limit: 1500); flags given override it",
    )
    from probekit.pipeline import RunConfig

    add_arguments(p.add_argument_group("settings", "each also a key of the --config file"), RunConfig)
    p.set_defaults(run=cmd_run)
