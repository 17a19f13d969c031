"""Command line: argument parsing only; every command is a thin call into the library."""

from __future__ import annotations

import argparse
import logging
import os
import re
import shlex
import signal
import sys
from pathlib import Path
from typing import Callable, NoReturn, Sequence

from .errors import ProbekitError


_KIND_WORDS = {int: "integers", float: "numbers"}


def _number_list(kind: type, example: str) -> Callable[[str], list]:
    """An argparse type for a comma-separated list of ``kind`` (int or float)."""

    def parse(text: str) -> list:
        items = [item.strip() for item in text.split(",") if item.strip()]
        try:
            return [kind(item) for item in items]
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of {_KIND_WORDS[kind]} (e.g. {example})") from None

    return parse


_int_list = _number_list(int, "1,11,21")
_float_list = _number_list(float, "0.1,1")


def _device(name: str) -> str:
    import torch

    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise ProbekitError("--device cuda was asked for but no CUDA GPU is visible: use --device cpu or auto")
    if name == "cuda" and "LOCAL_RANK" in os.environ:
        return f"cuda:{int(os.environ['LOCAL_RANK'])}"  # one GPU per torchrun process
    return name


def _memory_budget(text: str) -> int:
    """Bytes from '4G', '512M', '1.5T' or a plain byte count; 'auto' is half the physical memory."""
    if text == "auto":
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") // 2
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([KMGT]?)i?B?\s*", text, flags=re.IGNORECASE)
    if not match or float(match.group(1)) <= 0:
        raise ProbekitError(f"--max-memory {text!r} is not a size: write e.g. 4G, 500M or auto")
    scale = {"": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}[match.group(2).upper()]
    return int(float(match.group(1)) * scale)


class Interrupted(Exception):
    """Ctrl-C or SIGTERM, with what the user can do about it."""


def _raise_interrupt(_signum: int, _frame: object) -> None:
    raise KeyboardInterrupt


