"""Feature commands: list a model's layers, extract a cache, describe a cache."""

from __future__ import annotations

import argparse
import signal
from collections.abc import Callable
from dataclasses import fields
from typing import TYPE_CHECKING, Any

from probekit.cli.common import (
    Interrupted,
    add_data_args,
    add_model_args,
    command_line,
    int_list,
    load_data,
    memory_budget,
    raise_interrupt,
    resolve_device,
)
from probekit.core.errors import ProbekitError

if TYPE_CHECKING:
    from probekit.features.extraction import ExtractConfig


def cmd_layers(args: argparse.Namespace) -> None:
    from probekit.models import load_backbone

    backbone = load_backbone(
        args.model, random_init=args.random_init, seed=args.init_seed, device=resolve_device(args.device)
    )
    print(f"model: {backbone.model_id}  [{backbone.framework}]")
    print(f"noise: {backbone.schedule.describe()}")
    print(f"default grid: {','.join(map(str, backbone.schedule.default_grid()))}")
    print(f"{'depth':>5}  {'name':<34} {'stage':<6} {'channels':>8}  {'resolution':<10} aliases")
    for layer in backbone.layers():
        print(
            f"{layer.depth:>5}  {layer.name:<34} {layer.stage:<6} {layer.channels:>8}  {layer.resolution:<10} "
            f"{','.join(layer.aliases)}"
        )
    if args.kinds:
        _print_kinds(backbone.kind_layers())


def _print_kinds(kinds: list) -> None:
    """The activation kinds inside the blocks, each with the block depth it belongs to and its shape."""
    from collections import Counter

    from probekit.models.kinds import KINDS

    print(f"\nactivation kinds ({len(kinds)}; select with --layers 'HOST:KIND' or a glob such as '*:q'):")
    print(f"{'depth':>5}  {'name':<60} {'stage':<6} {'channels':>8}  resolution")
    for layer in kinds:
        print(f"{layer.depth:>5}  {layer.name:<60} {layer.stage:<6} {layer.channels:>8}  {layer.resolution}")
    counts = Counter(layer.name.rsplit(":", 1)[1] for layer in kinds)
    described = {spec.name: spec.description for spec in reversed(KINDS)}
    print("\nkinds: " + "; ".join(f"{kind} x{count} ({described[kind]})" for kind, count in counts.items()))


#: ExtractConfig fields that are not the value of the flag of the same name, and how the flags give them
_EXTRACT_FIELDS_READ_OTHERWISE: dict[str, Callable[[argparse.Namespace], Any]] = {
    "store_latents": lambda args: not args.no_latent_cache,
    "vae_memory": lambda args: None if args.vae_memory is None else int(args.vae_memory * 2**30),
    "max_memory": lambda args: memory_budget(args.max_memory) if args.max_memory else None,
}
#: ExtractConfig fields that no flag of extract sets (their defaults hold)
EXTRACT_FIELDS_WITHOUT_FLAG = ("splits",)


def extract_config(args: argparse.Namespace) -> ExtractConfig:
    """The ExtractConfig that extract's parsed flags give: each field from the flag of its name,
    or through :data:`_EXTRACT_FIELDS_READ_OTHERWISE`.
    """
    from probekit.features.extraction import ExtractConfig

    values = {}
    for spec in fields(ExtractConfig):
        if spec.name in _EXTRACT_FIELDS_READ_OTHERWISE:
            values[spec.name] = _EXTRACT_FIELDS_READ_OTHERWISE[spec.name](args)
        elif spec.name not in EXTRACT_FIELDS_WITHOUT_FLAG:
            values[spec.name] = getattr(args, spec.name)
    return ExtractConfig(**values)


def cmd_extract(args: argparse.Namespace) -> None:
    from probekit.features.launch import extract_launched
    from probekit.models import load_backbone

    if args.timesteps is not None and args.grid:
        raise ProbekitError("give either --timesteps or --grid, not both")
    config = extract_config(args)

    def open_job():  # runs once the output is held: a second extraction into it refuses before loading a model
        backbone = load_backbone(
            args.model, random_init=args.random_init, seed=args.init_seed, device=resolve_device(args.device)
        )
        dataset = load_data(args)
        if args.prompt:  # "" is the default, empty prompt
            backbone.set_prompt(args.prompt, dataset.class_names)
        return backbone, dataset

    # SIGTERM (a scheduler's preemption) unwinds like Ctrl-C: queued writes finish, the cache stays resumable.
    signal.signal(signal.SIGTERM, raise_interrupt)
    # Past a file-size limit (ulimit -f) a write then fails with EFBIG, reported in one line, instead
    # of the signal killing the process mid-write.
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    try:
        extract_launched(
            args.out,
            open_job,
            config,
            command=command_line(args),
            overwrite=args.overwrite,
            progress=not args.quiet,
            write_buffer=memory_budget(args.write_buffer, "--write-buffer"),
        )
    except KeyboardInterrupt:
        raise Interrupted(f"{args.out} is unfinished: run the same command again to resume it") from None


