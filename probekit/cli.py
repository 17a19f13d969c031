"""Command line: argument parsing only; every command is a thin call into the library."""

from __future__ import annotations

import argparse
import contextlib
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


def _name_list(text: str) -> list[str]:
    """A comma-separated list of names (e.g. probes: linear,knn)."""
    return [item.strip() for item in text.split(",") if item.strip()]

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


def _memory_budget(text: str, flag: str = "--max-memory") -> int:
    """Bytes from '4G', '512M', '1.5T' or a plain byte count; 'auto' is half the physical memory."""
    if text == "auto":
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") // 2
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([KMGT]?)i?B?\s*", text, flags=re.IGNORECASE)
    if not match or float(match.group(1)) <= 0:
        raise ProbekitError(f"{flag} {text!r} is not a size: write e.g. 4G, 500M or auto")
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
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help="auto (default): cuda when a GPU is visible, else cpu")


def _add_column_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--image-column", help="hf: data: the image column (default: the one Image column)")
    p.add_argument("--label-column", help="hf: data: the label column (default: the one ClassLabel column, or 'label')")


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
    from .distributed import current_rank, shard_path
    from .output_lock import exclusive_output

    if args.timesteps is not None and args.grid:
        raise ProbekitError("give either --timesteps or --grid, not both")
    rank = current_rank()
    target = Path(args.out) if rank is None else shard_path(args.out, rank.rank, rank.world_size)
    with contextlib.ExitStack() as held:
        if target.parent.is_dir() and not target.is_dir():
            # A second extraction into the same file refuses now, not after loading its model.
            held.enter_context(exclusive_output(target))
        _extract_command(args, rank, target)