def _add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="diffusers model folder, hub id (owner/name), ddae:CONFIG.yaml:CKPT.pth[#MODEL], "
                   "dit:CKPT.pt or dit:owner/name, sit:CKPT.pt, hf-vision:FOLDER_OR_ID, sd:PIPELINE, or 'pixels'")
    p.add_argument("--random-init", action="store_true", help="same architecture, freshly initialised weights (control)")
    p.add_argument("--init-seed", type=int, default=0, help="seed of --random-init weights (default 0)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])


def cmd_layers(args: argparse.Namespace) -> None:
    from .models import load_backbone

    backbone = load_backbone(args.model, random_init=args.random_init, seed=args.init_seed, device=_device(args.device))
    print(f"model: {backbone.model_id}  [{backbone.framework}]")
    print(f"noise: {backbone.schedule.describe()}")
    print(f"default grid: {','.join(map(str, backbone.schedule.default_grid()))}")
    print(f"{'depth':>5}  {'name':<34} {'stage':<6} {'channels':>8}  {'resolution':<10} aliases")
    for layer in backbone.layers():
        print(f"{layer.depth:>5}  {layer.name:<34} {layer.stage:<6} {layer.channels:>8}  {layer.resolution:<10} {','.join(layer.aliases)}")


def cmd_extract(args: argparse.Namespace) -> None:
    from .data import load_dataset, stratified_subset
    from .distributed import barrier, current_rank, init_process_group, shard_dataset, shard_path, write_master
    from .extraction import ExtractConfig, extract
    from .models import load_backbone

    if args.timesteps is not None and args.grid:
        raise ProbekitError("give either --timesteps or --grid, not both")
    backbone = load_backbone(args.model, random_init=args.random_init, seed=args.init_seed, device=_device(args.device))
    dataset = load_dataset(args.data, download=not args.no_download, seed=args.seed)
    for split, limit in (("train", args.train_limit), ("test", args.test_limit)):
        if limit is not None:
            if limit < 1:
                raise ProbekitError(f"--{split}-limit must be a positive number of images, got {limit}")
            dataset.splits[split] = stratified_subset(dataset.splits[split], limit, seed=args.seed)
    config = ExtractConfig(
        timesteps=args.timesteps,
        layers=args.layers,
        draws=args.draws,
        views=args.views,
        seed=args.seed,
        batch_size=args.batch_size,
        pooling=args.pooling,
        dtype=args.dtype,
        fit=args.fit,
        precision=args.precision,
        channels_last=args.channels_last,
        compile=args.compile,
    )
    command = "probekit " + " ".join(shlex.quote(a) for a in args.argv)
    # SIGTERM (a scheduler's preemption) unwinds like Ctrl-C: queued writes finish, the cache stays resumable.
    signal.signal(signal.SIGTERM, _raise_interrupt)
    rank = current_rank()
    target, progress = Path(args.out), not args.quiet
    if rank is not None:
        # Under torchrun: this rank writes its shard; rank 0 stitches the master file at the end.
        init_process_group(backbone.device.type)
        dataset = shard_dataset(dataset, rank.rank, rank.world_size)
        target, progress = shard_path(args.out, rank.rank, rank.world_size), progress and rank.rank == 0
    try:
        out = extract(backbone, dataset, target, config, command=command, overwrite=args.overwrite, progress=progress)
    except KeyboardInterrupt:
        raise Interrupted(f"{target} is unfinished: run the same command again to resume it") from None
    if rank is not None:
        barrier()
        if rank.rank == 0:
            shards = [shard_path(args.out, r, rank.world_size) for r in range(rank.world_size)]
            out = write_master(args.out, shards, command=command)
            print(f"wrote {out} over {rank.world_size} shards")
        barrier()
    # Single-process: extract() has logged "wrote OUT in N s" already.


def cmd_probe(args: argparse.Namespace) -> None:
    from .predictions import predictions_path, write_predictions
    from .probes import ProbeSettings
    from .probes.run import ProbeRunConfig, probe_cache
    from .results import format_summary, write_table

    config = ProbeRunConfig(
        probes=[p.strip() for p in args.probes.split(",") if p.strip()],
        val_fraction=args.val_fraction,
        train_features=args.train_features,
        test_features=args.test_features,
        use_views=args.use_views,
        settings=ProbeSettings(linear_C=args.C, knn_k=args.k, knn_temperature=args.temperature),
        epochs=args.epochs,
        lr=args.lr,
        weight_decay=args.weight_decay,
        batch_size=args.batch_size,
        device=_device(args.device),
        seed=args.seed,
    )
    results = probe_cache(args.cache, config, progress=not args.quiet, max_memory=_memory_budget(args.max_memory))
    write_table(results.table, args.out)
    sidecar = write_predictions(predictions_path(args.out), results.predictions)
    print(format_summary(results.table))
    print(f"wrote {args.out} and {sidecar}")


def cmd_compare(args: argparse.Namespace) -> None:
    from .compare import compare_runs, format_comparison

    comparison = compare_runs(args.results[0], args.results[1], probe=args.probe, probe_b=args.probe_b,
                              n_boot=args.n_boot, seed=args.seed)
    print(format_comparison(comparison))


def cmd_plot(args: argparse.Namespace) -> None:
    import pandas as pd

    from .plots import plot_all
    from .results import read_table

    table = pd.concat([read_table(path) for path in args.results], ignore_index=True)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    for path in plot_all(table, args.out, x=args.x):
        print(f"wrote {path}")


def cmd_summary(args: argparse.Namespace) -> None:
    import pandas as pd

    from .results import format_summary, read_table

    print(format_summary(pd.concat([read_table(path) for path in args.results], ignore_index=True)))


def cmd_tsne(args: argparse.Namespace) -> None:
    from .cell_tsne import tsne_of_cell

    path = tsne_of_cell(args.cache, args.out, t=args.timestep, layer=args.layer, results=args.results, split=args.split,
                        max_points=args.max_points, seed=args.seed)
    print(f"wrote {path}")


def cmd_train(args: argparse.Namespace) -> None:
    from .train import TrainConfig, train

    overrides = {"data": args.data, "total_steps": args.total_steps, "train_limit": args.train_limit,
                 "batch_size": args.batch_size, "precision": args.precision, "checkpoint_every": args.checkpoint_every}
    config = TrainConfig.from_yaml(args.config, **overrides) if args.config else TrainConfig.from_dict(
        {k: v for k, v in overrides.items() if v is not None})
    model = train(config, args.out, device=_device(args.device), progress=not args.quiet)
    print(f"wrote {model} (probe it with: probekit extract --model {model} ...)")


def cmd_info(args: argparse.Namespace) -> None:
    from .cache import FeatureCache

    with FeatureCache(args.cache) as cache:
        print(cache.summary())


class _Parser(argparse.ArgumentParser):
    """argparse with probekit's one-line errors, and negative timestep lists read as values."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        # `--timesteps -5,10` is a (bad) value, not an option: let it reach the range check.
        self._negative_number_matcher = re.compile(r"^-\d+(,-?\d+)*$|^-\d*\.\d+$")

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"probekit: error: {message}; see `{self.prog} --help`\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="probekit", description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--debug", action="store_true", help="show full tracebacks")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("layers", help="list a model's readable layers")
    _add_model_args(p)
    p.set_defaults(run=cmd_layers)

    p = sub.add_parser("extract", help="extract pooled features over layers x noise grid into an HDF5 cache")
    _add_model_args(p)
    p.add_argument("--data", required=True, help="dataset name (fashion-mnist, mnist, cifar10, cifar100, tiny-imagenet, digits) or path")
    p.add_argument("--out", required=True, help="HDF5 cache to write")
    grid = p.add_mutually_exclusive_group()
    grid.add_argument("--timesteps", type=_int_list, help="comma-separated timestep indices of the model's schedule")
    grid.add_argument("--grid", action="store_true", help="the model's default grid (the default when --timesteps is absent)")
    p.add_argument("--layers", help="names, aliases, globs or indices, comma-separated (default: every layer)")
    p.add_argument("--draws", type=int, default=1, help="independent noise draws per image and view (default 1)")
    p.add_argument("--views", type=int, default=0,
                   help="augmented views (random crop with 4-pixel padding + flip, as DDAE's linear.py) of each train "
                        "image, stored besides the clean one; probes draw from them with --train-features sample (default 0)")
    p.add_argument("--seed", type=int, default=0, help="seed of the noise and of the subsets (default 0)")
    p.add_argument("--train-limit", type=int, help="class-stratified subset of the train split")
    p.add_argument("--test-limit", type=int, help="class-stratified subset of the test split")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--pooling", default="gap", help="gap (global average, default), avgK (e.g. avg2), or cls (class token of hf-vision: models)")
    p.add_argument("--dtype", default="float32", choices=["float32", "float16"], help="storage type of the features")
    p.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "fp16"],
                   help="compute precision: fp32, or bf16/fp16 autocast (default fp32)")
    p.add_argument("--channels-last", action="store_true", help="channels_last memory format (often faster on GPUs)")
    p.add_argument("--compile", action="store_true", help="torch.compile the network's layers (slow start, faster after)")
    p.add_argument("--fit", default="auto", choices=["auto", "pad", "resize", "center-crop"],
                   help="how images meet the model's resolution (auto: pad when smaller, else resize)")
    p.add_argument("--no-download", action="store_true", help="never download missing datasets")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(run=cmd_extract)

    p = sub.add_parser("probe", help="probe every (timestep, layer) cell of a cache, choosing on a validation split")
    p.add_argument("--cache", required=True, nargs="+",
                   help="cache file, or several caches of one extraction (e.g. train and test extracted apart)")
    p.add_argument("--out", required=True,
                   help="results CSV (tidy: one row per cell, probe, split, metric); test predictions go beside it "
                        "as OUT.predictions.npz")
    p.add_argument("--max-memory", default="auto",
                   help="feature memory budget, e.g. 4G or 500M, counting views and draws; cells are streamed from "
                        "the cache in groups that fit (default auto: half the machine's memory)")
    p.add_argument("--probes", default="linear,knn", help="comma-separated: linear, logreg, sgd, mlp, knn (default linear,knn)")
    p.add_argument("--val-fraction", type=float, default=0.1,
                   help="share of train held out (stratified, seeded) to choose cells and settings on (default 0.1; "
                        "a dataset's own val split is used when the cache has one; 0 chooses on test)")
    p.add_argument("--train-features", default="mean", choices=["mean", "sample"],
                   help="mean: the mean over noise draws of the clean image; sample: sgd/mlp draw one (view, draw) per "
                        "image each epoch (DDAE's protocol), the others train on every (view, draw) row")
    p.add_argument("--test-features", default="mean", choices=["mean", "single"],
                   help="val and test features: mean over noise draws, or a single draw (DDAE) (default mean)")
    p.add_argument("--use-views", type=int, help="with --train-features sample: draw from the first A augmented views only")
    p.add_argument("--C", type=_float_list, default=[1.0],
                   help="inverse L2 strength(s) of linear and logreg; several are chosen per cell on val (default 1)")
    p.add_argument("--epochs", type=int, help="sgd / mlp epochs (default 15, DDAE's)")
    p.add_argument("--lr", type=float, help="sgd / mlp learning rate (default 1e-3, DDAE's)")
    p.add_argument("--weight-decay", type=float, help="sgd / mlp weight decay (default 0)")
    p.add_argument("--batch-size", type=int, help="sgd / mlp batch size (default 128)")
    p.add_argument("--k", type=_int_list, default=[20], help="kNN neighbours; several are chosen per cell on val (default 20)")
    p.add_argument("--temperature", type=_float_list, default=[0.07],
                   help="kNN temperature(s); several are chosen per cell on val (default 0.07)")
    p.add_argument("--seed", type=int, default=0, help="seed of the validation split and the probes")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(run=cmd_probe)

    p = sub.add_parser("compare", help="paired comparison of the val-chosen cells of two runs on the same test images")
    p.add_argument("--results", required=True, nargs=2, metavar=("A", "B"), help="two results CSVs (each with its sidecar)")
    p.add_argument("--probe", default="linear", help="probe whose val-chosen cell is compared (default linear)")
    p.add_argument("--probe-b", help="probe of run B, when it differs from --probe")
    p.add_argument("--n-boot", type=int, default=10_000, help="bootstrap resamples (default 10000)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(run=cmd_compare)

    p = sub.add_parser("plot", help="heatmaps and accuracy-vs-noise curves from results tables")
    p.add_argument("--results", required=True, nargs="+", help="one or more results CSVs")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--x", default="t", choices=["t", "sigma", "logsnr"], help="noise axis of the curves")
    p.set_defaults(run=cmd_plot)

    p = sub.add_parser("summary", help="best cell per model and probe, from results tables")
    p.add_argument("--results", required=True, nargs="+", help="one or more results CSVs")
    p.set_defaults(run=cmd_summary)

    p = sub.add_parser("tsne", help="t-SNE of one cell, coloured by class")
    p.add_argument("--cache", required=True)
    p.add_argument("--out", required=True, help="PNG to write")
    p.add_argument("--timestep", type=int, help="default: the best linear-probe cell")
    p.add_argument("--layer", help="default: the best linear-probe cell")
    p.add_argument("--results", help="results CSV to take the best cell from (else a linear probe is run)")
    p.add_argument("--split", default="test")
    p.add_argument("--max-points", type=int, default=2000)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(run=cmd_tsne)

    p = sub.add_parser("train", help="pretrain a diffusers UNet2DModel to denoise (DDPM, labels unused); resumes")
    p.add_argument("--out", required=True, help="run folder; an existing run there is resumed")
    p.add_argument("--config", help="YAML recipe (see experiments/train/); settings below override it")
    p.add_argument("--data", help="dataset name or path (default fashion-mnist)")
    p.add_argument("--total-steps", type=int)
    p.add_argument("--train-limit", type=int, help="class-stratified subset of the train split")
    p.add_argument("--batch-size", type=int)
    p.add_argument("--checkpoint-every", type=int)
    p.add_argument("--precision", choices=["fp32", "bf16"])
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(run=cmd_train)

    p = sub.add_parser("info", help="metadata, grid, layers, sizes and completeness of a cache")
    p.add_argument("cache")
    p.set_defaults(run=cmd_info)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    args.argv = argv
    # Progress messages go to stdout, so stderr carries errors only (one line each).
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout)
    run: Callable[[argparse.Namespace], None] = args.run
    try:
        run(args)
        sys.stdout.flush()  # a closed pipe shows here, inside the handlers below, not at interpreter exit
    except ProbekitError as err:
        if args.debug:
            raise
        print(f"probekit: error: {err}", file=sys.stderr)
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
