"""Stored VAE latents: the encoder runs once per image and view, across runs.

A latent diffusion model's encoder costs as much as a forward or more (Stable Diffusion's VAE at
512 px: about 1.1 TFLOP per image, its UNet 0.8), and extraction needs the same latents again on
a resume, a second grid or a second layer set. :class:`LatentStore` keeps the posterior means
(after shift and scaling, exactly what :meth:`Backbone.encode` returns) in one HDF5 file per key.

The key is a SHA-256 over everything the latents depend on: the encoder's weights and config
(``scaling_factor``, ``shift_factor``, ...: :meth:`Backbone.encoder_sha256`), how the
pixels were fitted to it (image size, resize and crop, channels, value range), the dataset (name,
source, provenance), the device type (a GPU's latents differ from a CPU's in the last bits, and a
resumed cache must equal an uninterrupted one bit for bit), the memory format and the format
version. A different VAE, image size or dataset therefore lands in another file and can never be
read by mistake. Inside a file, latents are stored per split and view: ``/{split}/{view}/latents``
(sample id, C, h, w) with ``/{split}/{view}/done`` flags, rows addressed by the stable sample id;
the view name carries its augmentation (``clean``, or ``crop-flip-pad4-seed{S}-view{v}``), so
views of another seed are other rows. A row is read only when its flag is set; flags are set after
the row is written and flushed, so an interrupted run never serves half-written latents.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import h5py
import numpy as np
import torch

from probekit.core.errors import ProbekitError
from probekit.data import ImageDataset
from probekit.features.distributed import current_rank
from probekit.models.backbone import Backbone

log = logging.getLogger(__name__)

FORMAT_VERSION = 1


def latent_key(fields: dict[str, object]) -> str:
    """The SHA-256 of the key fields (JSON with sorted keys)."""
    return hashlib.sha256(
        json.dumps({"format_version": FORMAT_VERSION, **fields}, sort_keys=True, default=str).encode()
    ).hexdigest()


def view_name(view: int, seed: int) -> str:
    """The stored name of view ``view``: the clean image, or DDAE's crop + flip under ``seed``."""
    return "clean" if view == 0 else f"crop-flip-pad4-seed{seed}-view{view}"


class LatentStore:
    """Latents of one key in ``folder/latents-{key[:16]}{suffix}.h5`` (suffix: a torchrun rank's)."""

    def __init__(self, folder: str | Path, fields: dict[str, object], suffix: str = "") -> None:
        self.key = latent_key(fields)
        folder = Path(folder)
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise ProbekitError(
                f"cannot create the latent folder {folder} ({err}): choose another --latent-cache or --no-latent-cache"
            ) from err
        self.path = folder / f"latents-{self.key[:16]}{suffix}.h5"
        self.file = self._open(fields)
        self.hits = 0
        self.misses = 0

    def _open(self, fields: dict[str, object]) -> h5py.File:
        try:
            handle = h5py.File(self.path, "a")
        except OSError as err:
            # A file damaged by a crash mid-write holds nothing that can be trusted: start it anew.
            log.warning("latent store %s is unreadable (%s): starting it anew", self.path, str(err).splitlines()[0])
            self.path.unlink(missing_ok=True)
            handle = h5py.File(self.path, "a")
        stored = handle.attrs.get("key")
        if stored is None:
            handle.attrs["key"] = self.key
            handle.attrs["fields"] = json.dumps(fields, sort_keys=True, default=str)
        elif stored != self.key:
            handle.close()
            raise ProbekitError(f"{self.path} holds latents of another key: delete it or choose another --latent-cache")
        return handle

    def has(self, split: str, view: str, ids: np.ndarray) -> bool:
        """Whether the latents of every sample in ``ids`` are stored."""
        group = self.file.get(f"{split}/{view}")
        ids = np.asarray(ids, dtype=np.int64)
        if group is None or len(ids) == 0 or int(ids.max()) >= len(group["done"]):
            return False
        return bool(group["done"][np.unique(ids)].all())

    def get(self, split: str, view: str, ids: np.ndarray) -> torch.Tensor | None:
        """The stored latents of samples ``ids`` (all of them), else None."""
        ids = np.asarray(ids, dtype=np.int64)
        if not self.has(split, view, ids):
            self.misses += len(ids)
            return None
        group = self.file[f"{split}/{view}"]
        order = np.argsort(ids, kind="stable")
        sorted_ids = ids[order]
        unique = np.unique(sorted_ids)
        rows = group["latents"][unique][np.searchsorted(unique, sorted_ids)]
        out = np.empty_like(rows)
        out[order] = rows
        self.hits += len(ids)
        return torch.from_numpy(out)

    def put(self, split: str, view: str, ids: np.ndarray, latents: torch.Tensor) -> None:
        """Store the latents of samples ``ids``; the done flags are set after the rows are flushed."""
        values = latents.detach().float().cpu().numpy()
        ids = np.asarray(ids, dtype=np.int64)
        name = f"{split}/{view}"
        if name not in self.file:
            group = self.file.create_group(name)
            group.create_dataset(
                "latents",
                shape=(0, *values.shape[1:]),
                maxshape=(None, *values.shape[1:]),
                dtype=np.float32,
                chunks=(1, *values.shape[1:]),
            )
            group.create_dataset("done", shape=(0,), maxshape=(None,), dtype=bool, chunks=(4096,))
        group = self.file[name]
        if group["latents"].shape[1:] != values.shape[1:]:
            raise ProbekitError(
                f"{self.path}: stored latents are {group['latents'].shape[1:]}, new ones {values.shape[1:]}; delete "
                "the file"
            )
        needed = int(ids.max()) + 1
        if needed > len(group["done"]):
            group["latents"].resize(needed, axis=0)
            group["done"].resize(needed, axis=0)
            # resize leaves new rows at the fill value; the flags of those rows stay False until written
        order = np.argsort(ids, kind="stable")
        unique, first = np.unique(ids[order], return_index=True)
        group["latents"][unique] = values[order][first]
        self.file.flush()
        group["done"][unique] = True
        self.file.flush()

    def close(self) -> None:
        if self.file.id.valid:
            self.file.close()


def store_for(
    backbone: Backbone,
    out: Path,
    fit_record: dict,
    dataset: ImageDataset,
    *,
    latent_cache: str | None,
    store_latents: bool,
    channels_last: bool,
) -> LatentStore | None:
    """The store of this backbone's latents for these images, or None (no encoder, or not wanted)."""
    encoder = backbone.encoder_sha256()
    if encoder is None or not store_latents:
        return None
    fields = {
        "encoder_sha256": encoder,
        "input": fit_record,
        "channels_last": channels_last,
        "dataset": dataset.name,
        "dataset_source": dataset.source,
        "dataset_info": dataset.info,
        "device": backbone.device.type,
    }
    rank = current_rank()
    suffix = "" if rank is None else f".rank{rank.rank}-of-{rank.world_size}"
    store = LatentStore(Path(latent_cache) if latent_cache else out.parent / "latents", fields, suffix)
    log.info("latents: stored in %s", store.path)
    return store


def encode_or_read(
    backbone: Backbone, x0: torch.Tensor, store: LatentStore | None, split: str, view: str, ids: np.ndarray
) -> tuple[torch.Tensor, int]:
    """The encoding of ``x0`` and how many images the encoder ran on (0 when the store had them all)."""
    if store is not None:
        found = store.get(split, view, ids)
        if found is not None:
            return found.to(x0.device), 0
    with torch.no_grad():
        latent = backbone.encode(x0)
    if store is not None:
        store.put(split, view, ids, latent)
    return latent, len(ids)