def _extract_command(args: argparse.Namespace, rank: object, target: Path) -> None:
    from .data import load_dataset, stratified_subset
    from .distributed import barrier, init_process_group, shard_dataset, shard_path, share_weight_hashes, write_master
    from .extraction import ExtractConfig, extract
    from .models import load_backbone

    backbone = load_backbone(args.model, random_init=args.random_init, seed=args.init_seed, device=_device(args.device))
    dataset = load_dataset(args.data, download=not args.no_download, seed=args.seed,
                           image_column=args.image_column, label_column=args.label_column)
    for split, limit in (("train", args.train_limit), ("test", args.test_limit)):
        if limit is not None:
            if limit < 1:
                raise ProbekitError(f"--{split}-limit must be a positive number of images, got {limit}")
            dataset.splits[split] = stratified_subset(dataset.splits[split], limit, seed=args.seed)
    if args.prompt:  # "" is the default, empty prompt
        backbone.set_prompt(args.prompt, dataset.class_names)
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
        image_size=args.image_size,
        precision=args.precision,
        channels_last=args.channels_last,
        compile=args.compile,
        workers=args.workers,
        latent_cache=args.latent_cache,
        store_latents=not args.no_latent_cache,
        vae_memory=None if args.vae_memory is None else int(args.vae_memory * 2**30),
        max_memory=_memory_budget(args.max_memory) if args.max_memory else None,
    )
    command = "probekit " + " ".join(shlex.quote(a) for a in args.argv)
    # SIGTERM (a scheduler's preemption) unwinds like Ctrl-C: queued writes finish, the cache stays resumable.
    signal.signal(signal.SIGTERM, _raise_interrupt)
    # Past a file-size limit (ulimit -f) a write then fails with EFBIG, reported in one line, instead
    # of the signal killing the process mid-write.
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    progress = not args.quiet
    if rank is not None:
        # Under torchrun: this rank writes its shard; rank 0 stitches the master file at the end.
        init_process_group(backbone.device.type)
        share_weight_hashes(backbone)  # one rank hashes, the others take its result
        dataset = shard_dataset(dataset, rank.rank, rank.world_size)
        progress = progress and rank.rank == 0
    try:
        out = extract(backbone, dataset, target, config, command=command, overwrite=args.overwrite, progress=progress,
                      write_buffer=_memory_budget(args.write_buffer, "--write-buffer"))
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
    from .distributed import current_rank, init_process_group
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
        settings=ProbeSettings(linear_C=args.C, knn_k=args.k, knn_temperature=args.temperature, knn_centre=args.knn_centre),
        epochs=args.epochs,
        lr=args.lr,
        weight_decay=args.weight_decay,
        batch_size=args.batch_size,
        device=_device(args.device),
        seed=args.seed,
        timesteps=args.timesteps,
    )
    if args.labels_per_class:
        from .probes.label_budget import parse_budgets, probe_label_budgets

        table = probe_label_budgets(args.cache, config, parse_budgets(args.labels_per_class), draws=args.budget_draws,
                                    progress=not args.quiet, max_memory=_memory_budget(args.max_memory))
        write_table(table, args.out)
        print(f"wrote {args.out} (label budgets {args.labels_per_class}; draw it with `probekit plot --results {args.out} ...`)")
        return
    rank = current_rank()
    if rank is not None:
        # Under torchrun: each rank probes a share of the cells; rank 0 writes the one table. The
        # results are small numpy arrays gathered through gloo whatever device the probes run on.
        init_process_group("cpu")
    results = probe_cache(args.cache, config, progress=not args.quiet and rank is None,
                          max_memory=_memory_budget(args.max_memory),
                          rank=None if rank is None else (rank.rank, rank.world_size))
    if rank is not None and rank.rank != 0:
        return
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
    if "labels_per_class" in table.columns:  # tables of `probe --labels-per-class`: the label-efficiency curve
        from .plots.label_efficiency import plot_label_efficiency

        if table["labels_per_class"].isna().any():
            raise ProbekitError("mix of label-budget and plain results tables: plot them separately")
        figure, summary = plot_label_efficiency(table, Path(args.out) / "label_efficiency.png")
        summary.to_csv(Path(args.out) / "label_efficiency.csv", index=False)
        print(summary.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
        print(f"wrote {figure} and {Path(args.out) / 'label_efficiency.csv'}")
        return
    for path in plot_all(table, args.out, metric=args.metric, x=args.x):
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

    overrides = {"data": args.data, "image_column": args.image_column, "label_column": args.label_column,
                 "total_steps": args.total_steps, "train_limit": args.train_limit,
                 "batch_size": args.batch_size, "precision": args.precision, "checkpoint_every": args.checkpoint_every}
    config = TrainConfig.from_yaml(args.config, **overrides) if args.config else TrainConfig.from_dict(
        {k: v for k, v in overrides.items() if v is not None})
    model = train(config, args.out, device=_device(args.device), progress=not args.quiet)
    print(f"wrote {model} (probe it with: probekit extract --model {model} ...)")


def cmd_mosaic(args: argparse.Namespace) -> None:
    from .data import load_dataset
    from .data.segmentation import write_fashion_mosaic

    dataset = load_dataset(args.data, download=not args.no_download)
    out = write_fashion_mosaic(dataset, args.out, counts={"train": args.train, "val": args.val, "test": args.test},
                               tile=args.tile, seed=args.seed)
    print(f"wrote {out} ({args.train} train, {args.val} val, {args.test} test mosaics of {2 * args.tile}x{2 * args.tile} pixels)")


def cmd_segment(args: argparse.Namespace) -> None:
    from .dense.segment import SegmentConfig, segment_cache
    from .dense.sidecar import write_dense_sidecar
    from .results import format_summary, write_table

    config = SegmentConfig(pixels_per_image=args.pixels_per_image, val_fraction=args.val_fraction, C=args.C, seed=args.seed)
    results = segment_cache(args.cache, args.data, config, max_memory=_memory_budget(args.max_memory))
    write_table(results.table, args.out)
    sidecar = write_dense_sidecar(args.out, results.table, "confusion", results.test_confusions, results.test_index)
    print(format_summary(results.table, metric="miou"))
    print(f"wrote {args.out} and {sidecar}")


def cmd_pairs(args: argparse.Namespace) -> None:
    from .data import pairs

    sources = [name for name, value in (("--warp", args.warp), ("--spair", args.spair), ("--pf-pascal", args.pf_pascal)) if value]
    if len(sources) != 1:
        raise ProbekitError("give exactly one of --warp DATA, --spair ROOT or --pf-pascal ROOT")
    if args.warp:
        from .data import load_dataset

        out = pairs.write_warp_pairs(load_dataset(args.warp, download=not args.no_download), args.out,
                                     counts={"val": args.val, "test": args.test}, keypoints=args.keypoints,
                                     rotation=args.rotation, scale=args.scale, shift=args.shift, seed=args.seed)
    elif args.spair:
        out = pairs.convert_spair(args.spair, args.out, limit=args.limit)
    else:
        out = pairs.convert_pf_pascal(args.pf_pascal, args.out, limit=args.limit)
    print(f"wrote {out} (extract it with --pooling spatialS, then `probekit correspond --data {out}`)")


def cmd_correspond(args: argparse.Namespace) -> None:
    from .dense.correspond import CorrespondConfig, correspond_cache
    from .dense.sidecar import write_dense_sidecar
    from .results import format_summary, write_table

    results = correspond_cache(args.cache, args.data, CorrespondConfig(alpha=args.alpha))
    write_table(results.table, args.out)
    sidecar = write_dense_sidecar(args.out, results.table, "pck", results.test_counts, results.test_pairs)
    print(format_summary(results.table, metric="pck"))
    print(f"wrote {args.out} and {sidecar}")


def cmd_dense_compare(args: argparse.Namespace) -> None:
    from .dense.sidecar import compare_dense, format_dense_comparison

    comparison = compare_dense(args.results[0], args.results[1], n_boot=args.n_boot, seed=args.seed)
    print(format_dense_comparison(comparison, *(Path(p).stem for p in args.results)))


def cmd_info(args: argparse.Namespace) -> None:
    from .cache import FeatureCache

    with FeatureCache(args.cache) as cache:
        print(cache.summary())


def cmd_align(args: argparse.Namespace) -> None:
    from .alignment import METRICS, PROBE, AlignConfig, measure
    from .plots import plot_heatmap
    from .results import write_table

    table = measure(args.cache, AlignConfig(split="test", max_points=args.max_points, seed=args.seed))
    write_table(table, args.out)
    print(f"wrote {args.out}")
    if args.figures:
        for metric in METRICS:
            print(f"wrote {plot_heatmap(table, PROBE, metric, Path(args.figures) / f'heatmap_{metric}.png')}")


def _load_limited(args: argparse.Namespace):
    """The --data dataset with --train-limit / --test-limit applied (class-stratified, seeded)."""
    from .data import load_dataset, stratified_subset

    dataset = load_dataset(args.data, download=not getattr(args, "no_download", False), seed=args.seed)
    for split, limit in (("train", args.train_limit), ("test", args.test_limit)):
        if limit is not None:
            if limit < 1:
                raise ProbekitError(f"--{split}-limit must be a positive number of images, got {limit}")
            dataset.splits[split] = stratified_subset(dataset.splits[split], limit, seed=args.seed)
    return dataset


def cmd_noisy_classifier(args: argparse.Namespace) -> None:
    from .models import load_backbone
    from .noisy_classifier import NoisyClassifierConfig, run_noisy_classifier
    from .probes.noise_conditional import NoiseConditionalConfig
    from .results import format_summary

    device = _device(args.device)
    backbone = load_backbone(args.model, random_init=args.random_init, seed=args.init_seed, device=device)
    head = NoiseConditionalConfig(epochs=args.epochs, lr=args.lr, batch_size=args.head_batch_size, seed=args.seed, device=device)
    config = NoisyClassifierConfig(layer=args.layer, timesteps=args.timesteps, draws=args.draws, seed=args.seed,
                                   batch_size=args.batch_size, pixels=not args.no_pixels, x=args.x, head=head)  # fmt: skip
    command = "probekit " + " ".join(shlex.quote(a) for a in args.argv)
    table = run_noisy_classifier(backbone, _load_limited(args), args.out, config, command=command, progress=not args.quiet)
    rows = table[table["metric"] == "top1"]
    for model, group in rows.groupby("model", sort=False):
        print(f"{model}: " + "  ".join(f"t={r.t}:{100 * r.value:.1f}" for r in group.itertuples()))
    print(f"wrote {Path(args.out) / 'results.csv'}")


def cmd_finetune(args: argparse.Namespace) -> None:
    from .finetune import FinetuneConfig, Finetuner, cell_from_results
    from .models import load_backbone

    if args.from_results:
        if args.timestep is not None or args.layer is not None:
            raise ProbekitError("give either --from-results or --timestep and --layer, not both")
        timestep, layer = cell_from_results(args.from_results, probe=args.results_probe)
        print(f"fine-tuning the val-chosen {args.results_probe} cell of {args.from_results}: t={timestep}, {layer}")
    elif args.timestep is None or args.layer is None:
        raise ProbekitError("give --timestep and --layer, or --from-results RESULTS.csv")
    else:
        timestep, layer = args.timestep, args.layer
    device = _device(args.device)
    backbone = load_backbone(args.model, random_init=args.random_init, seed=args.init_seed, device=device)
    config = FinetuneConfig(timestep=timestep, layer=layer, epochs=args.epochs, batch_size=args.batch_size,
                            lr_head=args.lr_head, lr_body=args.lr_body, weight_decay=args.weight_decay,
                            warmup_epochs=args.warmup_epochs, val_fraction=args.val_fraction,
                            crop_padding=args.crop_padding, hflip=not args.no_flip, seed=args.seed,
                            precision=args.precision)  # fmt: skip
    tuner = Finetuner(backbone, _load_limited(args), args.out, config, device=device, random_init=args.random_init)
    signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        table = tuner.run(progress=not args.quiet)
    except KeyboardInterrupt:
        raise Interrupted(f"{args.out} holds the last finished epoch: run the same command again to resume") from None
    assert table is not None
    top1 = table[(table["metric"] == "top1") & (table["split"] == "test")].iloc[0]
    print(f"finetune t={top1.t} {top1.layer}: test top-1 {100 * top1.value:.1f} % [{100 * top1.ci_low:.1f}, "
          f"{100 * top1.ci_high:.1f}] (val-chosen epoch {tuner.chosen_epoch})")
    print(f"wrote {Path(args.out) / 'results.csv'}")


def cmd_sweep(args: argparse.Namespace) -> None:
    from .probes.run import ProbeRunConfig
    from .sweep import SweepConfig, find_checkpoints, run_sweep

    checkpoints = find_checkpoints(args.run_source, images_per_epoch=args.images_per_epoch)
    print("checkpoints: " + ", ".join(f"{c.label} ({c.images_seen} images)" for c in checkpoints))
    device = _device(args.device)
    config = SweepConfig(timesteps=args.timesteps, layers=args.layers, draws=args.draws, seed=args.seed,
                         batch_size=args.batch_size, probe=args.probe,
                         max_points=args.max_points, images_per_epoch=args.images_per_epoch)  # fmt: skip
    signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        table = run_sweep(checkpoints, lambda: _load_limited(args), args.out, config, device=device,
                          progress=not args.quiet,
                          probe_config=ProbeRunConfig(probes=[args.probe], device=device, seed=args.seed))  # fmt: skip
    except KeyboardInterrupt:
        raise Interrupted(f"{args.out} is unfinished: run the same command again to resume it") from None
    for row in table.itertuples():
        print(f"{row.label}: {row.images_seen} images, best {row.probe} cell (chosen on {row.chosen_on}) t={row.t} "
              f"{row.layer}: test top-1 {100 * row.test_top1:.1f} %, alignment {row.alignment:.3f}, "
              f"uniformity {row.uniformity:.3f}")
    print(f"wrote {Path(args.out) / 'sweep.csv'} and {Path(args.out) / 'sweep.png'}")

def cmd_similarity(args: argparse.Namespace) -> None:
    from .results import read_table, write_table
    from .similarity import SimilarityConfig, similarity_table

    config = SimilarityConfig(k=args.k, samples=args.samples, seed=args.seed, split=args.split, matrix=not args.no_matrix,
                              max_memory=_memory_budget(args.max_memory), reference_t=args.reference_t,
                              reference_layer=args.reference_layer, preprocess=args.preprocess, draws=args.draws)
    table = similarity_table(args.cache, args.reference, config)
    write_table(table, args.out)
    print(f"wrote {args.out} ({len(table)} rows over {int(table['n_eval'].iloc[0])} {args.split} images)")
    if args.figures:
        from .plots.similarity import plot_similarity

        for path in plot_similarity(read_table(args.out), args.figures):
            print(f"wrote {path}")


def cmd_fuse(args: argparse.Namespace) -> None:
    from .predictions import predictions_path, write_predictions
    from .probes.fusion import FusionConfig, format_fusion, fuse_cache
    from .results import write_table

    config = FusionConfig(probe=args.probe, top_k=args.top_k, C=args.C, mixture=not args.no_mixture,
                          mixture_top=args.mixture_top, width=args.width, epochs=args.epochs, lr=args.lr,
                          val_fraction=args.val_fraction, seed=args.seed, device=_device(args.device))
    result = fuse_cache(args.cache, args.results, config, progress=not args.quiet)
    write_table(result.table, args.out)
    sidecar = write_predictions(predictions_path(args.out), result.predictions)
    print(format_fusion(result.table))
    print(f"wrote {args.out} and {sidecar}")
    if args.figures and result.weights:
        from .plots.fusion import plot_mixture_weights

        print(f"wrote {plot_mixture_weights(result.table, Path(args.figures) / 'fusion_weights.png')}")


def cmd_report(args: argparse.Namespace) -> None:
    from .report import build_report

    commands: list[str] = []
    if args.commands:
        path = Path(args.commands)
        if not path.is_file():
            raise ProbekitError(f"--commands {path} does not exist: give a text file with one command per line")
        commands = [line.rstrip() for line in path.read_text().splitlines() if line.strip() and not line.lstrip().startswith("#")]
    out = build_report(args.results, args.out, caches=args.cache or (), images=args.images or (), commands=commands,
                       title=args.title, x=args.x, n_boot=args.n_boot)
    print(f"wrote {out}")


def _run_command(argv: list[str]) -> None:
    """One step of `probekit run`: the same parser and handler as typing the command by hand."""
    args = build_parser().parse_args(argv)
    args.argv, args.debug = argv, False
    args.run(args)


def cmd_run(args: argparse.Namespace) -> None:
    from .pipeline import RunConfig, run_all

    settings = {key: value for key, value in vars(args).items() if key in RunConfig.__dataclass_fields__}
    config = RunConfig.from_sources(args.config, settings)
    signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        report = run_all(config, _run_command)
    except KeyboardInterrupt:
        raise Interrupted(f"{config.out} is unfinished: run the same command again to continue where it stopped") from None
    print(f"report: {report}")


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
    p.add_argument("--data", required=True, help="dataset name (fashion-mnist, mnist, cifar10, cifar100, tiny-imagenet, digits), "
                   "path, hf:NAME[:CONFIG] (Hugging Face hub) or hf-disk:PATH (a save_to_disk folder)")
    _add_column_args(p)
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
    p.add_argument("--batch-size", type=int, default=64, help="images per forward (default 64)")
    p.add_argument("--pooling", default="gap", help="gap (global average, default), avgK (e.g. avg2), spatialS (e.g. spatial8: "
                   "an S x S average-pooled feature map per cell, for segment and correspond), or cls (class token of "
                   "hf-vision: models)")
    p.add_argument("--dtype", choices=["float32", "float16"],
                   help="storage type of the features (default float32; float16 for spatialS pooling)")
    p.add_argument("--max-memory", help="bytes the features of the batches in flight may hold, e.g. 2G; the batch size "
                   "is lowered to fit (default: no limit). The disk and memory budget is printed before extraction")
    p.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16", "fp16"],
                   help="compute precision (default auto: bf16 autocast only where the device runs it natively "
                        "and a short measured matmul shows it faster, else fp32); pooling stays float32")
    p.add_argument("--channels-last", action="store_true", help="channels_last memory format (often faster on GPUs)")
    p.add_argument("--compile", action="store_true", help="torch.compile the network's layers (slow start, faster after)")
    p.add_argument("--fit", default="auto", choices=["auto", "pad", "resize", "center-crop"],
                   help="how images meet the model's resolution (auto: pad when smaller, else resize)")
    p.add_argument("--image-size", type=int, metavar="S",
                   help="decode every image at S x S: shorter side resized to S (bicubic, antialiased), centre crop "
                        "(default: only for data of mixed image sizes, at the model's input size)")
    p.add_argument("--workers", type=int, metavar="N",
                   help="processes that decode, resize, augment and convert batches while the network runs "
                        "(default: 0 for in-memory data at its size, else one per core but one, at most 8); "
                        "features do not depend on it")
    p.add_argument("--latent-cache", metavar="DIR",
                   help="latent models: folder of stored VAE latents, reused by any later run on the same images, "
                        "VAE, image size and view (default: latents/ beside --out)")
    p.add_argument("--no-latent-cache", action="store_true", help="latent models: encode every image anew, store nothing")
    p.add_argument("--vae-memory", type=float, metavar="GIB",
                   help="latent models: GiB of activations one VAE encoder call may use; sets its batch "
                        "(default: a quarter of the free GPU memory, 4 GiB on a CPU)")
    p.add_argument("--prompt", help="sd: models: condition each image on this template with its class name filled in, "
                   "e.g. 'a photo of a {class}' (default: the empty prompt); the label then enters the features")
    p.add_argument("--no-download", action="store_true", help="never download missing datasets")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    p.add_argument("--write-buffer", default="256M",
                   help="memory for features held back until they fill whole chunks, so each chunk is written once "
                        "(default 256M; smaller: smaller chunks, more frequent flushes)")
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
    p.add_argument("--knn-centre", action="store_true", help="kNN: subtract the train mean before the cosine")
    p.add_argument("--seed", type=int, default=0, help="seed of the validation split and the probes")
    p.add_argument("--labels-per-class", metavar="K,K,...",
                   help="label efficiency: fit on K train images per class (stratified, seeded draws from train minus "
                        "val; val and test fixed), e.g. 1,5,10,50,all; the table gets labels_per_class and budget_draw "
                        "columns and no predictions sidecar")
    p.add_argument("--budget-draws", type=int, default=3, help="seeded draws per label budget (default 3; 'all' has one)")
    p.add_argument("--timesteps", type=_int_list,
                   help="probe only the cells at these timesteps of the cache's grid, comma-separated (default: every cell)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help="auto (default): cuda when a GPU is visible, else cpu")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(run=cmd_probe)

    p = sub.add_parser("compare", help="paired comparison of the val-chosen cells of two runs on the same test images")
    p.add_argument("--results", required=True, nargs=2, metavar=("A", "B"), help="two results CSVs (each with its sidecar)")
    p.add_argument("--probe", default="linear", help="probe whose val-chosen cell is compared (default linear)")
    p.add_argument("--probe-b", help="probe of run B, when it differs from --probe")
    p.add_argument("--n-boot", type=int, default=10_000, help="bootstrap resamples (default 10000)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.set_defaults(run=cmd_compare)

    p = sub.add_parser("plot", help="heatmaps and accuracy-vs-noise curves from results tables")
    p.add_argument("--results", required=True, nargs="+", help="one or more results CSVs")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--x", default="t", choices=["t", "sigma", "logsnr"], help="noise axis of the curves")
    p.add_argument("--metric", default="top1",
                   help="metric drawn (default top1; miou / pixel_accuracy for segment, pck / pck_point for correspond)")
    p.set_defaults(run=cmd_plot)

    p = sub.add_parser("summary", help="best cell per model and probe, from results tables")
    p.add_argument("--results", required=True, nargs="+", help="one or more results CSVs")
    p.set_defaults(run=cmd_summary)

    p = sub.add_parser("tsne", help="t-SNE of one cell, coloured by class")
    p.add_argument("--cache", required=True, help="feature cache to read")
    p.add_argument("--out", required=True, help="PNG to write")
    p.add_argument("--timestep", type=int, help="default: the best linear-probe cell")
    p.add_argument("--layer", help="default: the best linear-probe cell")
    p.add_argument("--results", help="results CSV to take the best cell from (else a linear probe is run)")
    p.add_argument("--split", default="test", help="split whose images are drawn (default test)")
    p.add_argument("--max-points", type=int, default=2000, help="images drawn, a seeded subset (default 2000)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.set_defaults(run=cmd_tsne)

    p = sub.add_parser("train", help="pretrain a diffusers UNet2DModel to denoise (DDPM, labels unused); resumes")
    p.add_argument("--out", required=True, help="run folder; an existing run there is resumed")
    p.add_argument("--config", help="YAML recipe (see experiments/train/); settings below override it")
    p.add_argument("--data", help="dataset name, path, hf:NAME[:CONFIG] or hf-disk:PATH (default fashion-mnist)")
    _add_column_args(p)
    p.add_argument("--total-steps", type=int, help="training steps (overrides the recipe)")
    p.add_argument("--train-limit", type=int, help="class-stratified subset of the train split")
    p.add_argument("--batch-size", type=int, help="images per step (overrides the recipe)")
    p.add_argument("--checkpoint-every", type=int, help="steps between checkpoints, samples and records (overrides the recipe)")
    p.add_argument("--precision", choices=["auto", "fp32", "bf16"],
                   help="auto (the default): bf16 autocast only where the device runs it natively and faster")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help="auto (default): cuda when a GPU is visible, else cpu")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(run=cmd_train)

    p = sub.add_parser("align", help="alignment and uniformity (Wang & Isola) of every cell of a cache with --draws >= 2")
    p.add_argument("--cache", required=True, help="feature cache extracted with --draws 2 or more")
    p.add_argument("--out", required=True, help="results CSV (probe 'geometry', metrics alignment and uniformity, "
                   "measured on the test split's clean images)")
    p.add_argument("--max-points", type=int, default=4096,
                   help="images kept (seeded random subset) for uniformity's all-pairs mean (default 4096)")
    p.add_argument("--seed", type=int, default=0, help="seed of the uniformity subset")
    p.add_argument("--figures", help="folder for heatmap_alignment.png and heatmap_uniformity.png")
    p.set_defaults(run=cmd_align)

    p = sub.add_parser("noisy-classifier", help="noise-conditional MLP classifier on one layer at every noise level, vs noisy pixels")
    _add_model_args(p)
    p.add_argument("--data", required=True, help="dataset name or path")
    p.add_argument("--layer", required=True, help="one layer: name, alias or index")
    p.add_argument("--out", required=True, help="run folder: features.h5, results.csv, loss.csv, accuracy_vs_<x>.png")
    p.add_argument("--timesteps", type=_int_list, help="grid of noise levels (default: the model's default grid)")
    p.add_argument("--draws", type=int, default=2, help="noise draws per (image, level) to train on (default 2)")
    p.add_argument("--train-limit", type=int, help="class-stratified subset of the train split")
    p.add_argument("--test-limit", type=int, help="class-stratified subset of the test split")
    p.add_argument("--epochs", type=int, default=15, help="head epochs (default 15, as DDAE)")
    p.add_argument("--lr", type=float, default=1e-3, help="head Adam learning rate, cosine-decayed (default 1e-3)")
    p.add_argument("--head-batch-size", type=int, default=128, help="head minibatch (default 128)")
    p.add_argument("--batch-size", type=int, default=64, help="extraction batch size")
    p.add_argument("--no-pixels", action="store_true", help="skip the noisy-pixel baseline")
    p.add_argument("--x", default="sigma", choices=["sigma", "logsnr"], help="noise axis of the figure")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--no-download", action="store_true", help="never download missing datasets")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(run=cmd_noisy_classifier)

    p = sub.add_parser("finetune", help="fine-tune the network cut after one layer (+ linear head) at one noise level")
    _add_model_args(p)
    p.add_argument("--data", required=True, help="dataset name or path")
    p.add_argument("--out", required=True, help="run folder; an unfinished run there is resumed")
    p.add_argument("--timestep", type=int, help="noise level: the schedule's own timestep index")
    p.add_argument("--layer", help="cut after this layer (name, alias or index)")
    p.add_argument("--from-results", help="results CSV: take --timestep and --layer from its val-chosen best cell")
    p.add_argument("--results-probe", default="linear", help="probe whose best cell --from-results takes (default linear)")
    p.add_argument("--epochs", type=int, default=10, help="fine-tuning epochs; the best on val is reported (default 10)")
    p.add_argument("--batch-size", type=int, default=64, help="images per forward (default 64)")
    p.add_argument("--lr-head", type=float, default=1e-3, help="peak AdamW learning rate of the head (default 1e-3)")
    p.add_argument("--lr-body", type=float, default=1e-4, help="peak AdamW learning rate of the network body (default 1e-4)")
    p.add_argument("--weight-decay", type=float, default=0.05, help="AdamW weight decay (default 0.05)")
    p.add_argument("--warmup-epochs", type=float, default=1.0, help="linear warm-up, then cosine decay to 0")
    p.add_argument("--val-fraction", type=float, default=0.1, help="class-stratified validation share of train")
    p.add_argument("--crop-padding", type=int, default=4, help="random-crop padding in pixels (0: no crop)")
    p.add_argument("--no-flip", action="store_true", help="no random horizontal flip")
    p.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "fp16"], help="compute precision of the fine-tuning (default fp32)")
    p.add_argument("--train-limit", type=int, help="class-stratified subset of the train split")
    p.add_argument("--test-limit", type=int, help="class-stratified subset of the test split")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--no-download", action="store_true", help="never download missing datasets")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(run=cmd_finetune)

    p = sub.add_parser("sweep", help="extract + probe + alignment/uniformity over the checkpoints of one run; resumes")
    p.add_argument("--run", dest="run_source", required=True, help="model folder with intermediate/step-N, a `probekit train` run folder, "
                   "or ddae:CONFIG.yaml:FOLDER holding model_N.pth")
    p.add_argument("--data", required=True, help="dataset name or path")
    p.add_argument("--out", required=True, help="sweep folder: one sub-folder per checkpoint, sweep.csv, sweep.png")
    p.add_argument("--timesteps", type=_int_list, help="grid (default: the model's default grid)")
    p.add_argument("--layers", help="layer selection as in extract (default: every layer)")
    p.add_argument("--draws", type=int, default=2, help="noise draws per image (>= 2 for alignment; default 2)")
    p.add_argument("--probe", default="linear", help="probe whose best cell is followed (default linear)")
    p.add_argument("--max-points", type=int, default=4096, help="images kept for uniformity (seeded subset)")
    p.add_argument("--images-per-epoch", type=int, default=50000, help="DDAE model_N.pth only: training images per epoch")
    p.add_argument("--train-limit", type=int, help="class-stratified subset of the train split")
    p.add_argument("--test-limit", type=int, help="class-stratified subset of the test split")
    p.add_argument("--batch-size", type=int, default=64, help="extraction batch size")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help="auto (default): cuda when a GPU is visible, else cpu")
    p.add_argument("--no-download", action="store_true", help="never download missing datasets")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(run=cmd_sweep)

    p = sub.add_parser("similarity", help="CKA / CKNNA / mutual k-NN of every cell against a reference cache, "
                       "and the cell x cell CKA matrix")
    p.add_argument("--cache", required=True, help="feature cache whose cells are compared")
    p.add_argument("--reference", help="cache of the same images (e.g. pixels or another model) to compare every cell with")
    p.add_argument("--reference-t", type=int, help="reference cell's timestep, when the reference holds several")
    p.add_argument("--reference-layer", help="reference cell's layer, when the reference holds several")
    p.add_argument("--out", required=True, help="results CSV of similarity rows")
    p.add_argument("--figures", help="folder for the similarity maps and the cell x cell matrix figure")
    p.add_argument("--split", default="test", help="split whose images are compared (default test)")
    p.add_argument("--samples", type=int, default=1000,
                   help="images scored: a seeded subsample bounds memory to samples^2 per kernel (default 1000)")
    p.add_argument("--k", type=int, default=10, help="neighbours of CKNNA and mutual k-NN (default 10, as REPA)")
    p.add_argument("--seed", type=int, default=0, help="seed of the subsample (default 0)")
    p.add_argument("--no-matrix", action="store_true", help="skip the cell x cell CKA matrix")
    p.add_argument("--preprocess", default="raw", choices=["raw", "prh"],
                   help="raw: the cached features (default, what the probes fit); prh: clip at the 0.95 quantile and "
                        "L2-normalise rows first, as the platonic-representation / REPA code does (comparable with their figures)")
    p.add_argument("--draws", default="mean", choices=["mean", "single"],
                   help="mean: average each image's noise draws (default, as probes score test images); single: draw 0 only")
    p.add_argument("--max-memory", default="1G", help="memory for the cell x cell matrix's kernels (default 1G)")
    p.set_defaults(run=cmd_similarity)

    p = sub.add_parser("fuse", help="fusion probes: the top-k val-ranked cells concatenated, and a learned "
                       "softmax mixture over every cell; results rows and a predictions sidecar")
    p.add_argument("--cache", required=True, nargs="+", help="the cache (or caches of one extraction) that was probed")
    p.add_argument("--results", required=True, help="results CSV of `probekit probe` on that cache (ranks the cells on val)")
    p.add_argument("--out", required=True, help="results CSV of the fusion probes (sidecar written beside it)")
    p.add_argument("--figures", help="folder for fusion_weights.png (the mixture weights over noise x depth)")
    p.add_argument("--probe", default="linear", help="probe whose val top-1 ranks the cells (default linear)")
    p.add_argument("--top-k", type=_int_list, default=[2, 4, 8], help="cell counts concatenated, chosen on val (default 2,4,8)")
    p.add_argument("--C", type=_float_list, default=[1.0], help="inverse L2 strengths of the concatenation, chosen on val (default 1)")
    p.add_argument("--no-mixture", action="store_true", help="skip the learned mixture")
    p.add_argument("--mixture-top", type=int, help="mix only the best M cells (default: every cell)")
    p.add_argument("--width", type=int, default=32, help="common projection width of the mixture (default 32)")
    p.add_argument("--epochs", type=int, default=40, help="mixture training epochs; the best on val is kept (default 40)")
    p.add_argument("--lr", type=float, default=3e-3, help="mixture Adam learning rate (default 3e-3)")
    p.add_argument("--val-fraction", type=float, default=0.1, help="as given to `probekit probe` (default 0.1)")
    p.add_argument("--seed", type=int, default=0, help="as given to `probekit probe` (default 0)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help="auto (default): cuda when a GPU is visible, else cpu")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(run=cmd_fuse)

    p = sub.add_parser("report", help="one self-contained HTML page: protocol, val-chosen cells, paired comparisons, "
                       "figures and commands")
    p.add_argument("--results", required=True, nargs="+",
                   help="results CSVs: probe runs (with their sidecars), fusion runs and similarity tables")
    p.add_argument("--out", required=True, help="HTML file to write")
    p.add_argument("--cache", nargs="*", help="caches the results came from: their metadata and recorded commands")
    p.add_argument("--images", nargs="*", help="extra PNG figures to embed (e.g. a t-SNE from `probekit tsne`)")
    p.add_argument("--commands", help="text file of further commands to list (blank and # lines skipped)")
    p.add_argument("--title", default="probekit report", help="title of the page (default: probekit report)")
    p.add_argument("--x", default="t", choices=["t", "sigma", "logsnr"], help="noise axis of the curves")
    p.add_argument("--n-boot", type=int, default=10_000, help="bootstrap resamples of the paired comparisons")
    p.set_defaults(run=cmd_report)

    p = sub.add_parser("mosaic", help="write a segmentation folder of 2 x 2 Fashion-MNIST mosaics (garment class per "
                       "tile foreground, background elsewhere)")
    p.add_argument("--data", default="fashion-mnist", help="grayscale dataset the garments come from (default fashion-mnist)")
    p.add_argument("--out", required=True, help="folder to write (images/, masks/, classes.txt)")
    p.add_argument("--train", type=int, default=400, help="train mosaics (default 400)")
    p.add_argument("--val", type=int, default=100, help="val mosaics (default 100)")
    p.add_argument("--test", type=int, default=200, help="test mosaics (default 200)")
    p.add_argument("--tile", type=int, default=16, help="tile side in pixels; a mosaic is 2 x tile wide (default 16)")
    p.add_argument("--seed", type=int, default=0, help="seed of the garment draws and placements (default 0)")
    p.add_argument("--no-download", action="store_true", help="never download missing datasets")
    p.set_defaults(run=cmd_mosaic)

    p = sub.add_parser("segment", help="per-pixel linear segmentation on every cell of a spatial cache (mIoU, pixel "
                       "accuracy), chosen on val")
    p.add_argument("--cache", required=True, help="cache extracted with --pooling spatialS from a segmentation folder")
    p.add_argument("--data", required=True, help="the segmentation folder (images/, masks/, classes.txt) it was extracted from")
    p.add_argument("--out", required=True, help="results CSV; per-test-image confusion matrices go beside it (OUT.dense.npz)")
    p.add_argument("--pixels-per-image", type=int, default=64, help="labelled train pixels drawn per image (default 64)")
    p.add_argument("--val-fraction", type=float, default=0.2, help="share of train images held out when the cache has no val split")
    p.add_argument("--C", type=float, default=1.0, help="inverse L2 strength of the linear probe (default 1)")
    p.add_argument("--seed", type=int, default=0, help="seed of the pixel draws and the validation split (default 0)")
    p.add_argument("--max-memory", default="auto", help="feature memory budget; cells are processed in groups that fit")
    p.set_defaults(run=cmd_segment)

    p = sub.add_parser("pairs", help="write a keypoint pair folder: random affine warps of a dataset's images (exact "
                       "ground truth), or SPair-71k / PF-Pascal annotations")
    p.add_argument("--out", required=True, help="pair folder to write (images/{val,test}/, pairs.npz)")
    p.add_argument("--warp", metavar="DATA", help="grayscale dataset to warp: val pairs from its train split, test from its test split")
    p.add_argument("--spair", metavar="ROOT", help="SPair-71k folder (PairAnnotation/, JPEGImages/)")
    p.add_argument("--pf-pascal", metavar="ROOT", help="PF-dataset-PASCAL folder with {val,test}_pairs_pf_pascal.csv")
    p.add_argument("--val", type=int, default=100, help="--warp: val pairs (default 100)")
    p.add_argument("--test", type=int, default=200, help="--warp: test pairs (default 200)")
    p.add_argument("--keypoints", type=int, default=8, help="--warp: keypoints per pair, on the foreground (default 8)")
    p.add_argument("--rotation", type=float, default=15.0, help="--warp: rotation range, +- degrees (default 15)")
    p.add_argument("--scale", type=float, default=0.1, help="--warp: scale range 1 +- this (default 0.1)")
    p.add_argument("--shift", type=float, default=0.1, help="--warp: translation range, +- this x image side (default 0.1)")
    p.add_argument("--limit", type=int, help="--spair / --pf-pascal: the first N pairs of each split")
    p.add_argument("--seed", type=int, default=0, help="seed of the warps and keypoints (default 0)")
    p.add_argument("--no-download", action="store_true", help="never download missing datasets")
    p.set_defaults(run=cmd_pairs)

    p = sub.add_parser("correspond", help="keypoint correspondence PCK@alpha (DIFT's definition) on every cell of a "
                       "spatial cache, chosen on val pairs")
    p.add_argument("--cache", required=True, help="cache extracted with --pooling spatialS from a pair folder")
    p.add_argument("--data", required=True, help="the pair folder it was extracted from")
    p.add_argument("--out", required=True, help="results CSV; per-test-pair counts go beside it (OUT.dense.npz)")
    p.add_argument("--alpha", type=float, default=0.1, help="PCK threshold as a share of max(box h, w) (default 0.1)")
    p.set_defaults(run=cmd_correspond)

    p = sub.add_parser("dense-compare", help="paired bootstrap of two segment / correspond runs on the same test "
                       "images or pairs, at their val-chosen cells")
    p.add_argument("--results", required=True, nargs=2, metavar=("A", "B"), help="two results CSVs (each with OUT.dense.npz)")
    p.add_argument("--n-boot", type=int, default=10_000, help="bootstrap resamples (default 10000)")
    p.add_argument("--seed", type=int, default=0, help="seed of the bootstrap (default 0)")
    p.set_defaults(run=cmd_dense_compare)
    p = sub.add_parser("run", help="the whole question for one model: extract it and its baselines, probe, compare, "
                       "plot, similarity, fusion and the report; re-running continues where it stopped")
    p.add_argument("--config", help="YAML file of the settings below (underscored names, e.g. train_limit: 1500); "
                   "flags given override it")
    p.add_argument("--model", help="the model, as for extract (required here or in --config)")
    p.add_argument("--data", help="the dataset, as for extract (required here or in --config)")
    p.add_argument("--out", help="folder of the results tables, figures, comparisons.txt and report.html")
    p.add_argument("--name", help="the model's label in file names (default: from --model)")
    p.add_argument("--cache-dir", help="folder of the feature caches and step records (default OUT/caches)")
    p.add_argument("--timesteps", type=_int_list, help="the model's grid (default: its schedule's default grid)")
    p.add_argument("--layers", help="layer selection as in extract (default: every layer)")
    p.add_argument("--train-limit", type=int, help="class-stratified subset of the train split")
    p.add_argument("--test-limit", type=int, help="class-stratified subset of the test split")
    p.add_argument("--seed", type=int, help="seed of the noise, subsets, validation split and probes (default 0)")
    p.add_argument("--batch-size", type=int, help="extraction batch size (default 64)")
    p.add_argument("--precision", choices=["auto", "fp32", "bf16", "fp16"], help="extraction compute precision (default auto)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], help="default auto")
    p.add_argument("--probes", type=_name_list,
                   help="probes of the model (default linear,knn)")
    p.add_argument("--k", type=_int_list, help="kNN neighbours of the model's probe, chosen on val (default 20)")
    p.add_argument("--C", type=_float_list, help="inverse L2 strength(s) of linear / logreg, chosen on val (default 1)")
    p.add_argument("--no-pixels", dest="pixels", action="store_const", const=False, help="no raw-pixel baseline")
    p.add_argument("--pixels-probes", type=_name_list,
                   help="probes of the pixel baseline (default linear,logreg,knn)")
    p.add_argument("--no-random-init", dest="random_init", action="store_const", const=False,
                   help="no random-init twin (same architecture, fresh weights)")
    p.add_argument("--random-init-timesteps", type=_int_list, help="grid of the random-init twin (default 0)")
    p.add_argument("--random-init-probes", type=_name_list,
                   help="probes of the random-init twin (default linear,knn)")
    p.add_argument("--baseline-k", type=_int_list, help="kNN neighbours of the baselines' probes (default 20)")
    p.add_argument("--no-similarity", dest="similarity", action="store_const", const=False,
                   help="skip CKA / CKNNA / mutual k-NN to the pixels")
    p.add_argument("--no-fusion", dest="fusion", action="store_const", const=False, help="skip the fusion probes")
    p.add_argument("--no-tsne", dest="tsne", action="store_const", const=False, help="skip the t-SNE of the best cell")
    p.add_argument("--dense", dest="dense", action="store_const", const=True,
                   help="also segmentation on mosaics and correspondence on warp pairs of --data (grayscale), over "
                        "dense_timesteps x dense_layers (sizes: see the guide's run page)")
    p.add_argument("--no-dense", dest="dense", action="store_const", const=False, help="no dense probes (default)")
    p.add_argument("--label-efficiency", dest="label_efficiency", action="store_const", const=True,
                   help="also linear probes on labels_per_class labelled images per class, from the same caches")
    p.add_argument("--no-label-efficiency", dest="label_efficiency", action="store_const", const=False,
                   help="no label-efficiency curve (default)")
    p.add_argument("--images", nargs="*", help="extra PNGs to embed in the report (e.g. the model's samples)")
    p.add_argument("--x", choices=["t", "sigma", "logsnr"], help="noise axis of the report's curves (default sigma)")
    p.add_argument("--n-boot", type=int, help="bootstrap resamples of the paired comparisons (default 10000)")
    p.add_argument("--max-memory", help="probing memory budget, as for probe (default auto)")
    p.add_argument("--no-download", dest="no_download", action="store_const", const=True,
                   help="never download missing datasets")
    p.add_argument("--title", help="title of the report (default: model and data)")
    p.add_argument("--quiet", dest="quiet", action="store_const", const=True, help="no progress bars")
    p.set_defaults(run=cmd_run)

    p = sub.add_parser("info", help="metadata, grid, layers, sizes and completeness of a cache")
    p.add_argument("cache", help="feature cache to describe")
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
