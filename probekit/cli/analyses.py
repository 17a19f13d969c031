"""Analysis commands over caches and results."""

from __future__ import annotations

import argparse
import signal
from pathlib import Path

from probekit.cli.common import (
    Interrupted,
    add_data_args,
    add_model_args,
    command_line,
    float_list,
    int_list,
    load_data,
    memory_budget,
    raise_interrupt,
    resolve_device,
)
from probekit.core.errors import ProbekitError


def cmd_similarity(args: argparse.Namespace) -> None:
    from probekit.analyses.similarity import SimilarityConfig, similarity_table
    from probekit.evaluate.results import read_table, write_table

    config = SimilarityConfig(
        k=args.k,
        samples=args.samples,
        seed=args.seed,
        split=args.split,
        matrix=not args.no_matrix,
        max_memory=memory_budget(args.max_memory),
        reference_t=args.reference_t,
        reference_layer=args.reference_layer,
        preprocess=args.preprocess,
        draws=args.draws,
        drop_massive=args.drop_massive,
    )
    table = similarity_table(args.cache, args.reference, config)
    write_table(table, args.out)
    print(f"wrote {args.out} ({len(table)} rows over {int(table['n_eval'].iloc[0])} {args.split} images)")
    if args.figures:
        from probekit.plots.similarity import plot_similarity

        for path in plot_similarity(read_table(args.out), args.figures):
            print(f"wrote {path}")


def cmd_align(args: argparse.Namespace) -> None:
    from probekit.analyses.alignment import METRICS, PROBE, AlignConfig, measure
    from probekit.evaluate.results import write_table
    from probekit.plots import plot_heatmap

    table = measure(args.cache, AlignConfig(split="test", max_points=args.max_points, seed=args.seed))
    write_table(table, args.out)
    print(f"wrote {args.out}")
    if args.figures:
        for metric in METRICS:
            print(f"wrote {plot_heatmap(table, PROBE, metric, Path(args.figures) / f'heatmap_{metric}.png')}")


def cmd_fuse(args: argparse.Namespace) -> None:
    from probekit.analyses.fusion import FusionConfig, format_fusion, fuse_cache
    from probekit.evaluate.predictions import predictions_path, write_predictions
    from probekit.evaluate.results import write_table

    config = FusionConfig(
        probe=args.probe,
        top_k=args.top_k,
        C=args.C,
        mixture=not args.no_mixture,
        mixture_top=args.mixture_top,
        width=args.width,
        epochs=args.epochs,
        lr=args.lr,
        val_fraction=args.val_fraction,
        seed=args.seed,
        device=resolve_device(args.device),
    )
    result = fuse_cache(args.cache, args.results, config, progress=not args.quiet)
    write_table(result.table, args.out)
    sidecar = write_predictions(predictions_path(args.out), result.predictions)
    print(format_fusion(result.table))
    print(f"wrote {args.out} and {sidecar}")
    if args.figures and result.weights:
        from probekit.plots.fusion import plot_mixture_weights

        print(f"wrote {plot_mixture_weights(result.table, Path(args.figures) / 'fusion_weights.png')}")


def cmd_tsne(args: argparse.Namespace) -> None:
    from probekit.analyses.cell_tsne import tsne_of_cell

    path = tsne_of_cell(
        args.cache,
        args.out,
        t=args.timestep,
        layer=args.layer,
        results=args.results,
        split=args.split,
        max_points=args.max_points,
        seed=args.seed,
    )
    print(f"wrote {path}")


def cmd_noisy_classifier(args: argparse.Namespace) -> None:
    from probekit.analyses.noisy_classifier import NoisyClassifierConfig, run_noisy_classifier
    from probekit.models import load_backbone
    from probekit.probes.noise_conditional import NoiseConditionalConfig

    device = resolve_device(args.device)
    backbone = load_backbone(args.model, random_init=args.random_init, seed=args.init_seed, device=device)
    head = NoiseConditionalConfig(
        epochs=args.epochs, lr=args.lr, batch_size=args.head_batch_size, seed=args.seed, device=device
    )
    config = NoisyClassifierConfig(
        layer=args.layer,
        timesteps=args.timesteps,
        draws=args.draws,
        seed=args.seed,
        batch_size=args.batch_size,
        pixels=not args.no_pixels,
        x=args.x,
        head=head,
    )
    command = command_line(args)
    table = run_noisy_classifier(backbone, load_data(args), args.out, config, command=command, progress=not args.quiet)
    rows = table[table["metric"] == "top1"]
    for model, group in rows.groupby("model", sort=False):
        print(f"{model}: " + "  ".join(f"t={r.t}:{100 * r.value:.1f}" for r in group.itertuples()))
    print(f"wrote {Path(args.out) / 'results.csv'}")


