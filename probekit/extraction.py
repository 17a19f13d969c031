"""Backbone x dataset x noise grid -> pooled features -> FeatureCache.

For each batch of clean images and each (grid point, draw), one forward captures every requested
layer. Noise comes from :mod:`probekit.noise` keyed by (split seed, sample id, t, draw), so features
do not depend on the batch size or order.
Writes happen on a background thread while the next batch computes.
"""

from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from .cache import CacheLayout, CacheWriter, FeatureCache, SplitLabels
from .data import ImageDataset, fit_images
from .data.augment import crop_flip_views
from .data.resize import sized_dataset
from .errors import ProbekitError
from .models.backbone import Backbone
from .models.layers import select_layers
from .noise import sample_noise, split_seed
from .output_lock import exclusive_output
from .pooling import Pooling
from .precision import PRECISION_CHOICES, resolve_precision
from .schedule import GridPoint

log = logging.getLogger(__name__)


@dataclass
class ExtractConfig:
    """What to extract. ``timesteps`` are the schedule's own indices; None means its default grid."""

    timesteps: Sequence[int] | None = None
    layers: str | Sequence[str] | None = None
    draws: int = 1
    #: augmented views (crop + flip) of each train image, besides the clean one (view 0)
    views: int = 0
    seed: int = 0
    batch_size: int = 64
    pooling: str = "gap"
    dtype: str = "float32"
    fit: str = "auto"
    #: decode every image at this square side (shorter side resized, centre crop); None: only
    #: datasets of mixed image sizes are, at the model's input side (probekit.data.resize)
    image_size: int | None = None
    #: splits extracted when the dataset has them ("val": a dataset's own validation split)
    splits: Sequence[str] = field(default=("train", "val", "test"))
    #: auto (bf16 only where the device runs it natively and faster, see probekit.precision), fp32,
    #: or bf16 / fp16 autocast around each forward; pooling stays float32 and so do the stored features
    precision: str = "auto"
    channels_last: bool = False
    compile: bool = False


PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass
class ExtractPlan:
    """The resolved grid and layers (what ``extract`` will actually run)."""

    grid: list[GridPoint]
    layers: list[str]
    pooling: Pooling


def plan_extraction(backbone: Backbone, config: ExtractConfig) -> ExtractPlan:
    """Validate and resolve the config against the backbone; raises ProbekitError on bad input."""
    if config.draws < 1:
        raise ProbekitError(f"--draws must be at least 1, got {config.draws}")
    if config.views < 0:
        raise ProbekitError(f"--views must be 0 (clean images only) or more, got {config.views}")
    if config.batch_size < 1:
        raise ProbekitError(f"--batch-size must be at least 1, got {config.batch_size}")
    if config.precision not in PRECISION_CHOICES:
        raise ProbekitError(f"unknown --precision {config.precision!r}: use {', '.join(PRECISION_CHOICES)}")
    timesteps = list(config.timesteps) if config.timesteps is not None else backbone.schedule.default_grid()
    if not timesteps:
        raise ProbekitError("empty timestep list: give --timesteps t1,t2,... or --grid")
    if len(set(timesteps)) != len(timesteps):
        raise ProbekitError(f"repeated timesteps in {timesteps}: list each once")
    grid = sorted(backbone.schedule.points(timesteps), key=lambda point: point.t)
    layers = select_layers(backbone.layers(), config.layers)
    return ExtractPlan(grid=grid, layers=layers, pooling=Pooling.parse(config.pooling))


def _batch_features(
    backbone: Backbone,
    x0: torch.Tensor,
    ids: np.ndarray,
    plan: ExtractPlan,
    draws: int,
    seed: int,
    on_forward: Callable[[int], object] | None = None,
    precision: str = "fp32",
    view: int = 0,
    labels: torch.Tensor | None = None,
) -> dict[str, np.ndarray]:
    """{layer: (T, K, B, D)} for one batch of clean inputs ``x0`` (already on the device).

    ``seed`` is the split's noise seed (:func:`probekit.noise.split_seed`). The batch is encoded
    once (:meth:`Backbone.encode`) and the encoding is noised at every grid point. ``labels`` (B,)
    go to every forward (label-conditioned backbones read them, the others ignore them).
    """
    x0 = backbone.encode(x0)
    per_layer: dict[str, list[torch.Tensor]] = {name: [] for name in plan.layers}
    for point in plan.grid:
        for draw in range(draws):
            if point.alpha_bar >= 1.0:
                x_noisy = x0
            else:
                noise = sample_noise(x0.shape[1:], ids, seed=seed, t=point.t, draw=noise_draw(view, draw), device=x0.device)
                x_noisy = backbone.schedule.add_noise(x0, noise, point)
            with _autocast(x0.device, precision):
                feats = backbone.features(x_noisy, point, plan.layers, plan.pooling, labels)
            for name in plan.layers:
                per_layer[name].append(feats[name].float())
            if on_forward is not None:
                on_forward(len(ids))
    shape = (len(plan.grid), draws)
    return {
        name: torch.stack(values).reshape(*shape, *values[0].shape).cpu().numpy() for name, values in per_layer.items()
    }


