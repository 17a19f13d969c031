"""The whole question for one model in one command."""

from __future__ import annotations

import argparse
import signal

from probekit.cli.common import Interrupted, float_list, int_list, name_list, raise_interrupt


def run_command(argv: list[str]) -> None:
    """One step of `probekit run`: the same parser and handler as typing the command by hand."""
    from probekit.cli import build_parser  # the parser that holds this module

    args = build_parser().parse_args(argv)
    args.argv, args.debug = argv, False
    args.run(args)


def cmd_run(args: argparse.Namespace) -> None:
    from probekit.pipeline import RunConfig, run_all

    settings = {key: value for key, value in vars(args).items() if key in RunConfig.__dataclass_fields__}
    if args.model:  # repeated --model: several models (they replace the config file's model or list)
        several = len(args.model) > 1
        settings.update(model="" if several else args.model[0], models=args.model if several else [])
    config = RunConfig.from_sources(args.config, settings)
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
    p.add_argument(
        "--model",
        action="append",
        help="the model, as for extract (required here or in --config); repeat it, optionally as NAME=SPEC, to "
        "compare several models on the same data and baselines (a leaderboard and one report)",
    )
    p.add_argument("--data", help="the dataset, as for extract (required here or in --config)")
    p.add_argument("--out", help="folder of the results tables, figures, comparisons.txt and report.html")
    p.add_argument("--name", help="the model's label in file names (default: from --model)")
    p.add_argument("--cache-dir", help="folder of the feature caches and step records (default OUT/caches)")
    p.add_argument("--timesteps", type=int_list, help="the model's grid (default: its schedule's default grid)")
    p.add_argument("--layers", help="layer selection as in extract (default: every layer)")
    p.add_argument("--train-limit", type=int, help="class-stratified subset of the train split")
    p.add_argument("--test-limit", type=int, help="class-stratified subset of the test split")
    p.add_argument("--seed", type=int, help="seed of the noise, subsets, validation split and probes (default 0)")
    p.add_argument("--batch-size", type=int, help="extraction batch size (default 64)")
    p.add_argument(
        "--precision", choices=["auto", "fp32", "bf16", "fp16"], help="extraction compute precision (default auto)"
    )
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], help="default auto")
    p.add_argument("--probes", type=name_list, help="probes of the model (default linear,knn)")
    p.add_argument("--k", type=int_list, help="kNN neighbours of the model's probe, chosen on val (default 20)")
    p.add_argument("--C", type=float_list, help="inverse L2 strength(s) of linear / logreg, chosen on val (default 1)")
    p.add_argument("--no-pixels", dest="pixels", action="store_const", const=False, help="no raw-pixel baseline")
    p.add_argument("--pixels-probes", type=name_list, help="probes of the pixel baseline (default linear,logreg,knn)")
    p.add_argument(
        "--no-random-init",
        dest="random_init",
        action="store_const",
        const=False,
        help="no random-init twin (same architecture, fresh weights)",
    )
    p.add_argument("--random-init-timesteps", type=int_list, help="grid of the random-init twin (default 0)")
    p.add_argument("--random-init-probes", type=name_list, help="probes of the random-init twin (default linear,knn)")
    p.add_argument("--baseline-k", type=int_list, help="kNN neighbours of the baselines' probes (default 20)")
    p.add_argument(
        "--no-similarity",
        dest="similarity",
        action="store_const",
        const=False,
        help="skip CKA / CKNNA / mutual k-NN to the pixels",
    )
    p.add_argument("--no-fusion", dest="fusion", action="store_const", const=False, help="skip the fusion probes")
    p.add_argument("--no-tsne", dest="tsne", action="store_const", const=False, help="skip the t-SNE of the best cell")
    p.add_argument(
        "--dense",
        dest="dense",
        action="store_const",
        const=True,
        help="also segmentation on mosaics and correspondence on warp pairs of --data (grayscale), over "
        "dense_timesteps x dense_layers (sizes: see the guide's run page)",
    )
    p.add_argument("--no-dense", dest="dense", action="store_const", const=False, help="no dense probes (default)")
    p.add_argument(
        "--label-efficiency",
        dest="label_efficiency",
        action="store_const",
        const=True,
        help="also linear probes on labels_per_class labelled images per class, from the same caches",
    )
    p.add_argument(
        "--no-label-efficiency",
        dest="label_efficiency",
        action="store_const",
        const=False,
        help="no label-efficiency curve (default)",
    )
    p.add_argument("--images", nargs="*", help="extra PNGs to embed in the report (e.g. the model's samples)")
    p.add_argument("--x", choices=["t", "sigma", "logsnr"], help="noise axis of the report's curves (default sigma)")
    p.add_argument("--n-boot", type=int, help="bootstrap resamples of the paired comparisons (default 10000)")
    p.add_argument("--max-memory", help="probing memory budget, as for probe (default auto)")
    p.add_argument(
        "--no-download", dest="no_download", action="store_const", const=True, help="never download missing datasets"
    )
    p.add_argument("--title", help="title of the report (default: model and data)")
    p.add_argument("--quiet", dest="quiet", action="store_const", const=True, help="no progress bars")
    p.set_defaults(run=cmd_run)
