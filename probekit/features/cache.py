"""FeatureCache: the one on-disk format between extraction and probing (HDF5).

Layout (format ``probekit-features``, version 1; version 2 adds the spatial layout below)::

    /                       attrs: format, format_version, probekit_version, created, command,
                                   model_id, model_sha256, framework, schedule, dataset, dataset_info,
                                   fit, seed, pooling, draws, dtype, complete
                                   (+ prompt: the prompt template of sd: models)
    /grid/{t, model_input, alpha_bar, sigma, logsnr}          (T,)
    /layers/{name, stage, depth, channels, resolution, aliases, width}   (L,)
    /{split}/labels (N,) int64, /{split}/index (N,) int64     attrs: class_names
    /{split}/feats/{layer}  (T, S, N, D) float32|float16, chunked along N
    /{split}/done           (N,) uint8: 1 once every (t, draw, layer) of that sample is written
    /{split}/nonfinite      (T, L, N) uint32: NaN / inf values among a sample's pooled features
                            at (t, layer), over all its slots (absent in caches written before it)

``S`` is the number of (view, draw) slots of a split: slot ``view * draws + draw``. View 0 is the
un-augmented image; the train split of a cache extracted with ``--views A`` (attr ``views``)
also holds A augmented views (views 1..A), so S = (1 + A) * draws there and S = draws elsewhere.

``complete`` is set only after every sample of every split is done; readers refuse an incomplete
cache unless asked to show progress. ``D`` is the pooled width (``width`` in /layers).

A *master* file (multi-process extraction, :func:`write_master`) has the same layout, but its
datasets are virtual views of per-rank shard caches stored beside it; its ``shards`` attribute
lists their file names. A master whose shard is missing is refused when opened (HDF5 would read
the absent rows as zeros), and one whose shard is unfinished is not complete.

Version 2 (written only by spatial caches, ``--pooling spatialS``; every other cache is still
written as version 1, so older readers keep reading them): the root attribute ``spatial_side``
= S, and every ``/{split}/feats/{layer}`` holds the layer's (C, S, S) average-pooled grid,
flattened channel-major (index ``c * S * S + row * S + col``, row 0 at the image top), so
D = C * S * S; stored as float16 unless asked otherwise. Each chunk holds samples of one
(t, slot) of one layer, so a cell reads contiguously. Readers accept versions 1 and 2; a version 1
cache has ``spatial_side`` 0 (no grid).
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import resource
import shutil
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import h5py
import numpy as np

from probekit._version import __version__
from probekit.core.errors import ProbekitError, first_line
from probekit.core.fields import changed_fields
from probekit.core.types import GridPoint, LayerInfo
from probekit.features.output_lock import created_by_lock, is_lock_placeholder, lock_replaced_output

FORMAT = "probekit-features"
#: Fletcher-32 checksums on feature datasets (h5py ``fletcher32``); a switch for the benchmark that
#: measures their cost (experiments/bench_checksum.py), always on otherwise
FEATURE_CHECKSUM = True
FORMAT_VERSION = 2
#: the version of caches without a spatial grid (unchanged since version 1)
_PLAIN_VERSION = 1
_GRID_FIELDS = ("t", "model_input", "alpha_bar", "sigma", "logsnr")
_STR = h5py.string_dtype()
#: per-split dataset counting NaN / inf pooled feature values per (t, layer, sample)
NONFINITE = "nonfinite"


@dataclass
class SplitLabels:
    labels: np.ndarray  # int64 (N,)
    index: np.ndarray  # int64 (N,) sample ids in the original split


@dataclass
class CacheLayout:
    """Everything needed to create an empty cache."""

    attrs: dict[str, object]
    grid: list[GridPoint]
    layers: list[LayerInfo]
    widths: dict[str, int]
    splits: dict[str, SplitLabels]
    class_names: list[str]
    draws: int
    dtype: str = "float32"
    views: int = 0  # augmented views of the train split (view 0, the clean image, is always there)
    spatial_side: int = 0  # S of a spatial cache (features are (C, S, S) grids); 0 for pooled vectors

    def slots(self, split: str) -> int:
        """(view, draw) slots stored per sample of ``split``."""
        return self.draws * (1 + self.views if split == "train" else 1)


#: Target size of one feature chunk: large enough for fast sequential reads of a cell, small
#: enough that a block of whole chunks of every layer fits the write buffer.
CHUNK_BYTES = 1 << 20
#: Default memory for samples waiting to fill whole chunks (``probekit extract --write-buffer``).
WRITE_BUFFER_BYTES = 256 << 20


def chunk_rows(layout: CacheLayout, split: str, buffer_bytes: int = WRITE_BUFFER_BYTES) -> int:
    """Samples per feature chunk of ``split``: one number for every layer of the split.

    Chunks are (1, 1, rows, D): probing reads one (t, slot) of every sample of one layer, so a
    chunk holds consecutive samples of one (t, slot). Extraction writes every (t, slot, layer) of
    a batch of samples; the writer buffers samples until they fill ``rows`` (whole chunks of
    every layer) and writes each chunk once. ``rows`` keeps the widest layer's chunk at most
    :data:`CHUNK_BYTES` and two buffered blocks (one filling, one a batch may spill into) within
    ``buffer_bytes``, counted as float32 (features arrive as float32 and are converted by HDF5),
    and is then evened out so that the split's blocks have (nearly) equal sizes.
    """
    n = len(layout.splits[split].labels)
    widths = [layout.widths[layer.name] for layer in layout.layers]
    itemsize = np.dtype(layout.dtype).itemsize
    per_sample = len(layout.grid) * layout.slots(split) * sum(widths) * 4
    rows = max(1, min(n, CHUNK_BYTES // (itemsize * max(widths)), buffer_bytes // (2 * per_sample)))
    # Blocks of equal size: the last chunk of a split is allocated whole, so a short last block
    # would leave up to a block of allocated, never-written bytes in the file.
    blocks = -(-n // rows)
    return -(-n // blocks)


@dataclass
class _Block:
    """Samples ``start .. stop`` of a split (the rows of one chunk of every layer) being filled."""

    start: int
    stop: int
    feats: dict[str, np.ndarray]  # layer -> (T, S, stop - start, D) float32
    filled: np.ndarray  # (stop - start,) bool: rows received by this run
    on_disk: np.ndarray  # (stop - start,) bool: rows already done when the file was opened

    @property
    def complete(self) -> bool:
        return bool((self.filled | self.on_disk).all())


class CacheWriter:
    """Creates the file and writes features on a background thread while the next batch computes.

    Writes are whole chunks: batches are copied into a buffer of ``rows`` samples (one chunk of
    every (t, slot, layer), :func:`chunk_rows`), and a block is written once, when all its samples
    have arrived, followed by its done flags. Each feature byte is then written once (the cache's
    chunks are never rewritten half-filled), and the file is flushed once per block, not per batch.
    A process killed at any instant loses at most the buffered samples, which have no done flags.

    At most ``max_pending`` batches wait in memory besides the buffer; an error in the writer
    thread surfaces on the next :meth:`write_batch` or on :meth:`close`.
    """

    def __init__(
        self,
        path: str | Path,
        layout: CacheLayout,
        *,
        resume: bool = False,
        max_pending: int = 2,
        buffer_bytes: int = WRITE_BUFFER_BYTES,
        lock_fd: int | None = None,
    ) -> None:
        """``lock_fd``: a descriptor of ``path`` whose holder keeps other writers out
        (:func:`probekit.features.output_lock.exclusive_output`); HDF5's own lock is then left off.
        """
        self.path = Path(path)
        self.layout = layout
        self.buffer_bytes = buffer_bytes
        if layout.dtype not in ("float32", "float16"):
            raise ProbekitError(f"unsupported --dtype {layout.dtype!r}: use float32 or float16")
        locking = lock_fd is None
        _require_size_limit(self.path, layout)
        # The lock's placeholder holds no features to resume, also one left behind by a process
        # killed during start-up, before its cache was renamed into place.
        placeholder = is_lock_placeholder(self.path)
        if (
            resume
            and self.path.exists()
            and not placeholder
            and not (lock_fd is not None and created_by_lock(self.path))
        ):
            self.file = _open_for_resume(self.path, layout, locking=locking)
        else:
            # Created under a temporary name and renamed once its layout is on disk: a process
            # killed while creating leaves no file at --out that a resume would choke on.
            creating = self.path.with_name(self.path.name + ".creating")
            try:
                self.file = h5py.File(creating, "w", locking=locking)
            except (OSError, RuntimeError) as err:
                raise _write_error(self.path, layout, err, action="create") from err
            try:
                self._create(layout)
                # Everything but raw feature bytes and done flags is now on disk; later writes touch no metadata.
                self.file.flush()
                _reserve(creating, None)
                os.replace(creating, self.path)
                if lock_fd is not None:
                    lock_replaced_output(self.path)  # the lock follows the file now at --out
            except (OSError, RuntimeError) as err:
                _close_after_error(self.file)
                creating.unlink(missing_ok=True)  # a half-created file holds nothing to resume
                raise _write_error(self.path, layout, err, action="create") from err
        # Handles stay open while writing: HDF5 then reports a failed chunk write on our flush,
        # instead of on a handle's garbage collection, where the error would be lost.
        self._feats = {
            split: {name: self.file[split]["feats"][name] for name in self.file[split]["feats"]}
            for split in layout.splits
        }
        self._done = {split: self.file[split]["done"] for split in layout.splits}
        self._counts = {split: self.file[split].get(NONFINITE) for split in layout.splits}
        self._layer_index = {layer.name: i for i, layer in enumerate(layout.layers)}
        self._failed = False
        # A resumed file keeps the chunk rows it was created with, whatever the buffer now.
        self._rows = {split: self._feats[split][layout.layers[0].name].chunks[2] for split in layout.splits}
        self._on_disk = {split: self._done[split][:].astype(bool) for split in layout.splits}
        self._blocks: dict[tuple[str, int], _Block] = {}
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="probekit-writer")
        self._pending: list[Future] = []
        self._max_pending = max_pending

    def done(self, split: str) -> np.ndarray:
        """(N,) bool: samples of ``split`` whose every (t, draw, layer) is on disk (read at open/resume time)."""
        return self._on_disk[split].copy()

    def chunk_rows(self, split: str) -> int:
        """Samples per chunk (and per written block) of ``split`` in this file."""
        return self._rows[split]

    def _create(self, layout: CacheLayout) -> None:
        f = self.file
        attrs = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION if layout.spatial_side else _PLAIN_VERSION,
            **({"spatial_side": layout.spatial_side} if layout.spatial_side else {}),
            "probekit_version": __version__,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "draws": layout.draws,
            "views": layout.views,
            "dtype": layout.dtype,
            **layout.attrs,
            "plan": layout_plan(layout),
            "complete": False,
        }
        for key, value in attrs.items():
            f.attrs[key] = json.dumps(value) if isinstance(value, (dict, list)) else value
        grid = f.create_group("grid")
        for field in _GRID_FIELDS:
            values = [getattr(point, field) for point in layout.grid]
            grid.create_dataset(field, data=np.asarray(values, dtype=np.int64 if field == "t" else np.float64))
        group = f.create_group("layers")
        layers = layout.layers
        group.create_dataset("name", data=[layer.name for layer in layers], dtype=_STR)
        group.create_dataset("stage", data=[layer.stage for layer in layers], dtype=_STR)
        group.create_dataset("depth", data=np.asarray([layer.depth for layer in layers], dtype=np.int64))
        group.create_dataset("channels", data=np.asarray([layer.channels for layer in layers], dtype=np.int64))
        group.create_dataset("resolution", data=[layer.resolution for layer in layers], dtype=_STR)
        group.create_dataset("aliases", data=[",".join(layer.aliases) for layer in layers], dtype=_STR)
        group.create_dataset("width", data=np.asarray([layout.widths[layer.name] for layer in layers], dtype=np.int64))
        for split, split_labels in layout.splits.items():
            n = len(split_labels.labels)
            g = f.create_group(split)
            g.attrs["class_names"] = json.dumps(layout.class_names)
            g.create_dataset("labels", data=np.asarray(split_labels.labels, dtype=np.int64))
            g.create_dataset("index", data=np.asarray(split_labels.index, dtype=np.int64))
            g.create_dataset("done", shape=(n,), dtype=np.uint8, fillvalue=0, dcpl=_early_allocation(fill=True))
            g.create_dataset(
                NONFINITE,
                shape=(len(layout.grid), len(layers), n),
                dtype=np.uint32,
                fillvalue=0,
                dcpl=_early_allocation(fill=True),
            )
            feats = g.create_group("feats")
            rows = chunk_rows(layout, split, self.buffer_bytes)
            for layer in layers:
                width = layout.widths[layer.name]
                shape = (len(layout.grid), layout.slots(split), n, width)
                # One chunk holds a block of samples of one (t, slot): a cell reads contiguously,
                # and every layer's chunks end at the same sample, so a block of `rows` samples
                # fills whole chunks of every layer at once (see CacheWriter).
                # Fletcher-32 per chunk: a flipped byte on disk is a clear error when read, never a feature
                # (4 bytes per chunk; its cost is in docs/reference/cache-format.md).
                feats.create_dataset(
                    layer.name,
                    shape=shape,
                    dtype=layout.dtype,
                    chunks=(1, 1, rows, width),
                    fletcher32=FEATURE_CHECKSUM,
                    dcpl=_early_allocation(),
                )

    def write_batch(self, split: str, start: int, feats: Mapping[str, np.ndarray]) -> None:
        """Queue ``feats[layer]`` of shape (T, K, B, D) for samples ``start .. start+B``."""
        self._pending = [future for future in self._pending if not _finished(future)]
        while len(self._pending) >= self._max_pending:
            self._pending.pop(0).result()
        self._pending.append(self._executor.submit(self._write_or_explain, split, start, dict(feats)))

    def _write_or_explain(self, split: str, start: int, feats: Mapping[str, np.ndarray]) -> None:
        """:meth:`_write`, with an OS error (disk full, I/O error) turned into a one-line ProbekitError."""
        self._explaining(self._write, split, start, feats)

    def _write_open_blocks_or_explain(self) -> None:
        self._explaining(self._write_open_blocks)

    def _explaining(self, write: Callable[..., None], *args: object) -> None:
        try:
            write(*args)
        except (OSError, RuntimeError) as err:  # h5py reports some failed writes as RuntimeError
            self._failed = True
            raise _write_error(self.path, self.layout, err) from err

    def _write(self, split: str, start: int, feats: Mapping[str, np.ndarray]) -> None:
        """Copy a batch into the blocks it covers; write each block that it completes."""
        rows = self._rows[split]
        n = len(self._on_disk[split])
        stop = start + next(iter(feats.values())).shape[2]
        for index in range(start // rows, (stop - 1) // rows + 1):
            block = self._blocks.get((split, index)) or self._open_block(
                split, index * rows, min(n, (index + 1) * rows)
            )
            lo, hi = max(start, block.start), min(stop, block.stop)
            for layer, values in feats.items():
                block.feats[layer][:, :, lo - block.start : hi - block.start] = values[:, :, lo - start : hi - start]
            block.filled[lo - block.start : hi - block.start] = True
            if block.complete:
                self._write_block(split, block)
                del self._blocks[(split, index)]

    def _open_block(self, split: str, start: int, stop: int) -> _Block:
        layout = self.layout
        shape = (len(layout.grid), layout.slots(split), stop - start)
        block = _Block(
            start,
            stop,
            feats={
                layer.name: np.empty((*shape, layout.widths[layer.name]), dtype=np.float32) for layer in layout.layers
            },
            filled=np.zeros(stop - start, dtype=bool),
            on_disk=self._on_disk[split][start:stop].copy(),
        )
        self._blocks[(split, start // self._rows[split])] = block
        return block

    def _write_block(self, split: str, block: _Block) -> None:
        # Features reach the file before their done flags, each followed by a flush, so a process
        # killed at any instant leaves flags that only ever cover samples whose bytes are written.
        runs = _true_runs(block.filled)
        for layer, values in block.feats.items():
            dataset = self._feats[split][layer]
            for lo, hi in runs:
                dataset[:, :, block.start + lo : block.start + hi, :] = values[:, :, lo:hi]
        counts = self._counts[split]
        if counts is not None:
            # NaN / inf per (t, layer, sample), over slots and channels: on this writer thread, off the forward's path.
            for layer, values in block.feats.items():
                per_sample = np.count_nonzero(~np.isfinite(values), axis=(1, 3))
                for lo, hi in runs:
                    counts[:, self._layer_index[layer], block.start + lo : block.start + hi] = per_sample[:, lo:hi]
        self.file.flush()
        for lo, hi in runs:
            self._done[split][block.start + lo : block.start + hi] = 1
        self.file.flush()

    def _write_open_blocks(self) -> None:
        """Write what the unfinished blocks hold (an interrupted run keeps its work; partial chunks)."""
        for (split, _), block in sorted(self._blocks.items(), key=lambda item: (item[0][0], item[0][1])):
            if block.filled.any():
                self._write_block(split, block)
        self._blocks.clear()

    def close(self, *, complete: bool, attrs: Mapping[str, object] | None = None) -> None:
        """Wait for every queued write, write the buffered samples, mark the cache complete if
        asked, and close the file.

        ``attrs`` (numbers or strings known only at the end, e.g. the achieved FLOP/s) are written
        to the root together with the completion mark, and only with it.
        """
        try:
            try:
                for future in self._pending:
                    future.result()
            finally:
                # On the writer thread, after every queued batch; also when one of them failed, so
                # that what was computed is kept where it can be (done flags follow their bytes).
                failed_before = self._failed
                try:
                    self._executor.submit(self._write_open_blocks_or_explain).result()
                except ProbekitError:
                    if not failed_before:
                        raise
            if complete and self._failed:
                raise RuntimeError("a write failed: the cache cannot be marked complete")
            if complete:
                missing = {s: int((self.file[s]["done"][:] == 0).sum()) for s in self.layout.splits}
                if any(missing.values()):
                    raise RuntimeError(f"samples left unwritten: {missing}")
                for key, value in (attrs or {}).items():
                    self.file.attrs[key] = value
                self.file.attrs["complete"] = True
        except OSError as err:
            raise _write_error(self.path, self.layout, err) from err
        finally:
            self._executor.shutdown(wait=True)
            self._feats, self._done, self._counts = {}, {}, {}
            try:
                self.file.close()
            except (OSError, RuntimeError) as err:  # closing flushes, which fails the same way on a full disk
                if not self._failed:
                    raise _write_error(self.path, self.layout, err) from err


def _true_runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """[lo, hi) of each maximal run of True in a 1-D bool array."""
    edges = np.flatnonzero(np.diff(np.concatenate([[0], mask.astype(np.int8), [0]])))
    return list(zip(edges[::2].tolist(), edges[1::2].tolist()))


def layout_plan(layout: CacheLayout) -> dict[str, object]:
    """What makes two extractions the same work: resuming requires an identical plan."""
    splits = {}
    for name, split in layout.splits.items():
        digest = hashlib.sha256(np.asarray(split.labels, dtype=np.int64).tobytes())
        digest.update(np.asarray(split.index, dtype=np.int64).tobytes())
        splits[name] = {"n": int(len(split.labels)), "labels_and_index_sha256": digest.hexdigest()}
    keys = (
        "model_sha256",
        "model_fingerprint",
        "framework",
        "schedule",
        "dataset",
        "fit",
        "seed",
        "pooling",
        "precision",
        "value_range",
    )
    return {
        **{key: layout.attrs.get(key) for key in keys},
        "draws": layout.draws,
        **({"views": layout.views} if layout.views else {}),  # absent when 0: older caches still resume
        # a class-name prompt changes the features but not the weights; absent when empty (older caches resume)
        **({"prompt": layout.attrs["prompt"]} if layout.attrs.get("prompt") else {}),
        "dtype": layout.dtype,
        "grid": [point.t for point in layout.grid],
        "layers": {layer.name: layout.widths[layer.name] for layer in layout.layers},
        "splits": splits,
    }


def unfinished_precision(path: str | Path) -> str | None:
    """The precision recorded by the unfinished probekit cache at ``path``, or None (no such cache)."""
    try:
        with h5py.File(path, "r", locking=False) as file:
            if file.attrs.get("format") != FORMAT or bool(file.attrs.get("complete", False)):
                return None
            recorded = file.attrs.get("precision")
    except (OSError, RuntimeError):
        return None
    return str(recorded) if recorded else None


def _early_allocation(fill: bool = False) -> h5py.h5p.PropDCID:
    """Dataset creation properties that allocate all chunks at creation time.

    Chunk addresses are then fixed before the first feature is written, so later writes change
    raw bytes only and a killed process cannot leave the file's metadata half-updated. Feature
    chunks are not pre-filled (the done flags say which bytes are real); done flags are.
    """
    dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
    dcpl.set_alloc_time(h5py.h5d.ALLOC_TIME_EARLY)
    dcpl.set_fill_time(h5py.h5d.FILL_TIME_ALLOC if fill else h5py.h5d.FILL_TIME_NEVER)
    return dcpl


def _open_for_resume(path: Path, layout: CacheLayout, *, locking: bool = True) -> h5py.File:
    """Open an unfinished cache to continue it; refuse one that holds different work."""
    try:
        file = h5py.File(path, "r+", locking=locking)
    except (OSError, RuntimeError) as err:
        raise ProbekitError(
            f"{path} exists but cannot be opened to resume ({first_line(err)}): it is damaged or not an HDF5 file; "
            "pass --overwrite to start it over"
        ) from err
    try:
        if file.attrs.get("format") != FORMAT:
            raise ProbekitError(
                f"{path} exists and is not a probekit feature cache: choose another --out or pass --overwrite"
            )
        if bool(file.attrs.get("complete", False)):
            raise ProbekitError(
                f"{path} is already a complete cache: pass --overwrite to redo it or choose another --out"
            )
        stored = json.loads(file.attrs.get("plan", "{}"))
        wanted = json.loads(json.dumps(layout_plan(layout)))
        differing = [key for key in wanted if stored.get(key) != wanted[key]]
        if "model_fingerprint" in differing:
            # name the config fields that changed (a model's description is stored beside its fingerprint)
            before = json.loads(file.attrs.get("model_config", "{}"))
            after = json.loads(str(layout.attrs.get("model_config", "{}")))
            fields = changed_fields(before, after)
            if fields:
                named = ", ".join(fields[:6]) + (f" and {len(fields) - 6} more" if len(fields) > 6 else "")
                differing[differing.index("model_fingerprint")] = f"model ({named})"
        if differing:
            raise ProbekitError(
                f"{path} holds an unfinished extraction with a different {', '.join(differing)}: re-run its own "
                f"command (`probekit info {path}`), or pass --overwrite to start over"
            )
    except BaseException:
        file.close()
        raise
    return file


_DISK_FULL = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)}
_HDF5_ERRNO = re.compile(r"errno = (\d+)")


def _errno(err: BaseException) -> int | None:
    """The OS error number of an h5py error: its ``errno``, or the one HDF5 wrote into the message."""
    if isinstance(err, OSError) and err.errno:
        return err.errno
    found = _HDF5_ERRNO.search(str(err))
    return int(found.group(1)) if found else None


def _reserve(path: Path, fd: int | None) -> None:
    """Allocate the whole file's blocks now, so a full disk shows at creation, never mid-extraction.

    HDF5 leaves feature chunks as holes of a sparse file; without this a disk could fill up hours
    into a run. File systems that cannot reserve space (EOPNOTSUPP, EINVAL) are left as they are.
    """
    own = fd is None
    if own:
        fd = os.open(path, os.O_RDWR)
    try:
        size = os.fstat(fd).st_size
        if size:
            os.posix_fallocate(fd, 0, size)
    except OSError as err:
        if err.errno not in (errno.EOPNOTSUPP, errno.EINVAL, getattr(errno, "ENOTSUP", errno.EOPNOTSUPP)):
            raise
    finally:
        if own:
            os.close(fd)


def _require_size_limit(path: Path, layout: CacheLayout) -> None:
    """Refuse up front when the file-size limit (``ulimit -f``) is below the cache's size."""
    soft, _ = resource.getrlimit(resource.RLIMIT_FSIZE)
    if soft == resource.RLIM_INFINITY:
        return
    need = _feature_bytes(layout)
    if soft < need:
        raise ProbekitError(
            f"the file size limit (ulimit -f, {_size(soft)}) is below the {_size(need)} that {path} needs: "
            "raise the limit and run the same command again (an unfinished cache resumes), or extract fewer layers"
        )