def noise_draw(view: int, draw: int) -> int:
    """The noise key of (view, draw): the draw itself on the clean view (so caches without views
    are unchanged), and a number no clean draw reaches on an augmented view (fresh noise per view,
    as DDAE draws for each augmented image)."""
    return draw if view == 0 else (view << 32) | draw


def _autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    dtype = PRECISIONS[precision]
    if dtype is None:
        return contextlib.nullcontext()
    try:
        return torch.autocast(device_type=device.type, dtype=dtype)
    except RuntimeError as err:
        raise ProbekitError(f"--precision {precision} is not supported on {device.type} ({err}); use fp32") from err


def _cpu_attention_flops(query_shape, key_shape, value_shape, *args, **kwargs) -> int:  # noqa: ANN001
    """FLOPs of softmax(Q K^T) V in the CPU fused-attention kernel: 2 B H L S E for Q K^T plus
    2 B H L S Ev for the product with V, the count torch gives its GPU attention kernels."""
    batch, heads, queries, dim = query_shape
    return 2 * batch * heads * queries * key_shape[-2] * (dim + value_shape[-1])


# Kernels that torch.utils.flop_counter does not list: without this, every attention layer of a
# model run on the CPU counts as zero FLOPs (8 % of the shipped UNet's work, 30 % of its time).
_UNLISTED_FLOPS = {
    op: _cpu_attention_flops
    for op in [getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)]
    if op is not None
}


def flop_counter() -> "torch.utils.flop_counter.FlopCounterMode":
    """``torch.utils.flop_counter.FlopCounterMode`` (no display) that also counts the kernels
    torch does not list (CPU attention): the counter ``probekit extract`` records FLOPs with."""
    from torch.utils.flop_counter import FlopCounterMode

    return FlopCounterMode(display=False, custom_mapping=_UNLISTED_FLOPS)


def _probe_forward(
    backbone: Backbone, x0: torch.Tensor, plan: ExtractPlan, precision: str, labels: torch.Tensor | None = None
) -> tuple[dict[str, int], int | None]:
    """Pooled widths per layer, and the forward's FLOPs per image, from one forward of ``x0``.

    The forward is the one extraction runs (hooked, stopping after the deepest requested layer)
    at the first grid point, counted by ``torch.utils.flop_counter`` (matmuls, convolutions,
    attention, including the CPU attention kernel it does not list) and divided by the batch
    size. The latent encoder, which runs once per image and
    not per grid point, is not counted. FLOPs are None (with a log line) when the counter cannot
    trace the model; the widths come from a plain forward then.
    """
    x = backbone.encode(x0)
    with torch.no_grad(), _autocast(x.device, precision):
        try:
            with flop_counter() as counter:
                feats = backbone.features(x, plan.grid[0], plan.layers, plan.pooling, labels)
            flops: int | None = int(counter.get_total_flops()) // len(x0)
        except (ProbekitError, torch.OutOfMemoryError, KeyboardInterrupt):
            raise
        except Exception as err:  # noqa: BLE001 -- counting is a report, never a reason to fail extraction
            log.info("could not count the forward's FLOPs (%s)", str(err).splitlines()[0] if str(err) else type(err).__name__)
            feats, flops = backbone.features(x, plan.grid[0], plan.layers, plan.pooling, labels), None
    return {name: int(values.shape[-1]) for name, values in feats.items()}, flops


def _labels(labels: np.ndarray, device: torch.device) -> torch.Tensor:
    """Class ids as the (B,) int64 tensor the backbones take."""
    return torch.as_tensor(np.asarray(labels, dtype=np.int64), device=device)


def _part(labels: torch.Tensor | None, part: slice) -> torch.Tensor | None:
    return None if labels is None else labels[part]


def _prepare(backbone: Backbone, images: np.ndarray, fit: str, channels_last: bool = False) -> tuple[torch.Tensor, dict]:
    x, how = fit_images(
        images, size=backbone.input_size, channels=backbone.input_channels, value_range=backbone.value_range, fit=fit
    )
    x = x.to(backbone.device)
    if channels_last and x.dim() == 4:
        x = x.contiguous(memory_format=torch.channels_last)
    return x, how


