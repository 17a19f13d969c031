"""CacheWriter: creates a cache, writes blocks of whole chunks on a background thread, resumes an unfinished one."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import h5py
import numpy as np

from probekit._version import __version__
from probekit.core.errors import ProbekitError, first_line
from probekit.core.fields import changed_fields
from probekit.features.cache.checksum import fletcher32
from probekit.features.cache.disk import close_after_error, require_size_limit, reserve, write_error
from probekit.features.cache.layout import (
    CHECKSUMS,
    FORMAT,
    FORMAT_VERSION,
    GRID_FIELDS,
    NONFINITE,
    PLAIN_VERSION,
    STR_DTYPE,
    WRITE_BUFFER_BYTES,
    CacheLayout,
    chunk_rows,
    layout_plan,
)
from probekit.features.output_lock import created_by_lock, is_lock_placeholder, lock_replaced_output

#: Fletcher-32 of every stored feature vector (.checksum); a switch for the benchmark that measures
#: their cost (experiments/bench_checksum.py), always on otherwise
FEATURE_CHECKSUM = True


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
        require_size_limit(self.path, layout)
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
                raise write_error(self.path, layout, err, action="create") from err
            try:
                self._create(layout)
                # Everything but raw feature bytes and done flags is now on disk; later writes touch no metadata.
                self.file.flush()
                reserve(creating, None)
                os.replace(creating, self.path)
                if lock_fd is not None:
                    lock_replaced_output(self.path)  # the lock follows the file now at --out
            except (OSError, RuntimeError) as err:
                close_after_error(self.file)
                creating.unlink(missing_ok=True)  # a half-created file holds nothing to resume
                raise write_error(self.path, layout, err, action="create") from err
        # Handles stay open while writing: HDF5 then reports a failed chunk write on our flush,
        # instead of on a handle's garbage collection, where the error would be lost.
        self._feats = {
            split: {name: self.file[split]["feats"][name] for name in self.file[split]["feats"]}
            for split in layout.splits
        }
        # none in caches created without checksums (resumed as they were made)
        self._sums = {
            split: {name: group[name] for name in group} if (group := self.file[split].get(CHECKSUMS)) else {}
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
            "format_version": FORMAT_VERSION if layout.spatial_side else PLAIN_VERSION,
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
        for field in GRID_FIELDS:
            values = [getattr(point, field) for point in layout.grid]
            grid.create_dataset(field, data=np.asarray(values, dtype=np.int64 if field == "t" else np.float64))
        group = f.create_group("layers")
        layers = layout.layers
        group.create_dataset("name", data=[layer.name for layer in layers], dtype=STR_DTYPE)
        group.create_dataset("stage", data=[layer.stage for layer in layers], dtype=STR_DTYPE)
        group.create_dataset("depth", data=np.asarray([layer.depth for layer in layers], dtype=np.int64))
        group.create_dataset("channels", data=np.asarray([layer.channels for layer in layers], dtype=np.int64))
        group.create_dataset("resolution", data=[layer.resolution for layer in layers], dtype=STR_DTYPE)
        group.create_dataset("aliases", data=[",".join(layer.aliases) for layer in layers], dtype=STR_DTYPE)
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
                feats.create_dataset(
                    layer.name, shape=shape, dtype=layout.dtype, chunks=(1, 1, rows, width), dcpl=_early_allocation()
                )
            if FEATURE_CHECKSUM:  # Fletcher-32 of every stored vector (see .checksum), in the same chunk rows
                sums = g.create_group(CHECKSUMS)
                for layer in layers:
                    sums.create_dataset(
                        layer.name,
                        shape=(len(layout.grid), layout.slots(split), n),
                        dtype=np.uint32,
                        chunks=(1, 1, rows),
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
            raise write_error(self.path, self.layout, err) from err

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
            dataset, sums = self._feats[split][layer], self._sums[split].get(layer)
            stored = values.astype(self.layout.dtype, copy=False)  # the bytes on disk, checksummed as written
            for lo, hi in runs:
                dataset[:, :, block.start + lo : block.start + hi, :] = stored[:, :, lo:hi]
                if sums is not None:
                    sums[:, :, block.start + lo : block.start + hi] = fletcher32(stored[:, :, lo:hi])
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
            raise write_error(self.path, self.layout, err) from err
        finally:
            self._executor.shutdown(wait=True)
            self._feats, self._done, self._counts = {}, {}, {}
            try:
                self.file.close()
            except (OSError, RuntimeError) as err:  # closing flushes, which fails the same way on a full disk
                if not self._failed:
                    raise write_error(self.path, self.layout, err) from err


def _true_runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """[lo, hi) of each maximal run of True in a 1-D bool array."""
    edges = np.flatnonzero(np.diff(np.concatenate([[0], mask.astype(np.int8), [0]])))
    return list(zip(edges[::2].tolist(), edges[1::2].tolist()))


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


def _finished(future: Future) -> bool:
    if future.done():
        future.result()  # re-raise a writer error here, in the caller's thread
        return True
    return False
