"""Probe commands: probe every cell, compare two runs, summarise results."""

from __future__ import annotations

import argparse

from probekit.cli.common import float_list, int_list, memory_budget, resolve_device
from probekit.core.specs import PROBE_SPECS


def cmd_probe(args: argparse.Namespace) -> None:
    from probekit.evaluate.predictions import predictions_path, write_predictions
    from probekit.evaluate.results import format_summary, write_table
    from probekit.probes import ProbeSettings
    from probekit.probes.run import ProbeRunConfig, probe_launched

    config = ProbeRunConfig(
        probes=[p.strip() for p in args.probes.split(",") if p.strip()],
        val_fraction=args.val_fraction,
        train_features=args.train_features,
        test_features=args.test_features,
        use_views=args.use_views,
        settings=ProbeSettings(
            linear_C=args.C, knn_k=args.k, knn_temperature=args.temperature, knn_centre=args.knn_centre
        ),
        epochs=args.epochs,
        lr=args.lr,
        weight_decay=args.weight_decay,
        batch_size=args.batch_size,
        device=resolve_device(args.device),
        seed=args.seed,
        timesteps=args.timesteps,
        drop_massive=args.drop_massive,
    )
    if args.labels_per_class:
        from probekit.probes.label_budget import parse_budgets, probe_label_budgets

        table = probe_label_budgets(
            args.cache,
            config,
            parse_budgets(args.labels_per_class),
            draws=args.budget_draws,
            progress=not args.quiet,
            max_memory=memory_budget(args.max_memory),
        )
        write_table(table, args.out)
        print(
            f"wrote {args.out} (label budgets {args.labels_per_class}; draw it with `probekit plot --results "
            f"{args.out} ...`)"
        )
        return
    results = probe_launched(args.cache, config, progress=not args.quiet, max_memory=memory_budget(args.max_memory))
    if results is None:  # a torchrun rank other than 0: rank 0 writes the table
        return
    write_table(results.table, args.out)
    sidecar = write_predictions(predictions_path(args.out), results.predictions)
    print(format_summary(results.table))
    print(f"wrote {args.out} and {sidecar}")


def cmd_compare(args: argparse.Namespace) -> None:
    from probekit.evaluate.compare import compare_runs, format_comparison

    comparison = compare_runs(
        args.results[0], args.results[1], probe=args.probe, probe_b=args.probe_b, n_boot=args.n_boot, seed=args.seed
    )
    print(format_comparison(comparison))


def cmd_summary(args: argparse.Namespace) -> None:
    import pandas as pd

    from probekit.evaluate.results import format_summary, read_table

    print(format_summary(pd.concat([read_table(path) for path in args.results], ignore_index=True)))


def register(sub: argparse._SubParsersAction) -> None:
    """Add this group's commands to the top-level parser."""
    p = sub.add_parser("probe", help="probe every (timestep, layer) cell of a cache, choosing on a validation split")
    p.add_argument(
        "--cache",
        required=True,
        nargs="+",
        help="cache file, or several caches of one extraction (e.g. train and test extracted apart)",
    )
    p.add_argument(
        "--out",
        required=True,
        help="results CSV (tidy: one row per cell, probe, split, metric); test predictions go beside it "
        "as OUT.predictions.npz",
    )
    p.add_argument(
        "--max-memory",
        default="auto",
        help="feature memory budget, e.g. 4G or 500M, counting views and draws; cells are streamed from "
        "the cache in groups that fit (default auto: half the machine's memory)",
    )
    p.add_argument(
        "--probes",
        default="linear,knn",
        help=f"comma-separated, of the registered probes: {', '.join(PROBE_SPECS)} (default linear,knn)",
    )
    p.add_argument(
        "--val-fraction",
        type=float,
        default=0.1,
        help="share of train held out (stratified, seeded) to choose cells and settings on (default 0.1; "
        "a dataset's own val split is used when the cache has one; 0 chooses on test)",
    )
    p.add_argument(
        "--train-features",
        default="mean",
        choices=["mean", "sample"],
        help="mean: the mean over noise draws of the clean image; sample: sgd/mlp draw one (view, draw) per "
        "image each epoch (DDAE's protocol), the others train on every (view, draw) row",
    )
    p.add_argument(
        "--test-features",
        default="mean",
        choices=["mean", "single"],
        help="val and test features: mean over noise draws, or a single draw (DDAE) (default mean)",
    )
    p.add_argument(
        "--use-views", type=int, help="with --train-features sample: draw from the first A augmented views only"
    )
    p.add_argument(
        "--C",
        type=float_list,
        default=[1.0],
        help="inverse L2 strength(s) of linear and logreg; several are chosen per cell on val (default 1)",
    )
    p.add_argument("--epochs", type=int, help="sgd / mlp epochs (default 15, DDAE's)")
    p.add_argument("--lr", type=float, help="sgd / mlp learning rate (default 1e-3, DDAE's)")
    p.add_argument("--weight-decay", type=float, help="sgd / mlp weight decay (default 0)")
    p.add_argument("--batch-size", type=int, help="sgd / mlp batch size (default 128)")
    p.add_argument(
        "--k", type=int_list, default=[20], help="kNN neighbours; several are chosen per cell on val (default 20)"
    )
    p.add_argument(
        "--temperature",
        type=float_list,
        default=[0.07],
        help="kNN temperature(s); several are chosen per cell on val (default 0.07)",
    )
    p.add_argument("--knn-centre", action="store_true", help="kNN: subtract the train mean before the cosine")
    p.add_argument("--seed", type=int, default=0, help="seed of the validation split and the probes")
    p.add_argument(
        "--labels-per-class",
        metavar="K,K,...",
        help="label efficiency: fit on K train images per class (stratified, seeded draws from train minus "
        "val; val and test fixed), e.g. 1,5,10,50,all; the table gets labels_per_class and budget_draw "
        "columns and no predictions sidecar",
    )
    p.add_argument(
        "--budget-draws", type=int, default=3, help="seeded draws per label budget (default 3; 'all' has one)"
    )
    p.add_argument(
        "--timesteps",
        type=int_list,
        help="probe only the cells at these timesteps of the cache's grid, comma-separated (default: every cell)",
    )
    p.add_argument(
        "--drop-massive",
        action="store_true",
        help="drop each cell's massive channels (mean |x| > 100 x the median channel's, listed by `probekit info`) "
        "before probing; each results row records how many were dropped (massive_dropped)",
    )
    p.add_argument(
        "--device",
        default="auto",
        choices=["auto", "cpu", "cuda"],
        help="auto (default): cuda when a GPU is visible, else cpu",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(run=cmd_probe)

    p = sub.add_parser("compare", help="paired comparison of the val-chosen cells of two runs on the same test images")
    p.add_argument(
        "--results", required=True, nargs=2, metavar=("A", "B"), help="two results CSVs (each with its sidecar)"
    )
    p.add_argument("--probe", default="linear", help="probe whose val-chosen cell is compared (default linear)")
    p.add_argument("--probe-b", help="probe of run B, when it differs from --probe")
    p.add_argument("--n-boot", type=int, default=10_000, help="bootstrap resamples (default 10000)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.set_defaults(run=cmd_compare)

    p = sub.add_parser("summary", help="best cell per model and probe, from results tables")
    p.add_argument("--results", required=True, nargs="+", help="one or more results CSVs")
    p.set_defaults(run=cmd_summary)