def _feature_bytes(layout: CacheLayout) -> int:
    """Bytes of the pooled features alone (the file is slightly larger)."""
    width = sum(layout.widths[layer.name] for layer in layout.layers)
    slots = sum(layout.slots(name) * len(split.labels) for name, split in layout.splits.items())
    return len(layout.grid) * slots * width * np.dtype(layout.dtype).itemsize


def _discard(path: Path) -> None:
    """Delete a half-created cache (a lock held on it stays valid until released)."""
    path.unlink(missing_ok=True)


def _write_error(path: Path, layout: CacheLayout, err: BaseException, action: str = "write") -> ProbekitError:
    """One line for an OS error while creating or writing a cache: disk full (with sizes) or the reason."""
    number = _errno(err)
    if number in _DISK_FULL or "No space left on device" in str(err):
        need = _feature_bytes(layout)
        try:
            free = f", {_size(shutil.disk_usage(path.parent).free)} is free there"
        except OSError:
            free = ""
        if action == "create":
            return ProbekitError(
                f"disk full while creating {path}: its features need about {_size(need)}{free}; free some space "
                "and run the same command again, or choose another --out"
            )
        return ProbekitError(
            f"disk full while writing {path}: its features need about {_size(need)}{free}; free some space "
            f"and run the same command again to resume, or choose another --out"
        )
    if number == errno.EFBIG:
        return ProbekitError(
            f"file size limit reached while {'creating' if action == 'create' else 'writing'} {path} (ulimit -f): "
            "raise the limit and run the same command again to resume, or choose another --out"
        )
    reason = os.strerror(number) if number else first_line(err)
    return ProbekitError(f"cannot {action} {path}: {reason}; choose a writable --out")