def cmd_finetune(args: argparse.Namespace) -> None:
    from probekit.analyses.finetune import FinetuneConfig, Finetuner, cell_from_results
    from probekit.models import load_backbone

    if args.from_results:
        if args.timestep is not None or args.layer is not None:
            raise ProbekitError("give either --from-results or --timestep and --layer, not both")
        timestep, layer = cell_from_results(args.from_results, probe=args.results_probe)
        print(f"fine-tuning the val-chosen {args.results_probe} cell of {args.from_results}: t={timestep}, {layer}")
    elif args.timestep is None or args.layer is None:
        raise ProbekitError("give --timestep and --layer, or --from-results RESULTS.csv")
    else:
        timestep, layer = args.timestep, args.layer
    device = resolve_device(args.device)
    backbone = load_backbone(args.model, random_init=args.random_init, seed=args.init_seed, device=device)
    config = FinetuneConfig(
        timestep=timestep,
        layer=layer,
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr_head=args.lr_head,
        lr_body=args.lr_body,
        weight_decay=args.weight_decay,
        warmup_epochs=args.warmup_epochs,
        val_fraction=args.val_fraction,
        crop_padding=args.crop_padding,
        hflip=not args.no_flip,
        seed=args.seed,
        precision=args.precision,
    )
    tuner = Finetuner(backbone, load_data(args), args.out, config, device=device, random_init=args.random_init)
    signal.signal(signal.SIGTERM, raise_interrupt)
    try:
        table = tuner.run(progress=not args.quiet)
    except KeyboardInterrupt:
        raise Interrupted(f"{args.out} holds the last finished epoch: run the same command again to resume") from None
    assert table is not None
    top1 = table[(table["metric"] == "top1") & (table["split"] == "test")].iloc[0]
    print(
        f"finetune t={top1.t} {top1.layer}: test top-1 {100 * top1.value:.1f} % [{100 * top1.ci_low:.1f}, "
        f"{100 * top1.ci_high:.1f}] (val-chosen epoch {tuner.chosen_epoch})"
    )
    print(f"wrote {Path(args.out) / 'results.csv'}")


def cmd_sweep(args: argparse.Namespace) -> None:
    from probekit.analyses.sweep import SweepConfig, find_checkpoints, run_sweep
    from probekit.probes.run import ProbeRunConfig

    checkpoints = find_checkpoints(args.run_source, images_per_epoch=args.images_per_epoch)
    print("checkpoints: " + ", ".join(f"{c.label} ({c.images_seen} images)" for c in checkpoints))
    device = resolve_device(args.device)
    config = SweepConfig(
        timesteps=args.timesteps,
        layers=args.layers,
        draws=args.draws,
        seed=args.seed,
        batch_size=args.batch_size,
        probe=args.probe,
        max_points=args.max_points,
        images_per_epoch=args.images_per_epoch,
    )
    signal.signal(signal.SIGTERM, raise_interrupt)
    try:
        table = run_sweep(
            checkpoints,
            lambda: load_data(args),
            args.out,
            config,
            device=device,
            progress=not args.quiet,
            probe_config=ProbeRunConfig(probes=[args.probe], device=device, seed=args.seed),
        )
    except KeyboardInterrupt:
        raise Interrupted(f"{args.out} is unfinished: run the same command again to resume it") from None
    for row in table.itertuples():
        print(
            f"{row.label}: {row.images_seen} images, best {row.probe} cell (chosen on {row.chosen_on}) t={row.t} "
            f"{row.layer}: test top-1 {100 * row.test_top1:.1f} %, alignment {row.alignment:.3f}, "
            f"uniformity {row.uniformity:.3f}"
        )
    print(f"wrote {Path(args.out) / 'sweep.csv'} and {Path(args.out) / 'sweep.png'}")