def _features_halving_on_oom(
    backbone: Backbone, x0: torch.Tensor, ids: np.ndarray, plan: ExtractPlan, config: ExtractConfig, seed: int, bar: tqdm,
    view: int = 0, labels: torch.Tensor | None = None,
) -> dict[str, np.ndarray]:
    """Features of one batch; on out-of-memory the batch is split in halves (recursively) and retried.

    Noise is keyed per sample, so the halves give the same features as the whole batch would.
    """
    counted = 0

    def on_forward(n: int) -> None:
        nonlocal counted
        counted += n
        bar.update(n)

    try:
        return _batch_features(backbone, x0, ids, plan, config.draws, seed, on_forward, config.precision, view, labels)
    except torch.OutOfMemoryError:
        bar.update(-counted)
        if x0.device.type == "cuda":
            torch.cuda.empty_cache()
        if len(ids) == 1:
            raise ProbekitError(
                "out of memory even at batch size 1: select fewer --layers, use --precision bf16, or a larger device"
            ) from None
        half = (len(ids) + 1) // 2
        log.warning("out of memory at batch size %d: retrying in halves of %d", len(ids), half)
        parts = [
            _features_halving_on_oom(backbone, x0[:half], ids[:half], plan, config, seed, bar, view, _part(labels, slice(None, half))),
            _features_halving_on_oom(backbone, x0[half:], ids[half:], plan, config, seed, bar, view, _part(labels, slice(half, None))),
        ]
        return {name: np.concatenate([part[name] for part in parts], axis=2) for name in parts[0]}


def extract(
    backbone: Backbone,
    dataset: ImageDataset,
    out: str | Path,
    config: ExtractConfig = ExtractConfig(),
    *,
    command: str = "",
    overwrite: bool = False,
    progress: bool = True,
) -> Path:
    """Extract features of every requested layer at every grid point for ``dataset`` into ``out``.

    Returns the path of the finished cache. The file carries ``complete=True`` only when every
    sample was written; an interrupted run (Ctrl-C, SIGTERM, ``kill -9``) leaves ``complete=False``
    behind, and calling ``extract`` again with the same arguments continues it: samples already
    written are skipped and the finished file equals an uninterrupted run's. ``overwrite`` starts
    over instead; an existing *complete* cache is only replaced with ``overwrite``.
    """
    out = Path(out)
    plan = plan_extraction(backbone, config)
    # Resolved once; the cache records the precision actually used (never "auto").
    config = replace(config, precision=resolve_precision(config.precision, backbone.device))
    log.info("precision: %s", config.precision)
    dataset, resized = sized_dataset(dataset, config.image_size, backbone.image_size)
    if resized is not None:
        log.info("images decoded at %dx%d: %s, %s crop", resized["size"], resized["size"], resized["resize"], resized["crop"])
    splits = {name: dataset.splits[name] for name in config.splits if name in dataset.splits}
    for name, split in splits.items():
        if len(split.labels) == 0:
            raise ProbekitError(f"the {name} split of {dataset.name} is empty: check the data path or the --*-limit options")
    if out.is_dir():
        raise ProbekitError(f"--out {out} is a folder: give the path of an .h5 file to write")
    if not out.parent.exists():
        raise ProbekitError(f"output folder {out.parent} does not exist: create it or choose another --out")
    # One writer per file: a second extraction into the same --out refuses here, before any work.
    with exclusive_output(out) as lock_fd:
        return _extract_locked(backbone, dataset, out, config, plan, splits, resized, lock_fd,
                               command=command, overwrite=overwrite, progress=progress)