def _size(num_bytes: int) -> str:
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if num_bytes >= scale:
            return f"{num_bytes / scale:.1f} {unit}"
    return f"{num_bytes} bytes"


def _close_after_error(file: h5py.File) -> None:
    """Close a file whose creation failed; a second error while closing adds nothing for the user."""
    try:
        file.close()
    except Exception:  # noqa: BLE001 -- h5py raises RuntimeError too once a flush has failed
        pass


def _finished(future: Future) -> bool:
    if future.done():
        future.result()  # re-raise a writer error here, in the caller's thread
        return True
    return False


class _Checked:
    """A feature dataset whose reads turn a failed Fletcher-32 checksum (or any HDF5 read error)
    into one line naming the file and the dataset, instead of HDF5's error stack.
    """

    def __init__(self, dataset: h5py.Dataset, path: Path) -> None:
        self._dataset, self._path = dataset, path

    def __getattr__(self, name: str) -> object:
        return getattr(self._dataset, name)

    def __getitem__(self, key: object) -> np.ndarray:
        try:
            return self._dataset[key]
        except OSError as err:
            checksum = "filter returned failure" in str(err) or "checksum" in str(err).lower()
            what = (
                "does not match its Fletcher-32 checksum (the bytes on disk changed)" if checksum else "cannot be read"
            )
            raise ProbekitError(
                f"{self._path}: dataset {self._dataset.name} {what} ({first_line(err)}): the cache is damaged; "
                "extract it again (--overwrite)"
            ) from err


