"""Backbone x dataset x noise grid -> pooled features -> FeatureCache.

For each batch of clean images and each (grid point, draw), one forward captures every requested
layer. Noise comes from :mod:`probekit.core.noise` keyed by (split seed, sample id, t, draw), so features
do not depend on the batch size or order.
Writes happen on a background thread while the next batch computes.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from probekit.core import interrupt
from probekit.core.errors import ConfigError, ProbekitError
from probekit.core.noise import sample_noise, split_seed
from probekit.core.pooling import Pooling
from probekit.core.precision import PRECISION_CHOICES, resolve_precision
from probekit.core.schedule import GridPoint
from probekit.core.types import LayerInfo
from probekit.core.verbosity import progress_enabled
from probekit.data import ImageDataset, fit_images
from probekit.data.base import sized_dataset
from probekit.features.budget import (
    _BATCHES_IN_FLIGHT,
    _fit_batch_size,
    _size,
    feature_budget,
    kind_budget,
    work_left,
)
from probekit.features.cache import (
    WRITE_BUFFER_BYTES,
    CacheLayout,
    CacheWriter,
    FeatureCache,
    SplitLabels,
    unfinished_precision,
)
from probekit.features.distributed import current_rank
from probekit.features.flops import _probe_forward, autocast_for
from probekit.features.host_pipeline import Converter, auto_workers, host_batches
from probekit.features.latents import encode_or_read, store_for, view_name
from probekit.features.output_lock import exclusive_output
from probekit.models.backbone import Backbone
from probekit.models.fingerprint import describe_model, fingerprint
from probekit.models.layers import select_layers, wants_kinds

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
    #: storage type of the features; None: float16 for spatial pooling (spatialS), else float32
    dtype: str | None = None
    fit: str = "auto"
    #: decode every image at this square side (shorter side resized, centre crop); None: only
    #: datasets of mixed image sizes are, at the model's input side (probekit.data.resize)
    image_size: int | None = None
    #: splits extracted when the dataset has them ("val": a dataset's own validation split)
    splits: Sequence[str] = field(default=("train", "val", "test"))
    #: auto (bf16 only where the device runs it natively and faster, see probekit.core.precision), fp32,
    #: or bf16 / fp16 autocast around each forward; pooling stays float32 and so do the stored features
    precision: str = "auto"
    channels_last: bool = False
    compile: bool = False
    #: processes that decode, resize, augment and convert batches beside the forward
    #: (probekit.features.host_pipeline); None: auto_workers (0 for in-memory data at its size)
    workers: int | None = None
    #: folder of stored VAE latents (probekit.features.latents); None: ``latents/`` beside the output file
    latent_cache: str | None = None
    #: keep and reuse VAE latents (latent models only)
    store_latents: bool = True
    #: bytes of activations the VAE encoder may hold per call; None: probekit.models.vae.default_budget
    vae_memory: int | None = None
    #: bytes the features of the batches in flight may take (the batch computing plus the writes
    #: queued behind it); the batch size is lowered to fit. None: no limit
    max_memory: int | None = None


@dataclass
class ExtractPlan:
    """The resolved grid and layers (what ``extract`` will actually run)."""

    grid: list[GridPoint]
    layers: list[str]
    pooling: Pooling
    #: the records of ``layers`` (block outputs and activation kinds), in the order of ``layers``
    infos: list[LayerInfo] = field(default_factory=list)


def plan_extraction(backbone: Backbone, config: ExtractConfig) -> ExtractPlan:
    """Validate and resolve the config against the backbone; raises ProbekitError on bad input."""
    if config.draws < 1:
        raise ConfigError("draws", f"{{field}} must be at least 1, got {config.draws}")
    if config.views < 0:
        raise ConfigError("views", f"{{field}} must be 0 (clean images only) or more, got {config.views}")
    if config.batch_size < 1:
        raise ConfigError("batch_size", f"{{field}} must be at least 1, got {config.batch_size}")
    if config.workers is not None and config.workers < 0:
        # named as the flag: host_batches (a function, not a config) gives this same message for its argument
        raise ProbekitError(f"--workers must be 0 (decode in the main process) or more, got {config.workers}")
    if config.precision not in PRECISION_CHOICES:
        raise ConfigError("precision", f"unknown {{field}} {config.precision!r}: use {', '.join(PRECISION_CHOICES)}")
    timesteps = list(config.timesteps) if config.timesteps is not None else backbone.schedule.default_grid()
    if not timesteps:
        raise ConfigError("timesteps", "empty timestep list: give {field} t1,t2,... (or none, for the default grid)")
    if len(set(timesteps)) != len(timesteps):
        raise ProbekitError(f"repeated timesteps in {timesteps}: list each once")
    grid = sorted(backbone.schedule.points(timesteps), key=lambda point: point.t)
    if config.compile and wants_kinds(config.layers):
        # compiled layers inline their sub-modules, whose hooks the kinds live on
        raise ProbekitError("--compile does not combine with activation kinds (HOST:KIND): drop one of them")
    available = backbone.layers() + (backbone.kind_layers() if wants_kinds(config.layers) else [])
    layers = select_layers(available, config.layers)
    by_name = {layer.name: layer for layer in available}
    return ExtractPlan(
        grid=grid, layers=layers, pooling=Pooling.parse(config.pooling), infos=[by_name[name] for name in layers]
    )


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
    encoded: bool = False,
) -> dict[str, np.ndarray]:
    """{layer: (T, K, B, D)} for one batch of clean inputs ``x0`` (already on the device).

    ``seed`` is the split's noise seed (:func:`probekit.core.noise.split_seed`). The batch is encoded
    once (:meth:`Backbone.encode`; not when ``encoded``: ``x0`` is then the encoding already) and
    the encoding is noised at every grid point. ``labels`` (B,) go to every forward
    (label-conditioned backbones read them, the others ignore them).
    """
    if not encoded:
        x0 = backbone.encode(x0)
    per_layer: dict[str, list[torch.Tensor]] = {name: [] for name in plan.layers}
    for point in plan.grid:
        for draw in range(draws):
            if point.alpha_bar >= 1.0:
                x_noisy = x0
            else:
                noise = sample_noise(
                    x0.shape[1:], ids, seed=seed, t=point.t, draw=noise_draw(view, draw), device=x0.device
                )
                x_noisy = backbone.schedule.add_noise(x0, noise, point)
            with autocast_for(x0.device, precision):
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
    as DDAE draws for each augmented image).
    """
    return draw if view == 0 else (view << 32) | draw


