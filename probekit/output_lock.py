"""One writer per output file: an exclusive, non-blocking ``flock`` on the file itself.

The kernel drops a ``flock`` when its holder exits for any reason (``kill -9`` included), so a
lock never outlives the process that took it and nothing stale can block a later run. The lock
sits on the output file (created empty if absent), not on a second file beside it, so no lock
file is left behind. HDF5's own file locking is turned off by the holder (``locking=False``):
two locks from one process on one file would refuse each other.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
from pathlib import Path
from collections.abc import Iterator

from .errors import ProbekitError

# path -> (file descriptor, holders): a process may take the lock again while it holds it
_held: dict[Path, list[int]] = {}


@contextlib.contextmanager
def exclusive_output(path: str | Path, what: str = "probekit extract") -> Iterator[int]:
    """Hold the writer's lock on ``path`` for the ``with`` block; refuse at once if another process holds it.

    Yields the lock's file descriptor (open read-write on ``path``).
    """
    key = Path(os.path.abspath(path))
    if key in _held:
        _held[key][1] += 1
        try:
            yield _held[key][0]
        finally:
            _held[key][1] -= 1
        return
    try:
        fd = os.open(key, os.O_RDWR | os.O_CREAT, 0o666)
    except OSError as err:
        raise ProbekitError(f"cannot open {path} to write it: {os.strerror(err.errno)}; choose a writable --out") from err
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as err:
        os.close(fd)
        if err.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            raise ProbekitError(
                f"another {what} is writing {path} right now: wait for it to finish (then re-run to resume or "
                "check it), or choose another --out"
            ) from None
        raise ProbekitError(f"cannot lock {path}: {os.strerror(err.errno)}; choose another --out") from err
    _held[key] = [fd, 1]
    try:
        yield fd
    finally:
        _held[key][1] -= 1
        if _held[key][1] == 0:
            del _held[key]
            if os.fstat(fd).st_size == 0:
                key.unlink(missing_ok=True)  # nothing was written (or a failed creation emptied it): leave no empty file
            os.close(fd)  # closing the last descriptor releases the flock