def _extract_locked(
    backbone: Backbone, dataset: ImageDataset, out: Path, config: ExtractConfig, plan: ExtractPlan,
    splits: dict, resized: dict | None, lock_fd: int, *, command: str, overwrite: bool, progress: bool,
) -> Path:
    """:func:`extract` once the output's lock is held."""

    # One forward of one real sample gives the pooled widths and the record of how images were fitted.
    first = next(iter(splits.values()))
    applied = backbone.speed_up(channels_last=config.channels_last, compile=config.compile)
    if applied:
        log.info("speed-ups: %s", ", ".join(applied))
    x_probe, fit_record = _prepare(backbone, first.read(slice(0, 1)), config.fit, config.channels_last)
    if resized is not None:
        fit_record["resize"] = resized  # in the resume plan: another size is other work
    widths, flops_per_image = _probe_forward(backbone, x_probe, plan, config.precision, _labels(first.labels[:1], backbone.device))
    layer_infos = [layer for layer in backbone.layers() if layer.name in plan.layers]

    layout = CacheLayout(
        attrs={
            "command": command,
            "model_id": backbone.model_id,
            "model_sha256": backbone.weights_sha256(),
            "framework": backbone.framework,
            "schedule": backbone.schedule.describe(),
            "dataset": dataset.name,
            "dataset_source": dataset.source,
            "dataset_info": dataset.info,
            "fit": fit_record,
            "seed": config.seed,
            "pooling": plan.pooling.name,
            "precision": config.precision,
            "value_range": list(backbone.value_range),
            **({"flops_per_image": flops_per_image} if flops_per_image is not None else {}),
            **backbone.cache_attrs(),
        },
        grid=plan.grid,
        layers=layer_infos,
        widths=widths,
        splits={name: SplitLabels(split.labels, split.index) for name, split in splits.items()},
        class_names=list(dataset.class_names),
        draws=config.draws,
        dtype=config.dtype,
        views=config.views if "train" in splits else 0,
    )
    total = sum(len(split.labels) * layout.slots(name) for name, split in splits.items()) * len(plan.grid)
    log.info(
        "extracting %d layers x %d grid points x %d draws%s for %s -> %s",
        len(plan.layers), len(plan.grid), config.draws,
        f" x (1 + {layout.views} augmented train views)" if layout.views else "",
        ", ".join(f"{k}={len(v.labels)}" for k, v in splits.items()), out,
    )
    if flops_per_image:
        log.info(
            "work: %d image x grid-point forwards x %.3g GFLOP = %.3g TFLOP",
            total, flops_per_image / 1e9, total * flops_per_image / 1e12,
        )
    writer = CacheWriter(out, layout, resume=not overwrite, lock_fd=lock_fd)
    done = {name: writer.done(name) for name in splits}
    already = sum(int(flags.sum()) for flags in done.values())
    if already:
        log.info("resuming %s: %d of %d samples already written", out, already, sum(len(f) for f in done.values()))
    complete, computed = False, 0  # computed: image x grid point x draw forwards run by this call
    end_attrs: dict[str, float] = {}
    started = time.perf_counter()
    try:
        with tqdm(total=total, unit="fwd", desc="extract", disable=not progress, smoothing=0.1) as bar:
            for split_name, split in splits.items():
                bar.set_postfix_str(split_name)
                seed = split_seed(config.seed, split_name)
                for start in range(0, len(split.labels), config.batch_size):
                    stop = min(start + config.batch_size, len(split.labels))
                    if done[split_name][start:stop].all():
                        bar.update((stop - start) * len(plan.grid) * layout.slots(split_name))
                        continue
                    ids = split.index[start:stop]
                    labels = _labels(split.labels[start:stop], backbone.device)
                    per_view = []
                    batch = split.read(slice(start, stop))  # lazy datasets decode just this batch
                    for view in range(layout.slots(split_name) // config.draws):
                        images = batch
                        if view > 0:
                            images = crop_flip_views(images, ids, seed=config.seed, split=split_name, view=view)
                        x0, _ = _prepare(backbone, images, config.fit, config.channels_last)
                        per_view.append(_features_halving_on_oom(backbone, x0, ids, plan, config, seed, bar, view, labels))
                    feats = per_view[0] if len(per_view) == 1 else {
                        name: np.concatenate([part[name] for part in per_view], axis=1) for name in per_view[0]
                    }
                    writer.write_batch(split_name, start, feats)
                    computed += (stop - start) * len(plan.grid) * layout.slots(split_name)
        complete = True
        elapsed = time.perf_counter() - started
        # A backbone with no floating-point work (pixels) has no rate worth logging.
        if flops_per_image and computed:
            end_attrs["achieved_flops"] = flops_per_image * computed / elapsed
            log.info(
                "forward: %.3g GFLOP per image and grid point; achieved %.3g GFLOP/s over %d forwards "
                "(wall time, including noise, hooks and writes)",
                flops_per_image / 1e9, end_attrs["achieved_flops"] / 1e9, computed,
            )
    finally:
        writer.close(complete=complete, attrs=end_attrs)
    log.info("wrote %s in %.1f s", out, time.perf_counter() - started)
    _warn_nonfinite(out)
    return out


def _warn_nonfinite(out: Path) -> None:
    """Warn about cells whose pooled features hold NaN or inf (counted while writing)."""
    with FeatureCache(out) as cache:
        bad = cache.nonfinite()
    if bad:
        cells = ", ".join(f"t={t} {layer} ({count})" for (t, layer), count in sorted(bad.items())[:6])
        more = f" and {len(bad) - 6} more" if len(bad) > 6 else ""
        log.warning(
            "non-finite features (NaN/inf values) in %d cells: %s%s; probing skips them. Check the model and "
            "--precision (float16 VAEs overflow); `probekit info %s` lists them all", len(bad), cells, more, out,
        )