def _as_pair(size: int | tuple[int, int] | None) -> tuple[int, int] | None:
    if size is None:
        return None
    return (int(size), int(size)) if isinstance(size, int) else (int(size[0]), int(size[1]))


def _labels(labels: np.ndarray, device: torch.device) -> torch.Tensor:
    """Class ids as the (B,) int64 tensor the backbones take."""
    return torch.as_tensor(np.asarray(labels, dtype=np.int64), device=device)


def _part(labels: torch.Tensor | None, part: slice) -> torch.Tensor | None:
    return None if labels is None else labels[part]


def _prepare(
    backbone: Backbone, images: np.ndarray, fit: str, channels_last: bool = False
) -> tuple[torch.Tensor, dict]:
    x, how = fit_images(
        images, size=backbone.input_size, channels=backbone.input_channels, value_range=backbone.value_range, fit=fit
    )
    x = x.to(backbone.device)
    if channels_last and x.dim() == 4:
        x = x.contiguous(memory_format=torch.channels_last)
    return x, how


def _features_halving_on_oom(
    backbone: Backbone,
    x0: torch.Tensor,
    ids: np.ndarray,
    plan: ExtractPlan,
    config: ExtractConfig,
    seed: int,
    bar: tqdm,
    view: int = 0,
    labels: torch.Tensor | None = None,
    encoded: bool = False,
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
        return _batch_features(
            backbone, x0, ids, plan, config.draws, seed, on_forward, config.precision, view, labels, encoded
        )
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
            _features_halving_on_oom(
                backbone,
                x0[:half],
                ids[:half],
                plan,
                config,
                seed,
                bar,
                view,
                _part(labels, slice(None, half)),
                encoded,
            ),
            _features_halving_on_oom(
                backbone,
                x0[half:],
                ids[half:],
                plan,
                config,
                seed,
                bar,
                view,
                _part(labels, slice(half, None)),
                encoded,
            ),
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
    write_buffer: int = WRITE_BUFFER_BYTES,
) -> Path:
    """Extract features of every requested layer at every grid point for ``dataset`` into ``out``.

    Returns the path of the finished cache. The file carries ``complete=True`` only when every
    sample was written; an interrupted run (Ctrl-C, SIGTERM, ``kill -9``) leaves ``complete=False``
    behind, and calling ``extract`` again with the same arguments continues it: samples already
    written are skipped and the finished file equals an uninterrupted run's. ``overwrite`` starts
    over instead; an existing *complete* cache is only replaced with ``overwrite``.
    ``write_buffer`` (bytes) bounds the samples held back until they fill whole chunks
    (:func:`probekit.features.cache.chunk_rows`): a larger buffer, larger chunks, fewer flushes.
    """
    out = Path(out)
    plan = plan_extraction(backbone, config)
    # Resolved once; the cache records the precision actually used (never "auto"). A resume of an
    # auto run adopts the unfinished cache's precision rather than deciding again (on another machine
    # auto may resolve otherwise, and the resume would be refused).
    recorded = None if overwrite or config.precision != "auto" else unfinished_precision(out)
    config = replace(config, precision=recorded or resolve_precision(config.precision, backbone.device))
    log.info("precision: %s%s", config.precision, f" (auto: as recorded by the unfinished {out})" if recorded else "")
    dataset, resized = sized_dataset(dataset, config.image_size, backbone.image_size)
    if resized is not None:
        log.info(
            "images decoded at %dx%d: %s, %s crop", resized["size"], resized["size"], resized["resize"], resized["crop"]
        )
    splits = {name: dataset.splits[name] for name in config.splits if name in dataset.splits}
    for name, split in splits.items():
        if len(split.labels) == 0:
            raise ProbekitError(
                f"the {name} split of {dataset.name} is empty: check the data path or the --*-limit options"
            )
    if out.is_dir():
        raise ProbekitError(f"--out {out} is a folder: give the path of an .h5 file to write")
    if not out.parent.exists():
        raise ProbekitError(f"output folder {out.parent} does not exist: create it or choose another --out")
    # One writer per file: a second extraction into the same --out refuses here, before any work.
    with exclusive_output(out) as lock_fd:
        return _extract_locked(
            backbone,
            dataset,
            out,
            config,
            plan,
            splits,
            resized,
            lock_fd,
            command=command,
            overwrite=overwrite,
            progress=progress,
            write_buffer=write_buffer,
        )


