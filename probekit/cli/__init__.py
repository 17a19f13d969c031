"""The ``probekit`` command: argument parsing, one module per command group, each command a thin
call into the library (its work lives in the stage packages: features, probes, evaluate,
analyses, plots, train).
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import sys
from collections.abc import Callable, Sequence
from typing import NoReturn

from probekit.cli import analyses, dense, features, leaderboard, plots, probes, run, train
from probekit.cli.common import Interrupted
from probekit.core import interrupt, threads
from probekit.core.errors import ConfigError, ProbekitError
from probekit.core.registry import resolve
from probekit.core.specs import DENSE_TASKS
from probekit.core.verbosity import set_verbosity

DESCRIPTION = """\
Which layer, at which noise level, holds the most linearly separable features of a diffusion model?
probekit extracts pooled features over a (timestep x layer) grid into an HDF5 cache, probes every
cell (choosing on a validation split, reporting on test), compares models with paired tests and
draws the heatmaps. `probekit COMMAND --help` describes each command."""

EXAMPLES = """\
examples:
  probekit run --config experiments/demo.yaml          # the whole question, one command
  probekit layers --model checkpoints/fashion-mnist-ddpm
  probekit extract --model checkpoints/fashion-mnist-ddpm --data fashion-mnist --grid --out feats.h5
  probekit probe --cache feats.h5 --out results.csv
  probekit plot --results results.csv --out figures/
  probekit compare --results results.csv results_pixels.csv"""


class _Parser(argparse.ArgumentParser):
    """argparse with probekit's one-line errors, and negative timestep lists read as values."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        # `--timesteps -5,10` is a (bad) value, not an option: let it reach the range check.
        self._negative_number_matcher = re.compile(r"^-\d+(,-?\d+)*$|^-\d*\.\d+$")

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"probekit: error: {message}; see `{self.prog} --help`\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="probekit", description=DESCRIPTION, epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--debug", action="store_true", help="show full tracebacks")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    features.register(sub)
    probes.register(sub)
    analyses.register(sub)
    plots.register(sub)
    leaderboard.register(sub)
    train.register(sub)
    dense.register(sub)
    run.register(sub)
    for spec in DENSE_TASKS.values():  # dense tasks added by other packages bring their command
        if spec.cli is not None:
            resolve(spec.cli)(sub)
    for command in sub.choices.values():
        _add_verbosity(command)
    return parser


def _add_verbosity(command: argparse.ArgumentParser) -> None:
    """``--quiet`` and ``--verbose`` on every command (some commands declare ``--quiet`` themselves)."""
    flags = {flag for action in command._actions for flag in action.option_strings}
    if "--quiet" not in flags:
        command.add_argument(
            "--quiet", action="store_true", help="no progress bars (the level also follows $PROBEKIT_VERBOSITY)"
        )
    command.add_argument(
        "--verbose", action="store_true", help="debug messages too (the level also follows $PROBEKIT_VERBOSITY)"
    )


#: config fields whose flag is not the field's own name with dashes
FLAG_OF_FIELD = {"linear_C": "--C", "knn_k": "--k", "knn_temperature": "--temperature"}


def _for_the_command_line(err: ProbekitError) -> str:
    """The error's message, a config field named by the flag that sets it."""
    if isinstance(err, ConfigError):
        return err.naming(FLAG_OF_FIELD.get(err.field, "--" + err.field.replace("_", "-")))
    return str(err)


def main(argv: Sequence[str] | None = None) -> int:
    threads.prepare_environment()  # before anything loads an OpenMP runtime (torch, scikit-learn)
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    args.argv = argv
    interrupt.clear()  # a request handled by an earlier in-process run is not this one's
    # Progress messages go to stdout, so stderr carries errors only (one line each).
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout)
    set_verbosity("debug" if args.verbose else "quiet" if getattr(args, "quiet", False) else None)
    run: Callable[[argparse.Namespace], None] = args.run
    try:
        run(args)
        sys.stdout.flush()  # a closed pipe shows here, inside the handlers below, not at interpreter exit
    except ProbekitError as err:
        if args.debug:
            raise
        print(f"probekit: error: {_for_the_command_line(err)}", file=sys.stderr)
        return 2
    except Interrupted as err:
        print(f"probekit: interrupted: {err}", file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print("probekit: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader of stdout went away (`probekit info x | head`): stop quietly, as cat does.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    return 0


if __name__ == "__main__":
    sys.exit(main())