class FeatureCache:
    """Read-only view of a cache file. Use as a context manager or call :meth:`close`."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise ProbekitError(f"cache {self.path} not found: run `probekit extract ... --out {self.path}` first")
        try:
            # No file lock: `probekit info` may read progress while an extraction is writing.
            self.file = h5py.File(self.path, "r", locking=False)
        except OSError as err:
            raise ProbekitError(f"{self.path} is not a readable HDF5 file ({err}); re-run the extraction") from err
        if self.file.attrs.get("format") != FORMAT:
            self.file.close()
            raise ProbekitError(f"{self.path} is not a probekit feature cache: make one with `probekit extract`")
        version = int(self.file.attrs["format_version"])
        if version > FORMAT_VERSION:
            self.file.close()
            raise ProbekitError(
                f"{self.path} has cache format {version}; this probekit reads up to {FORMAT_VERSION}: upgrade probekit"
            )
        self._shards = self._check_shards()
        # The file is opened read-only, so the grid and layer names can be read once, not per cell.
        self._timesteps = [int(t) for t in self.file["grid"]["t"][:]]
        self._layer_names = [str(name) for name in self.file["layers"]["name"].asstr()[:]]

    def _check_shards(self) -> list[Path]:
        """A master file's shard paths, each checked to exist and be a cache; [] for a plain cache."""
        names = json.loads(self.file.attrs.get("shards", "[]"))
        shards = [self.path.parent / name for name in names]
        for shard in shards:
            problem = None
            if not shard.is_file():
                problem = "is missing"
            else:
                try:
                    with h5py.File(shard, "r", locking=False) as f:
                        if f.attrs.get("format") != FORMAT:
                            problem = "is not a probekit feature cache"
                except OSError:
                    problem = "is not a readable HDF5 file"
            if problem:
                self.file.close()
                raise ProbekitError(
                    f"{self.path} is a master file over {len(shards)} shards and its shard {shard} {problem}: keep the "
                    "shards beside it, or re-run the multi-process extraction"
                )
        return shards

    def _unfinished_shards(self) -> list[Path]:
        unfinished = []
        for shard in self._shards:
            with h5py.File(shard, "r", locking=False) as f:
                if not bool(f.attrs.get("complete", False)):
                    unfinished.append(shard)
        return unfinished

    def __enter__(self) -> FeatureCache:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.file.close()

    @property
    def attrs(self) -> dict[str, object]:
        out: dict[str, object] = {}
        for key, value in self.file.attrs.items():
            if isinstance(value, (np.generic,)):
                value = value.item()
            if isinstance(value, str) and value[:1] in "[{":
                try:
                    value = json.loads(value)
                except json.JSONDecodeError:
                    pass
            out[key] = value
        return out

    @property
    def grid(self) -> list[GridPoint]:
        columns = {field: self.file["grid"][field][:] for field in _GRID_FIELDS}
        return [
            GridPoint(**{field: (int if field == "t" else float)(columns[field][i]) for field in _GRID_FIELDS})
            for i in range(len(columns["t"]))
        ]

    @property
    def timesteps(self) -> list[int]:
        return list(self._timesteps)

    @property
    def layers(self) -> list[LayerInfo]:
        g = self.file["layers"]
        names = g["name"].asstr()[:]
        return [
            LayerInfo(
                name=str(names[i]),
                stage=str(g["stage"].asstr()[i]),
                depth=int(g["depth"][i]),
                channels=int(g["channels"][i]),
                resolution=str(g["resolution"].asstr()[i]),
                aliases=tuple(a for a in str(g["aliases"].asstr()[i]).split(",") if a),
            )
            for i in range(len(names))
        ]

    @property
    def splits(self) -> list[str]:
        return [name for name in ("train", "test") if name in self.file] + sorted(
            name for name in self.file if name not in ("train", "test", "grid", "layers")
        )

    @property
    def class_names(self) -> list[str]:
        return json.loads(self.file[self.splits[0]].attrs["class_names"])

    @property
    def complete(self) -> bool:
        """The file says it is complete and, for a master file, so does every shard."""
        return bool(self.file.attrs.get("complete", False)) and not self._unfinished_shards()

    def progress(self, split: str) -> tuple[int, int]:
        """(samples written, samples in split)."""
        done = self.file[split]["done"][:]
        return int(done.sum()), int(done.size)

    def nonfinite(self) -> dict[tuple[int, str], int] | None:
        """NaN / inf pooled values per cell (t, layer), over every split and slot, for cells that have any.

        None when the cache predates the count (no ``nonfinite`` dataset): nothing is known then.
        """
        counts: dict[tuple[int, str], int] = {}
        for split in self.splits:
            if NONFINITE not in self.file[split]:
                return None
            per_cell = self.file[split][NONFINITE][:].sum(axis=2, dtype=np.int64)  # (T, L)
            for ti, li in zip(*np.nonzero(per_cell)):
                cell = (self._timesteps[ti], self._layer_names[li])
                counts[cell] = counts.get(cell, 0) + int(per_cell[ti, li])
        return counts

    def require_complete(self) -> None:
        if self.complete:
            return
        unfinished = self._unfinished_shards()
        if unfinished:
            raise ProbekitError(
                f"{self.path} is a master file whose shard {unfinished[0]} is unfinished: re-run that shard's "
                f"extract command (`probekit info {unfinished[0]}` shows it) to finish it before probing"
            )
        parts = ", ".join(f"{split} {done}/{total}" for split in self.splits for done, total in [self.progress(split)])
        raise ProbekitError(
            f"{self.path} is unfinished ({parts} samples written): re-run its extract command "
            f"(`probekit info {self.path}` shows it) to finish it before probing"
        )

    def labels(self, split: str) -> np.ndarray:
        return self.file[split]["labels"][:]

    def width(self, layer: str) -> int:
        """Pooled feature width D of ``layer``."""
        return int(self.file["layers"]["width"][self._layer_names.index(layer)])

    def index(self, split: str) -> np.ndarray:
        return self.file[split]["index"][:]

    @property
    def draws(self) -> int:
        return int(self.file.attrs.get("draws", 1))

    @property
    def views(self) -> int:
        """Augmented views stored for the train split (0: only the clean image)."""
        return int(self.file.attrs.get("views", 0))

    @property
    def spatial_side(self) -> int:
        """S of a spatial cache (``--pooling spatialS``); 0 when the features are pooled vectors."""
        return int(self.file.attrs.get("spatial_side", 0))

    def feature_maps(self, split: str, layer: str, t: int, rows: np.ndarray | slice | None = None) -> np.ndarray:
        """(n, C, S, S) float32 feature maps of one cell of a spatial cache (mean over noise draws, view 0).

        ``rows``: sample positions to read (sorted int array or slice; default every sample).
        """
        side = self.spatial_side
        if not side:
            raise ProbekitError(
                f"{self.path} holds pooled vectors ({self.attrs.get('pooling')}), not feature maps: extract it with "
                "--pooling spatialS (e.g. spatial8)"
            )
        data, t_index = self._block(split, layer, t)
        rows = slice(None) if rows is None else rows
        block = data[t_index, : self.draws, rows].astype(np.float32)  # (draws, n, D)
        maps = block.mean(axis=0) if self.draws > 1 else block[0]
        return maps.reshape(len(maps), -1, side, side)

    def _block(self, split: str, layer: str, t: int) -> tuple[h5py.Dataset, int]:
        try:
            t_index = self._timesteps.index(int(t))
        except ValueError:
            raise ProbekitError(f"timestep {t} is not in {self.path} (its grid: {self._timesteps})") from None
        if layer not in self._layer_names:
            raise ProbekitError(f"layer {layer!r} is not in {self.path} (its layers: {', '.join(self._layer_names)})")
        return _Checked(self.file[split]["feats"][layer], self.path), t_index  # type: ignore[return-value]

    def features(self, split: str, layer: str, t: int, *, draws: str = "mean") -> np.ndarray:
        """(N, D) float32 features of one cell on the clean image (view 0).

        ``draws="mean"`` averages its noise draws; ``draws="single"`` takes draw 0 only. Read
        into one preallocated array, a block of rows at a time (no whole-cell temporaries).
        """
        data, _ = self._block(split, layer, t)  # checks the cell exists
        out = np.empty((data.shape[2], data.shape[3]), dtype=np.float32)
        for start, rows in self.row_chunks(split, layer, t, draws=draws):
            out[start : start + len(rows)] = rows
        return out

    def row_chunks(
        self,
        split: str,
        layer: str,
        t: int,
        *,
        draws: str = "mean",
        block_bytes: int = 16 << 20,
        start: int = 0,
        stop: int | None = None,
    ) -> Iterator[tuple[int, np.ndarray]]:
        """(first row, float32 rows) of one cell, consecutive blocks of whole chunks of at most
        about ``block_bytes`` (float32), for samples ``start .. stop``.

        ``draws``: "mean" (clean image, mean over noise draws: (b, D)), "single" (draw 0: (b, D))
        or "slots" (every slot a sampling probe draws from, :meth:`train_slots`: (S, b, D)).
        A block's mean is computed exactly as over the whole cell, so the values do not depend
        on the block size.
        """
        if draws not in ("mean", "single", "slots"):
            raise ProbekitError(f"unknown draws mode {draws!r}: use mean or single")
        data, t_index = self._block(split, layer, t)
        if draws == "slots":
            first = self.draws if (split == "train" and self.views > 0) else 0
            slots = slice(first, data.shape[1])
        else:
            slots = slice(0, self.draws if draws == "mean" else 1)
        n_slots = slots.stop - slots.start
        stop = data.shape[2] if stop is None else stop
        chunk = data.chunks[2] if data.chunks else 1
        per_row = 4 * data.shape[3] * n_slots
        rows = max(chunk, block_bytes // per_row // chunk * chunk)
        position = start
        while position < stop:
            end = min(stop, (position // chunk) * chunk + rows)
            block = data[t_index, slots, position:end]  # (k, b, D) in the stored dtype
            if draws == "slots":
                yield position, block.astype(np.float32, copy=False)
            elif n_slots > 1:
                yield position, block.astype(np.float32).mean(axis=0)
            else:
                yield position, block[0].astype(np.float32, copy=False)
            position = end

    def draw_features(self, split: str, layer: str, t: int, draw: int) -> np.ndarray:
        """(N, D) float32 features of one noise ``draw`` (0-based) of the clean image (view 0)."""
        if not 0 <= draw < self.draws:
            raise ProbekitError(f"draw {draw} is not in {self.path}: it holds draws 0..{self.draws - 1}")
        data, t_index = self._block(split, layer, t)
        return data[t_index, draw].astype(np.float32)

    def train_slots(self, split: str, layer: str, t: int) -> np.ndarray:
        """(S, N, D) float32: the slots a sampling probe draws from, one per (view, draw).

        The augmented views' slots when the split has views (DDAE trains on augmented images
        only), else the clean image's draws.
        """
        data, _ = self._block(split, layer, t)
        first = self.draws if (split == "train" and self.views > 0) else 0
        out = np.empty((data.shape[1] - first, data.shape[2], data.shape[3]), dtype=np.float32)
        for start, rows in self.row_chunks(split, layer, t, draws="slots"):
            out[:, start : start + rows.shape[1]] = rows
        return out

    def summary(self) -> str:
        """Human-readable description for ``probekit info``."""
        a = self.attrs
        lines = [
            f"{self.path}  ({self.path.stat().st_size / 2**20:.1f} MiB, format {a['format']} v{a['format_version']})",
            f"status: {'complete' if self.complete else 'INCOMPLETE'}",
            f"model: {a.get('model_id')}  [{a.get('framework')}]  weights sha256 {str(a.get('model_sha256'))[:16]}...",
            *(
                [f"model fingerprint (weights + configs): {str(a['model_fingerprint'])[:16]}..."]
                if a.get("model_fingerprint")
                else []
            ),
            f"dataset: {a.get('dataset')}  fit: {a.get('fit')}",
            f"pooling: {a.get('pooling')}  draws: {a.get('draws')}  views: {a.get('views', 0)}  dtype: "
            f"{a.get('dtype')}  "
            f"precision: {a.get('precision', 'fp32')}  seed: {a.get('seed')}",
            f"created: {a.get('created')} by probekit {a.get('probekit_version')}",
            *([f"prompt template: {a['prompt']!r}"] if a.get("prompt") else []),
            f"command: {a.get('command')}",
            "splits: " + ", ".join(f"{s} {d}/{n}" for s in self.splits for d, n in [self.progress(s)]),
            f"grid ({len(self.grid)} points):",
        ]
        lines += [
            f"  t={p.t:<5d} sigma={p.sigma:<10.4g} logsnr={p.logsnr:<8.3g} alpha_bar={p.alpha_bar:.5f}"
            for p in self.grid
        ]
        bad = self.nonfinite()
        if bad is None:
            lines.append("non-finite features: not counted (cache written before the count)")
        elif bad:
            lines.append(f"non-finite features (NaN/inf) in {len(bad)} cells, which probing skips:")
            lines += [f"  t={t:<5d} {layer}: {count} values" for (t, layer), count in sorted(bad.items())]
        else:
            lines.append("non-finite features: none")
        widths = dict(zip(self.file["layers"]["name"].asstr()[:], self.file["layers"]["width"][:]))
        lines.append(f"layers ({len(self.layers)}):")
        lines += [
            f"  {l.depth:>3d} {l.name:<34s} {l.stage:<6s} C={l.channels:<5d} {l.resolution:<8s} D={int(widths[l.name])}"
            + (f"  (= {', '.join(l.aliases)})" if l.aliases else "")
            for l in self.layers
        ]
        return "\n".join(lines)


def write_master(out: str | Path, shards: Sequence[str | Path], *, command: str = "") -> Path:
    """Write ``out``: virtual datasets that stitch the shard caches together along the sample axis.

    The shards must stay beside ``out`` (their names are stored relative, in the ``shards``
    attribute). The master is complete only when every shard is; :class:`FeatureCache` re-checks
    the shards each time it opens a master. Written to a temporary name and renamed, so a crash
    never leaves a half-written master file.
    """
    out = Path(out)
    shards = [Path(s) for s in shards]
    opened = [h5py.File(path, "r", locking=False) for path in shards]
    tmp = out.with_name(out.name + ".tmp")
    try:
        first = opened[0]
        with h5py.File(tmp, "w") as master:
            for key, value in first.attrs.items():
                master.attrs[key] = value
            master.attrs["command"] = command or first.attrs.get("command", "")
            master.attrs["shards"] = json.dumps([path.name for path in shards])
            master.attrs["complete"] = all(bool(f.attrs.get("complete", False)) for f in opened)
            for group in ("grid", "layers"):
                first.copy(first[group], master, name=group)
            splits = [name for name in first if name not in ("grid", "layers")]
            for split in splits:
                _stitch_split(master, opened, shards, split)
        os.replace(tmp, out)
    finally:
        for f in opened:
            f.close()
        tmp.unlink(missing_ok=True)
    return out


def _stitch_split(master: h5py.File, opened: list[h5py.File], shards: list[Path], split: str) -> None:
    group = master.create_group(split)
    for key, value in opened[0][split].attrs.items():
        group.attrs[key] = value
    names = (
        ["labels", "index", "done"]
        + [NONFINITE] * (NONFINITE in opened[0][split])
        + [f"feats/{layer}" for layer in opened[0][split]["feats"]]
    )
    group.create_group("feats")
    for name in names:
        parts = [f[split][name] for f in opened]
        axis = {1: 0, 3: 2, 4: 2}[parts[0].ndim]  # feats are (T, K, N, D), nonfinite (T, L, N)
        shape = list(parts[0].shape)
        shape[axis] = sum(p.shape[axis] for p in parts)
        layout = h5py.VirtualLayout(shape=tuple(shape), dtype=parts[0].dtype)
        offset = 0
        for part, path in zip(parts, shards):
            n = part.shape[axis]
            source = h5py.VirtualSource(path.name, part.name, shape=part.shape)
            index: list[slice] = [slice(None)] * len(shape)
            index[axis] = slice(offset, offset + n)
            layout[tuple(index)] = source
            offset += n
        group.create_virtual_dataset(name, layout, fillvalue=np.zeros((), dtype=parts[0].dtype))