def cmd_info(args: argparse.Namespace) -> None:
    from probekit.features.cache import FeatureCache
    from probekit.features.massive import ATTR, RULE, cache_massive

    with FeatureCache(args.cache) as cache:
        print(cache.summary())
        recorded = ATTR in cache.attrs
        complete = cache.complete
        found = {cell: channels for cell, channels in cache_massive(cache).items() if len(channels)} if complete else {}
    if not found:
        print(f"massive channels: none ({RULE})" if recorded or complete else "")
        return
    print(f"massive channels ({RULE}{'' if recorded else '; computed now, not recorded'}): {len(found)} cells")
    for (t, layer), channels in sorted(found.items(), key=lambda item: (item[0][0], item[0][1])):
        shown = ",".join(map(str, channels[:12])) + (f",... ({len(channels)})" if len(channels) > 12 else "")
        print(f"  t={t:<5} {layer:<40} channels {shown}")


def register(sub: argparse._SubParsersAction) -> None:
    """Add this group's commands to the top-level parser."""
    p = sub.add_parser("layers", help="list a model's readable layers")
    add_model_args(p)
    p.add_argument(
        "--kinds",
        action="store_true",
        help="also list the activation kinds inside the blocks (q, k, v, attention outputs, residual increments, "
        "feed-forward, AdaLN modulation, text stream) with their shapes",
    )
    p.set_defaults(run=cmd_layers)

    p = sub.add_parser("extract", help="extract pooled features over layers x noise grid into an HDF5 cache")
    add_model_args(p)
    data = add_data_args(p)
    grid = p.add_argument_group("grid", "which noise levels and layers, and how each cell is read")
    which_t = grid.add_mutually_exclusive_group()
    which_t.add_argument("--timesteps", type=int_list, help="comma-separated timestep indices of the model's schedule")
    which_t.add_argument(
        "--grid", action="store_true", help="the model's default grid (the default when --timesteps is absent)"
    )
    grid.add_argument("--layers", help="names, aliases, globs or indices, comma-separated (default: every layer)")
    grid.add_argument("--draws", type=int, default=1, help="independent noise draws per image and view (default 1)")
    grid.add_argument(
        "--views",
        type=int,
        default=0,
        help="augmented views (random crop with 4-pixel padding + flip, as DDAE's linear.py) of each train "
        "image, stored besides the clean one; probes draw from them with --train-features sample (default 0)",
    )
    grid.add_argument("--seed", type=int, default=0, help="seed of the noise and of the subsets (default 0)")
    grid.add_argument(
        "--pooling",
        default="gap",
        help="gap (global average, default), avgK (e.g. avg2), spatialS (e.g. spatial8: "
        "an S x S average-pooled feature map per cell, for segment and correspond), or cls (class token of "
        "hf-vision: models)",
    )
    grid.add_argument(
        "--prompt",
        help="sd: models: condition each image on this template with its class name filled in, "
        "e.g. 'a photo of a {class}' (default: the empty prompt); the label then enters the features",
    )
    compute = p.add_argument_group("compute", "speed and memory; none of these changes the features")
    compute.add_argument("--batch-size", type=int, default=64, help="images per forward (default 64)")
    compute.add_argument(
        "--max-memory",
        help="bytes the features of the batches in flight may hold, e.g. 2G; the batch size "
        "is lowered to fit (default: no limit). The disk and memory budget is printed before extraction",
    )
    compute.add_argument(
        "--precision",
        default="auto",
        choices=["auto", "fp32", "bf16", "fp16"],
        help="compute precision (default auto: bf16 autocast only where the device runs it natively "
        "and a short measured matmul shows it faster, else fp32); pooling stays float32",
    )
    compute.add_argument(
        "--channels-last", action="store_true", help="channels_last memory format (often faster on GPUs)"
    )
    compute.add_argument(
        "--compile", action="store_true", help="torch.compile the network's layers (slow start, faster after)"
    )
    data.add_argument(
        "--fit",
        default="auto",
        choices=["auto", "pad", "resize", "center-crop"],
        help="how images meet the model's resolution (auto: pad when smaller, else resize)",
    )
    data.add_argument(
        "--image-size",
        type=int,
        metavar="S",
        help="decode every image at S x S: shorter side resized to S (bicubic, antialiased), centre crop "
        "(default: only for data of mixed image sizes, at the model's input size)",
    )
    compute.add_argument(
        "--workers",
        type=int,
        metavar="N",
        help="processes that decode, resize, augment and convert batches while the network runs "
        "(default: 0 for in-memory data at its size, else one per core but one, at most 8); "
        "features do not depend on it",
    )
    compute.add_argument(
        "--latent-cache",
        metavar="DIR",
        help="latent models: folder of stored VAE latents, reused by any later run on the same images, "
        "VAE, image size and view (default: latents/ beside --out)",
    )
    compute.add_argument(
        "--no-latent-cache", action="store_true", help="latent models: encode every image anew, store nothing"
    )
    compute.add_argument(
        "--vae-memory",
        type=float,
        metavar="GIB",
        help="latent models: GiB of activations one VAE encoder call may use; sets its batch "
        "(default: a quarter of the free GPU memory, 4 GiB on a CPU)",
    )
    output = p.add_argument_group("output")
    output.add_argument("--out", required=True, help="HDF5 cache to write")
    output.add_argument(
        "--dtype",
        choices=["float32", "float16"],
        help="storage type of the features (default float32; float16 for spatialS pooling)",
    )
    output.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    output.add_argument(
        "--write-buffer",
        default="256M",
        help="memory for features held back until they fill whole chunks, so each chunk is written once "
        "(default 256M; smaller: smaller chunks, more frequent flushes)",
    )
    output.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(run=cmd_extract)

    p = sub.add_parser("info", help="metadata, grid, layers, sizes and completeness of a cache")
    p.add_argument("cache", help="feature cache to describe")
    p.set_defaults(run=cmd_info)
