"""Pretraining command."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from probekit.cli.common import add_data_args, resolve_device
from probekit.core.errors import ProbekitError


def cmd_train(args: argparse.Namespace) -> None:
    from probekit.core.precision import torch_dtype
    from probekit.train import TrainConfig, export_checkpoint, train

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
    if args.ship_only and not args.ship:
        raise ProbekitError("--ship-only needs --ship DEST: the folder to pack the run into")
    if not args.ship_only:
        train(
            config,
            args.out,
            device=resolve_device(args.device),
            progress=not args.quiet,
            continue_from=args.continue_from,
        )
    record = (
        json.loads((Path(args.out) / "record.json").read_text()) if (Path(args.out) / "record.json").is_file() else {}
    )
    print(f"wrote {args.out} (probe it with: probekit extract --model {record.get('model_spec', '?')} ...)")
    if args.ship:
        dest = export_checkpoint(
            args.out,
            args.ship,
            intermediate_steps=args.ship_intermediate,
            dtype=None if args.ship_dtype == "as-trained" else torch_dtype(args.ship_dtype),
            note=args.ship_note,
        )
        print(f"shipped {dest} with its model card ({dest / 'README.md'})")


def register(sub: argparse._SubParsersAction) -> None:
    """Add this group's commands to the top-level parser."""
    p = sub.add_parser(
        "train",
        help="pretrain a diffusion model to denoise (families ddpm, dit, edm, flow; labels unused); resumes",
    )
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
    p.add_argument(
        "--continue-from",
        metavar="SHIPPED",
        help="start a new run from a folder --ship wrote (same recipe), at its step: weights and EMA from its "
        "EMA weights, fresh optimizer moments, the data order and schedule going on",
    )
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
    p.add_argument(
        "--ship",
        metavar="DEST",
        help="after training, pack the run's latest EMA model into DEST with samples, loss curve and a model card",
    )
    p.add_argument(
        "--ship-dtype",
        default="fp16",
        choices=["fp16", "bf16", "fp32", "as-trained"],
        help="weights dtype of the shipped model (default fp16; loaded back as float32)",
    )
    p.add_argument(
        "--ship-intermediate",
        type=int,
        nargs="*",
        default=[],
        metavar="STEP",
        help="also ship the EMA checkpoints of these steps (float16) under DEST/intermediate/",
    )
    p.add_argument("--ship-note", metavar="TEXT", help="a paragraph added to the shipped model card")
    p.add_argument(
        "--ship-only", action="store_true", help="do not train: only ship what the run folder holds (with --ship)"
    )
    p.set_defaults(run=cmd_train)
