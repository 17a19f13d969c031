"""Pretraining command."""

from __future__ import annotations

import argparse

from probekit.cli.common import add_data_args, resolve_device


def cmd_train(args: argparse.Namespace) -> None:
    from probekit.train import TrainConfig, train

    overrides = {
        "data": args.data,
        "image_column": args.image_column,
        "label_column": args.label_column,
        "total_steps": args.total_steps,
        "train_limit": args.train_limit,
        "batch_size": args.batch_size,
        "precision": args.precision,
        "checkpoint_every": args.checkpoint_every,
    }
    config = (
        TrainConfig.from_yaml(args.config, **overrides)
        if args.config
        else TrainConfig.from_dict({k: v for k, v in overrides.items() if v is not None})
    )
    model = train(config, args.out, device=resolve_device(args.device), progress=not args.quiet)
    print(f"wrote {model} (probe it with: probekit extract --model {model} ...)")


def register(sub: argparse._SubParsersAction) -> None:
    """Add this group's commands to the top-level parser."""
    p = sub.add_parser("train", help="pretrain a diffusers UNet2DModel to denoise (DDPM, labels unused); resumes")
    p.add_argument("--out", required=True, help="run folder; an existing run there is resumed")
    p.add_argument("--config", help="YAML recipe (see experiments/train/); settings below override it")
    add_data_args(
        p,
        required=False,
        data_help="dataset name, path, hf:NAME[:CONFIG] or hf-disk:PATH (default: the recipe's, else fashion-mnist)",
        limits=("train",),
        download=False,
    )
    p.add_argument("--total-steps", type=int, help="training steps (overrides the recipe)")
    p.add_argument("--batch-size", type=int, help="images per step (overrides the recipe)")
    p.add_argument(
        "--checkpoint-every", type=int, help="steps between checkpoints, samples and records (overrides the recipe)"
    )
    p.add_argument(
        "--precision",
        choices=["auto", "fp32", "bf16"],
        help="auto (the default): bf16 autocast only where the device runs it natively and faster",
    )
    p.add_argument(
        "--device",
        default="auto",
        choices=["auto", "cpu", "cuda"],
        help="auto (default): cuda when a GPU is visible, else cpu",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(run=cmd_train)
