"""Fetch one file over HTTP(S) (or file://) and verify its MD5 before it takes its final name."""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
import urllib.request
from pathlib import Path

from probekit.core.errors import ProbekitError

log = logging.getLogger(__name__)

_CHUNK_BYTES = 1 << 20
_TIMEOUT_S = 60


def download_verified(url: str, destination: Path, md5: str) -> Path:
    """Download ``url`` to ``destination``, which appears only once its MD5 equals ``md5``.

    The bytes go to a temporary file in the destination folder and are renamed into place, so an
    interrupted or corrupted download never leaves a file that a later run would trust.
    """
    try:
        destination.parent.mkdir(parents=True, exist_ok=True)
        handle, temp_name = tempfile.mkstemp(dir=destination.parent, prefix=f".{destination.name}.")
    except OSError as exc:
        raise ProbekitError(f"cannot write to {destination.parent} ({exc}); pass a writable root") from exc
    log.info("downloading %s -> %s", url, destination)
    temp = Path(temp_name)
    try:
        digest = hashlib.md5()
        with (
            os.fdopen(handle, "wb") as out,
            urllib.request.urlopen(url, timeout=_TIMEOUT_S) as response,
        ):
            while chunk := response.read(_CHUNK_BYTES):
                digest.update(chunk)
                out.write(chunk)
        if digest.hexdigest() != md5:
            raise ProbekitError(
                f"download of {url} has MD5 {digest.hexdigest()}, expected {md5}; the mirror or "
                f"the connection corrupted it, try again or place the file at {destination} yourself"
            )
        os.replace(temp, destination)
    except OSError as exc:  # urllib.error.URLError is an OSError
        raise ProbekitError(f"could not download {url}: {exc}") from exc
    finally:
        temp.unlink(missing_ok=True)
    return destination
