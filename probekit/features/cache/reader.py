"""FeatureCache: reads a finished cache (or a master over shards), cell by cell, checking every chunk's checksum."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import h5py
import numpy as np

from probekit.core.errors import ProbekitError, first_line
from probekit.core.types import GridPoint, LayerInfo
from probekit.features.cache.checksum import fletcher32
from probekit.features.cache.layout import CHECKSUMS, FORMAT, FORMAT_VERSION, GRID_FIELDS, NONFINITE


class _Checked:
    """A feature dataset whose reads are checked against the stored Fletcher-32 of every vector
    (:mod:`.checksum`), and whose HDF5 read errors become one line naming the file and dataset.

    Caches written before checksums (no ``/{split}/checksums``) read as before, unchecked.
    """

    def __init__(self, dataset: h5py.Dataset, sums: h5py.Dataset | None, path: Path) -> None:
        self._dataset, self._sums, self._path = dataset, sums, path

    def __getattr__(self, name: str) -> object:
        return getattr(self._dataset, name)

    def __getitem__(self, key: object) -> np.ndarray:
        try:
            values = self._dataset[key]
            # the key selects (t, slot, sample) and, for features, whole vectors: the same key selects their sums
            expected = None if self._sums is None else self._sums[key]
        except OSError as err:
            raise ProbekitError(
                f"{self._path}: dataset {self._dataset.name} cannot be read ({first_line(err)}): the cache is "
                "damaged; extract it again (--overwrite)"
            ) from err
        if expected is not None:
            bad = np.flatnonzero(fletcher32(values).reshape(-1) != np.asarray(expected).reshape(-1))
            if len(bad):
                raise ProbekitError(
                    f"{self._path}: dataset {self._dataset.name} does not match its Fletcher-32 checksums in "
                    f"{len(bad)} vector(s) (the bytes on disk changed): the cache is damaged; extract it again "
                    "(--overwrite)"
                )
        return values


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
        try:
            items = list(self.file.attrs.items())
        except (OSError, KeyError) as err:  # a damaged attribute heap (e.g. an overwritten file tail)
            raise ProbekitError(
                f"{self.path} is damaged: its attributes cannot be read ({err}); re-run the extraction"
            ) from None
        for key, value in items:
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
        columns = {field: self.file["grid"][field][:] for field in GRID_FIELDS}
        return [
            GridPoint(
                t=int(columns["t"][i]),
                model_input=float(columns["model_input"][i]),
                alpha_bar=float(columns["alpha_bar"][i]),
                sigma=float(columns["sigma"][i]),
                logsnr=float(columns["logsnr"][i]),
            )
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

    def _block(self, split: str, layer: str, t: int, *, check: bool = True) -> tuple[h5py.Dataset, int]:
        try:
            t_index = self._timesteps.index(int(t))
        except ValueError:
            raise ProbekitError(f"timestep {t} is not in {self.path} (its grid: {self._timesteps})") from None
        if layer not in self._layer_names:
            raise ProbekitError(f"layer {layer!r} is not in {self.path} (its layers: {', '.join(self._layer_names)})")
        sums = self.file[split].get(CHECKSUMS) if check else None
        checked = _Checked(self.file[split]["feats"][layer], None if sums is None else sums[layer], self.path)
        return checked, t_index  # type: ignore[return-value]

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
        check: bool = True,
    ) -> Iterator[tuple[int, np.ndarray]]:
        """(first row, float32 rows) of one cell, consecutive blocks of whole chunks of at most
        about ``block_bytes`` (float32), for samples ``start .. stop``.

        ``check=False`` skips the checksums: only for a caller that reads the same rows again
        after a checked pass (a streamed probe's later passes).

        ``draws``: "mean" (clean image, mean over noise draws: (b, D)), "single" (draw 0: (b, D))
        or "slots" (every slot a sampling probe draws from, :meth:`train_slots`: (S, b, D)).
        A block's mean is computed exactly as over the whole cell, so the values do not depend
        on the block size.
        """
        if draws not in ("mean", "single", "slots"):
            raise ProbekitError(f"unknown draws mode {draws!r}: use mean or single")
        data, t_index = self._block(split, layer, t, check=check)
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
