"""Disk errors of the cache writer: full disks, quotas and file-size limits, said in one line with what to do."""

from __future__ import annotations

import errno
import os
import re
import resource
import shutil
from pathlib import Path

import h5py
import numpy as np

from probekit.core.errors import ProbekitError, first_line
from probekit.features.cache.layout import CacheLayout

_DISK_FULL = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)}
_HDF5_ERRNO = re.compile(r"errno = (\d+)")


def _errno(err: BaseException) -> int | None:
    """The OS error number of an h5py error: its ``errno``, or the one HDF5 wrote into the message."""
    if isinstance(err, OSError) and err.errno:
        return err.errno
    found = _HDF5_ERRNO.search(str(err))
    return int(found.group(1)) if found else None


def reserve(path: Path, fd: int | None) -> None:
    """Allocate the whole file's blocks now, so a full disk shows at creation, never mid-extraction.

    HDF5 leaves feature chunks as holes of a sparse file; without this a disk could fill up hours
    into a run. File systems that cannot reserve space (EOPNOTSUPP, EINVAL) are left as they are.
    """
    own = fd is None
    handle = os.open(path, os.O_RDWR) if fd is None else fd
    try:
        size = os.fstat(handle).st_size
        if size:
            os.posix_fallocate(handle, 0, size)
    except OSError as err:
        if err.errno not in (errno.EOPNOTSUPP, errno.EINVAL, getattr(errno, "ENOTSUP", errno.EOPNOTSUPP)):
            raise
    finally:
        if own:
            os.close(handle)


def require_size_limit(path: Path, layout: CacheLayout) -> None:
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


def write_error(path: Path, layout: CacheLayout, err: BaseException, action: str = "write") -> ProbekitError:
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


def close_after_error(file: h5py.File) -> None:
    """Close a file whose creation failed; a second error while closing adds nothing for the user."""
    try:
        file.close()
    except Exception:  # noqa: BLE001 -- h5py raises RuntimeError too once a flush has failed
        pass