def register(sub: argparse._SubParsersAction) -> None:
    """Add this group's commands to the top-level parser."""
    p = sub.add_parser(
        "similarity",
        help="CKA / CKNNA / mutual k-NN of every cell against a reference cache, and the cell x cell CKA matrix",
    )
    p.add_argument("--cache", required=True, help="feature cache whose cells are compared")
    p.add_argument(
        "--reference", help="cache of the same images (e.g. pixels or another model) to compare every cell with"
    )
    p.add_argument("--reference-t", type=int, help="reference cell's timestep, when the reference holds several")
    p.add_argument("--reference-layer", help="reference cell's layer, when the reference holds several")
    p.add_argument("--out", required=True, help="results CSV of similarity rows")
    p.add_argument("--figures", help="folder for the similarity maps and the cell x cell matrix figure")
    p.add_argument("--split", default="test", help="split whose images are compared (default test)")
    p.add_argument(
        "--samples",
        type=int,
        default=1000,
        help="images scored: a seeded subsample bounds memory to samples^2 per kernel (default 1000)",
    )
    p.add_argument("--k", type=int, default=10, help="neighbours of CKNNA and mutual k-NN (default 10, as REPA)")
    p.add_argument("--seed", type=int, default=0, help="seed of the subsample (default 0)")
    p.add_argument("--no-matrix", action="store_true", help="skip the cell x cell CKA matrix")
    p.add_argument(
        "--drop-massive",
        action="store_true",
        help="drop each cell's massive channels (mean |x| > 100 x the median channel's, listed by `probekit info`) "
        "in the cache and the reference first; recorded in the massive_dropped column",
    )
    p.add_argument(
        "--preprocess",
        default="raw",
        choices=["raw", "prh"],
        help="raw: the cached features (default, what the probes fit); prh: clip at the 0.95 quantile and "
        "L2-normalise rows first, as the platonic-representation / REPA code does (comparable with their figures)",
    )
    p.add_argument(
        "--draws",
        default="mean",
        choices=["mean", "single"],
        help="mean: average each image's noise draws (default, as probes score test images); single: draw 0 only",
    )
    p.add_argument("--max-memory", default="1G", help="memory for the cell x cell matrix's kernels (default 1G)")
    p.set_defaults(run=cmd_similarity)

    p = sub.add_parser(
        "align", help="alignment and uniformity (Wang & Isola) of every cell of a cache with --draws >= 2"
    )
    p.add_argument("--cache", required=True, help="feature cache extracted with --draws 2 or more")
    p.add_argument(
        "--out",
        required=True,
        help="results CSV (probe 'geometry', metrics alignment and uniformity, "
        "measured on the test split's clean images)",
    )
    p.add_argument(
        "--max-points",
        type=int,
        default=4096,
        help="images kept (seeded random subset) for uniformity's all-pairs mean (default 4096)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the uniformity subset")
    p.add_argument("--figures", help="folder for heatmap_alignment.png and heatmap_uniformity.png")
    p.set_defaults(run=cmd_align)

    p = sub.add_parser(
        "fuse",
        help="fusion probes: the top-k val-ranked cells concatenated, and a learned "
        "softmax mixture over every cell; results rows and a predictions sidecar",
    )
    p.add_argument("--cache", required=True, nargs="+", help="the cache (or caches of one extraction) that was probed")
    p.add_argument(
        "--results", required=True, help="results CSV of `probekit probe` on that cache (ranks the cells on val)"
    )
    p.add_argument("--out", required=True, help="results CSV of the fusion probes (sidecar written beside it)")
    p.add_argument("--figures", help="folder for fusion_weights.png (the mixture weights over noise x depth)")
    p.add_argument("--probe", default="linear", help="probe whose val top-1 ranks the cells (default linear)")
    p.add_argument(
        "--top-k", type=int_list, default=[2, 4, 8], help="cell counts concatenated, chosen on val (default 2,4,8)"
    )
    p.add_argument(
        "--C",
        type=float_list,
        default=[1.0],
        help="inverse L2 strengths of the concatenation, chosen on val (default 1)",
    )
    p.add_argument("--no-mixture", action="store_true", help="skip the learned mixture")
    p.add_argument("--mixture-top", type=int, help="mix only the best M cells (default: every cell)")
    p.add_argument("--width", type=int, default=32, help="common projection width of the mixture (default 32)")
    p.add_argument(
        "--epochs", type=int, default=40, help="mixture training epochs; the best on val is kept (default 40)"
    )
    p.add_argument("--lr", type=float, default=3e-3, help="mixture Adam learning rate (default 3e-3)")
    p.add_argument("--val-fraction", type=float, default=0.1, help="as given to `probekit probe` (default 0.1)")
    p.add_argument("--seed", type=int, default=0, help="as given to `probekit probe` (default 0)")
    p.add_argument(
        "--device",
        default="auto",
        choices=["auto", "cpu", "cuda"],
        help="auto (default): cuda when a GPU is visible, else cpu",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(run=cmd_fuse)

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

    p = sub.add_parser(
        "noisy-classifier", help="noise-conditional MLP classifier on one layer at every noise level, vs noisy pixels"
    )
    add_model_args(p)
    add_data_args(p)
    p.add_argument("--layer", required=True, help="one layer: name, alias or index")
    p.add_argument("--out", required=True, help="run folder: features.h5, results.csv, loss.csv, accuracy_vs_<x>.png")
    p.add_argument("--timesteps", type=int_list, help="grid of noise levels (default: the model's default grid)")
    p.add_argument("--draws", type=int, default=2, help="noise draws per (image, level) to train on (default 2)")
    p.add_argument("--epochs", type=int, default=15, help="head epochs (default 15, as DDAE)")
    p.add_argument("--lr", type=float, default=1e-3, help="head Adam learning rate, cosine-decayed (default 1e-3)")
    p.add_argument("--head-batch-size", type=int, default=128, help="head minibatch (default 128)")
    p.add_argument("--batch-size", type=int, default=64, help="extraction batch size")
    p.add_argument("--no-pixels", action="store_true", help="skip the noisy-pixel baseline")
    p.add_argument("--x", default="sigma", choices=["sigma", "logsnr"], help="noise axis of the figure")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(run=cmd_noisy_classifier)

    p = sub.add_parser("finetune", help="fine-tune the network cut after one layer (+ linear head) at one noise level")
    add_model_args(p)
    add_data_args(p)
    p.add_argument("--out", required=True, help="run folder; an unfinished run there is resumed")
    p.add_argument("--timestep", type=int, help="noise level: the schedule's own timestep index")
    p.add_argument("--layer", help="cut after this layer (name, alias or index)")
    p.add_argument("--from-results", help="results CSV: take --timestep and --layer from its val-chosen best cell")
    p.add_argument(
        "--results-probe", default="linear", help="probe whose best cell --from-results takes (default linear)"
    )
    p.add_argument(
        "--epochs", type=int, default=10, help="fine-tuning epochs; the best on val is reported (default 10)"
    )
    p.add_argument("--batch-size", type=int, default=64, help="images per forward (default 64)")
    p.add_argument("--lr-head", type=float, default=1e-3, help="peak AdamW learning rate of the head (default 1e-3)")
    p.add_argument(
        "--lr-body", type=float, default=1e-4, help="peak AdamW learning rate of the network body (default 1e-4)"
    )
    p.add_argument("--weight-decay", type=float, default=0.05, help="AdamW weight decay (default 0.05)")
    p.add_argument("--warmup-epochs", type=float, default=1.0, help="linear warm-up, then cosine decay to 0")
    p.add_argument("--val-fraction", type=float, default=0.1, help="class-stratified validation share of train")
    p.add_argument("--crop-padding", type=int, default=4, help="random-crop padding in pixels (0: no crop)")
    p.add_argument("--no-flip", action="store_true", help="no random horizontal flip")
    p.add_argument(
        "--precision",
        default="fp32",
        choices=["fp32", "bf16", "fp16"],
        help="compute precision of the fine-tuning (default fp32)",
    )
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(run=cmd_finetune)

    p = sub.add_parser("sweep", help="extract + probe + alignment/uniformity over the checkpoints of one run; resumes")
    p.add_argument(
        "--run",
        dest="run_source",
        required=True,
        help="model folder with intermediate/step-N, a `probekit train` run folder, "
        "or ddae:CONFIG.yaml:FOLDER holding model_N.pth",
    )
    add_data_args(p)
    p.add_argument("--out", required=True, help="sweep folder: one sub-folder per checkpoint, sweep.csv, sweep.png")
    p.add_argument("--timesteps", type=int_list, help="grid (default: the model's default grid)")
    p.add_argument("--layers", help="layer selection as in extract (default: every layer)")
    p.add_argument("--draws", type=int, default=2, help="noise draws per image (>= 2 for alignment; default 2)")
    p.add_argument("--probe", default="linear", help="probe whose best cell is followed (default linear)")
    p.add_argument("--max-points", type=int, default=4096, help="images kept for uniformity (seeded subset)")
    p.add_argument(
        "--images-per-epoch", type=int, default=50000, help="DDAE model_N.pth only: training images per epoch"
    )
    p.add_argument("--batch-size", type=int, default=64, help="extraction batch size")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument(
        "--device",
        default="auto",
        choices=["auto", "cpu", "cuda"],
        help="auto (default): cuda when a GPU is visible, else cpu",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(run=cmd_sweep)
