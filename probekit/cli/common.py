"""What every command shares: list and size parsers, device choice, interrupts, argument groups."""

from __future__ import annotations

import argparse
import os
import re
import shlex
from collections.abc import Callable
from typing import TYPE_CHECKING

from probekit.core import interrupt
from probekit.core.errors import ProbekitError

if TYPE_CHECKING:
    from probekit.data import ImageDataset

KIND_WORDS = {int: "integers", float: "numbers"}


def number_list(kind: type, example: str) -> Callable[[str], list]:
    """An argparse type for a comma-separated list of ``kind`` (int or float)."""

    def parse(text: str) -> list:
        items = [item.strip() for item in text.split(",") if item.strip()]
        try:
            return [kind(item) for item in items]
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{text!r} is not a comma-separated list of {KIND_WORDS[kind]} (e.g. {example})"
            ) from None

    return parse


int_list = number_list(int, "1,11,21")


def name_list(text: str) -> list[str]:
    """A comma-separated list of names (e.g. probes: linear,knn)."""
    return [item.strip() for item in text.split(",") if item.strip()]


float_list = number_list(float, "0.1,1")


def resolve_device(name: str) -> str:
    import torch

    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise ProbekitError("--device cuda was asked for but no CUDA GPU is visible: use --device cpu or auto")
    if name == "cuda" and "LOCAL_RANK" in os.environ:
        return f"cuda:{int(os.environ['LOCAL_RANK'])}"  # one GPU per torchrun process
    return name


def memory_budget(text: str, flag: str = "--max-memory") -> int:
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


def raise_interrupt(signum: int, frame: object) -> None:
    """SIGTERM's handler: stop like Ctrl-C, and remember it (:mod:`probekit.core.interrupt`)."""
    interrupt.request_stop(signum, frame)


def add_model_args(p: argparse.ArgumentParser) -> argparse._ArgumentGroup:
    """--model and the flags of how it is loaded, in one argument group."""
    group = p.add_argument_group("model")
    group.add_argument(
        "--model",
        required=True,
        help="diffusers model folder, hub id (owner/name), ddae:CONFIG.yaml:CKPT.pth[#MODEL], "
        "dit:CKPT.pt or dit:owner/name, sit:CKPT.pt, hf-vision:FOLDER_OR_ID, sd:PIPELINE, or 'pixels'",
    )
    group.add_argument(
        "--random-init", action="store_true", help="same architecture, freshly initialised weights (control)"
    )
    group.add_argument("--init-seed", type=int, default=0, help="seed of --random-init weights (default 0)")
    group.add_argument(
        "--device",
        default="auto",
        choices=["auto", "cpu", "cuda"],
        help="auto (default): cuda when a GPU is visible, else cpu",
    )
    return group


DATA_HELP = (
    "dataset name (fashion-mnist, mnist, cifar10, cifar100, tiny-imagenet, digits), path, "
    "hf:NAME[:CONFIG] (Hugging Face hub) or hf-disk:PATH (a save_to_disk folder)"
)


def add_data_args(
    p: argparse.ArgumentParser,
    *,
    required: bool = True,
    default: str | None = None,
    data_help: str = DATA_HELP,
    limits: tuple[str, ...] = ("train", "test"),
    download: bool = True,
) -> argparse._ArgumentGroup:
    """The flags of every command that reads a dataset, in one argument group: --data, the hf:
    columns, the class-stratified split limits and --no-download. :func:`load_data` reads them.
    """
    group = p.add_argument_group("data")
    group.add_argument("--data", required=required, default=default, help=data_help)
    group.add_argument("--image-column", help="hf: data: the image column (default: the one Image column)")
    group.add_argument(
        "--label-column", help="hf: data: the label column (default: the one ClassLabel column, or 'label')"
    )
    for split in limits:
        group.add_argument(
            f"--{split}-limit", type=int, metavar="N", help=f"class-stratified subset of N images of the {split} split"
        )
    if download:
        group.add_argument("--no-download", action="store_true", help="never download missing datasets")
    return group


def load_data(args: argparse.Namespace) -> ImageDataset:
    """The dataset that :func:`add_data_args`' flags name, with its split limits applied (class-stratified,
    seeded by --seed).
    """
    from probekit.data import load_dataset, stratified_subset

    seed = getattr(args, "seed", 0)
    dataset = load_dataset(
        args.data,
        download=not getattr(args, "no_download", False),
        seed=seed,
        image_column=args.image_column,
        label_column=args.label_column,
    )
    for split in ("train", "test"):
        limit = getattr(args, f"{split}_limit", None)
        if limit is not None:
            if limit < 1:
                raise ProbekitError(f"--{split}-limit must be a positive number of images, got {limit}")
            dataset.splits[split] = stratified_subset(dataset.splits[split], limit, seed=seed)
    return dataset


def command_line(args: argparse.Namespace) -> str:
    """The command as typed, quoted for a shell (recorded in the files it writes)."""
    return "probekit " + " ".join(shlex.quote(a) for a in args.argv)