def _extract_locked(
    backbone: Backbone,
    dataset: ImageDataset,
    out: Path,
    config: ExtractConfig,
    plan: ExtractPlan,
    splits: dict,
    resized: dict | None,
    lock_fd: int,
    *,
    command: str,
    overwrite: bool,
    progress: bool,
    write_buffer: int,
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
    counted_at = time.perf_counter()
    probe = _probe_forward(backbone, x_probe, plan, config.precision, _labels(first.labels[:1], backbone.device))
    widths, flops_per_image, encode_flops = probe.widths, probe.forward_flops, probe.encode_flops
    log.info("start-up: FLOPs counted in %.2f s", time.perf_counter() - counted_at)
    layer_infos = plan.infos
    dtype = config.dtype or ("float16" if plan.pooling.spatial else "float32")

    hashed_at = time.perf_counter()
    model_sha256 = backbone.weights_sha256()
    description = json.loads(json.dumps(describe_model(backbone), default=str))  # as stored and read back
    log.info(
        "start-up: weights identified in %.2f s%s",
        time.perf_counter() - hashed_at,
        "" if backbone.weights_key else " (not remembered: the weights are not all local files)",
    )
    if config.vae_memory is not None:
        if config.vae_memory < 1:
            raise ConfigError(
                "vae_memory", f"{{field}} must be a positive budget, got {config.vae_memory / 2**30:g} GiB"
            )
        backbone.vae_budget = config.vae_memory
    layout = CacheLayout(
        attrs={
            "command": command,
            "model_id": backbone.model_id,
            "model_sha256": model_sha256,
            # the weights and every config that shapes the features (probekit.models.fingerprint)
            "model_fingerprint": fingerprint(description),
            "model_config": json.dumps(description, sort_keys=True),
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
            **({"encode_flops_per_image": encode_flops} if encode_flops else {}),
            **backbone.cache_attrs(),
        },
        grid=plan.grid,
        layers=layer_infos,
        widths=widths,
        splits={name: SplitLabels(split.labels, split.index) for name, split in splits.items()},
        class_names=list(dataset.class_names),
        draws=config.draws,
        dtype=dtype,
        views=config.views if "train" in splits else 0,
        spatial_side=plan.pooling.k if plan.pooling.spatial else 0,
    )
    slots = {name: layout.slots(name) for name in splits}
    disk, batch_bytes = feature_budget(
        widths,
        len(plan.grid),
        slots,
        {n: len(s.labels) for n, s in splits.items()},
        dtype,
        config.draws,
        config.batch_size,
    )
    per_image = batch_bytes // config.batch_size
    batch_size = _fit_batch_size(per_image, config.batch_size, config.max_memory)
    if batch_size < config.batch_size:
        log.info(
            "batch size %d -> %d to keep the features in flight within --max-memory", config.batch_size, batch_size
        )
        config = replace(config, batch_size=batch_size)
    log.info(
        "budget: %s of %s features on disk; %s of float32 features per batch of %d in memory, up to %d batches in "
        "flight",
        _size(disk),
        dtype,
        _size(per_image * batch_size),
        batch_size,
        _BATCHES_IN_FLIGHT,
    )
    if any(":" in name for name in widths):  # activation kinds: what each kind adds to the file
        log.info("budget per kind: %s", kind_budget(widths, disk))
    total = sum(len(split.labels) * layout.slots(name) for name, split in splits.items()) * len(plan.grid)
    workers = auto_workers(list(splits.values())) if config.workers is None else config.workers
    convert = Converter(
        _as_pair(backbone.input_size),
        backbone.input_channels,
        tuple(backbone.value_range),
        config.fit,
        config.channels_last,
    )
    log.info("host pipeline: %s", f"{workers} worker processes" if workers else "in the main process (--workers 0)")
    log.info(
        "extracting %d layers x %d grid points x %d draws%s for %s -> %s",
        len(plan.layers),
        len(plan.grid),
        config.draws,
        f" x (1 + {layout.views} augmented train views)" if layout.views else "",
        ", ".join(f"{k}={len(v.labels)}" for k, v in splits.items()),
        out,
    )
    store = store_for(
        backbone,
        out,
        fit_record,
        dataset,
        latent_cache=config.latent_cache,
        store_latents=config.store_latents,
        channels_last=config.channels_last,
    )
    try:
        writer = CacheWriter(out, layout, resume=not overwrite, buffer_bytes=write_buffer, lock_fd=lock_fd)
    except BaseException:
        if store is not None:
            store.close()
        raise
    done = {name: writer.done(name) for name in splits}
    already = sum(int(flags.sum()) for flags in done.values())
    if already:
        log.info("resuming %s: %d of %d samples already written", out, already, sum(len(f) for f in done.values()))
    complete, computed = False, 0  # computed: image x grid point x draw forwards run by this call
    encoded = 0  # image views the encoder ran on in this call
    end_attrs: dict[str, float] = {}
    started = time.perf_counter()
    try:
        if flops_per_image:
            forwards, encodes = work_left(
                splits, done, layout, len(plan.grid), config.batch_size, config.draws, config.seed, store
            )
            encoder = f" + {encodes} image-view encodes x {encode_flops / 1e9:.3g} GFLOP" if encode_flops else ""
            log.info(
                "work: %d image x grid-point forwards x %.3g GFLOP%s = %.3g TFLOP%s",
                forwards,
                flops_per_image / 1e9,
                encoder,
                (forwards * flops_per_image + encodes * (encode_flops or 0)) / 1e12,
                f" (of {total} forwards: the rest are on disk)" if forwards < total else "",
            )
        with tqdm(
            total=total, unit="fwd", desc="extract", disable=not progress_enabled(progress), smoothing=0.1
        ) as bar:
            for split_name, split in splits.items():
                bar.set_postfix_str(split_name)
                seed = split_seed(config.seed, split_name)
                pending = []
                for start in range(0, len(split.labels), config.batch_size):
                    stop = min(start + config.batch_size, len(split.labels))
                    if done[split_name][start:stop].all():
                        bar.update((stop - start) * len(plan.grid) * layout.slots(split_name))
                    else:
                        pending.append((start, stop))
                batches = host_batches(
                    split,
                    pending,
                    layout.slots(split_name) // config.draws,
                    seed=config.seed,
                    split_name=split_name,
                    convert=convert,
                    device=backbone.device,
                    workers=workers,
                )
                for batch, views in batches:
                    interrupt.check()  # a stop request swallowed since the last batch stops here
                    start, stop, ids = batch.start, batch.stop, batch.ids
                    labels = _labels(batch.labels, backbone.device)
                    per_view = []
                    for view, x0 in enumerate(views):
                        latent, fresh = encode_or_read(
                            backbone, x0, store, split_name, view_name(view, config.seed), ids
                        )
                        encoded += fresh
                        per_view.append(
                            _features_halving_on_oom(backbone, latent, ids, plan, config, seed, bar, view, labels, True)
                        )
                    feats = (
                        per_view[0]
                        if len(per_view) == 1
                        else {name: np.concatenate([part[name] for part in per_view], axis=1) for name in per_view[0]}
                    )
                    writer.write_batch(split_name, start, feats)
                    computed += (stop - start) * len(plan.grid) * layout.slots(split_name)
        complete = True
        elapsed = time.perf_counter() - started
        # A backbone with no floating-point work (pixels) has no rate worth logging.
        if store is not None:
            log.info(
                "latents: encoder ran on %d image views, skipped for %d found in %s", encoded, store.hits, store.path
            )
        if flops_per_image and computed:
            work = flops_per_image * computed + (encode_flops or 0) * encoded
            end_attrs["achieved_flops"] = work / elapsed
            log.info(
                "forward: %.3g GFLOP per image and grid point%s; achieved %.3g GFLOP/s over %d forwards%s "
                "(wall time, including decoding, noise, hooks and writes)",
                flops_per_image / 1e9,
                f", encoder {encode_flops / 1e9:.3g} GFLOP per image view" if encode_flops else "",
                end_attrs["achieved_flops"] / 1e9,
                computed,
                f" and {encoded} encodes" if encode_flops else "",
            )
    finally:
        writer.close(complete=complete, attrs=end_attrs)
        if store is not None:
            store.close()
    log.info("wrote %s in %.1f s", out, time.perf_counter() - started)
    _warn_nonfinite(out)
    if current_rank() is None:  # a shard's master is read whole later: its cells are found on demand
        _record_massive(out)
    return out


def _record_massive(out: Path) -> None:
    """Find and record the cells' massive channels (:mod:`probekit.features.massive`), and say where there are any."""
    from probekit.features.massive import RATIO, record

    found = {cell: channels for cell, channels in record(out).items() if len(channels)}
    if found:
        shown = ", ".join(f"t={t} {layer} ({len(c)})" for (t, layer), c in sorted(found.items())[:4])
        log.info(
            "massive channels (mean |x| > %g x the median channel's) in %d cells: %s%s; `probekit info` lists them, "
            "`probekit probe --drop-massive` drops them",
            RATIO,
            len(found),
            shown,
            f" and {len(found) - 4} more" if len(found) > 4 else "",
        )


def _warn_nonfinite(out: Path) -> None:
    """Warn about cells whose pooled features hold NaN or inf (counted while writing)."""
    with FeatureCache(out) as cache:
        bad = cache.nonfinite()
    if bad:
        cells = ", ".join(f"t={t} {layer} ({count})" for (t, layer), count in sorted(bad.items())[:6])
        more = f" and {len(bad) - 6} more" if len(bad) > 6 else ""
        log.warning(
            "non-finite features (NaN/inf values) in %d cells: %s%s; probing skips them. Check the model and "
            "--precision (float16 VAEs overflow); `probekit info %s` lists them all",
            len(bad),
            cells,
            more,
            out,
        )
