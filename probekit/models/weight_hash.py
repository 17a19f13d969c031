"""Weight hashes remembered across processes, keyed by the files the weights came from.

Hashing every tensor of a large model takes seconds to minutes (13 s for Stable Diffusion 1.5 on a
CPU core), and a resume or a second extraction of the same checkpoint would pay it again. A hash is
stored under a key made of the model spec, the role of the module (unet, vae, ...), the random-init
seed, the torch version, and the path, size and modification time (ns) of every file under the
local paths the spec names; an edited, replaced or touched file changes the key, so the hash is
computed afresh. Models loaded from a hub id (no local path) are not remembered.

The store is one JSON file, ``weight-hashes.json``, in ``$PROBEKIT_CACHE_DIR`` (default
``$XDG_CACHE_HOME/probekit`` or ``~/.cache/probekit``), written atomically.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from probekit.core.atomic import publish

log = logging.getLogger(__name__)

STORE_NAME = "weight-hashes.json"


def cache_dir() -> Path:
    """Where probekit keeps what it remembers between runs."""
    if os.environ.get("PROBEKIT_CACHE_DIR"):
        return Path(os.environ["PROBEKIT_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "probekit"


def local_sources(spec: str) -> list[Path]:
    """The existing local paths a ``--model`` spec names (``dit:CKPT.pt,vae=FOLDER`` names two)."""
    pieces = [spec]
    for separator in (":", ",", "=", "?", "&"):
        pieces = [part for piece in pieces for part in piece.split(separator)]
    return sorted(
        {Path(piece).expanduser().resolve() for piece in pieces if piece and Path(piece).expanduser().exists()}
    )


def files_key(spec: str, sources: Sequence[Path], extra: str) -> str | None:
    """The key of these weights: None when there is no local file to identify them by."""
    files = []
    for source in sources:
        found = [source] if source.is_file() else sorted(path for path in source.rglob("*") if path.is_file())
        for path in found:
            stat = path.stat()
            files.append([str(path), stat.st_size, stat.st_mtime_ns])
    if not files:
        return None
    text = json.dumps({"spec": spec, "extra": extra, "torch": torch.__version__, "files": files}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


def remembered(key: str | None, role: str, compute: Callable[[], str]) -> str:
    """The hash of ``role`` stored under ``key``, or ``compute()`` stored there (``key`` None: just computed)."""
    if key is None:
        return compute()
    entry = f"{key}:{role}"
    path = cache_dir() / STORE_NAME
    store = _read(path)
    if entry in store:
        return store[entry]
    value = compute()
    store = _read(path)  # another process may have added entries meanwhile
    store[entry] = value
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{STORE_NAME}.", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "w") as handle:
            json.dump(store, handle)
        publish(tmp, path)
    except OSError as err:  # a read-only home only costs the next run a re-hash
        log.info("could not remember the weight hash in %s (%s)", path, err)
    return value


def _read(path: Path) -> dict[str, str]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}
