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
from collections.abc import Iterator
from pathlib import Path

from probekit.core.errors import ProbekitError

# path -> [file descriptor, holders, created]: a process may take the lock again while it holds it
_held: dict[Path, list] = {}


#: what the lock writes into an output it creates, until the cache is renamed over it
PLACEHOLDER = b"probekit: an extraction is starting here\n"


def is_lock_placeholder(path: str | Path) -> bool:
    """True when ``path`` holds only the lock's placeholder (also one a killed run left behind)."""
    try:
        with open(path, "rb") as file:
            return file.read(len(PLACEHOLDER) + 1) == PLACEHOLDER
    except OSError:
        return False


def created_by_lock(path: str | Path) -> bool:
    """True while this process holds the lock on ``path`` and the file did not exist before it (so an
    empty file there is the lock's own, not a user's file to refuse).
    """
    entry = _held.get(Path(os.path.abspath(path)))
    return bool(entry and entry[2])


@contextlib.contextmanager
def exclusive_output(path: str | Path, what: str = "probekit extract") -> Iterator[int]:
    """Hold the writer's lock on ``path`` for the ``with`` block; refuse at once if another process holds it.

    Yields the lock's file descriptor (open read-write on ``path``). A file the lock created and
    nothing filled is removed when the lock is released.
    """
    key = Path(os.path.abspath(path))
    if key in _held:
        _held[key][1] += 1
        try:
            yield _held[key][0]
        finally:
            _held[key][1] -= 1
        return
    created = not key.exists() or is_lock_placeholder(key)  # a placeholder left by a killed run is ours too
    try:
        fd = os.open(key, os.O_RDWR | os.O_CREAT, 0o666)
    except OSError as err:
        raise ProbekitError(
            f"cannot open {path} to write it: {os.strerror(err.errno)}; choose a writable --out"
        ) from err
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
    if created:
        os.ftruncate(fd, 0)
        os.write(fd, PLACEHOLDER)  # marks the file as the lock's own, not a user's file to refuse
    _held[key] = entry = [fd, 1, created]
    try:
        yield fd
    finally:
        entry[1] -= 1
        if entry[1] == 0:
            del _held[key]
            fd, created = entry[0], entry[2]  # the lock may have moved to a file renamed into place
            if created and _still_empty_there(fd, key):
                key.unlink()  # nothing was written: leave no empty file behind
            os.close(fd)  # closing the last descriptor releases the flock


def lock_replaced_output(path: str | Path) -> None:
    """Move this process's lock onto the file that now sits at ``path``.

    A cache is created under a temporary name and renamed over ``path`` once complete on disk; the
    lock held on the file it replaced would guard nothing. Only this process knows the new file
    until the rename, so a second writer can only win the new lock in the instant between the
    rename and this call: this process then refuses (one writer either way, never two).
    """
    key = Path(os.path.abspath(path))
    entry = _held.get(key)
    if entry is None:
        return
    fd = os.open(key, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        raise ProbekitError(
            f"another process took {path} while it was being created: let it finish, then re-run"
        ) from None
    os.close(entry[0])  # releases the lock on the replaced file
    entry[0], entry[2] = fd, False


def _still_empty_there(fd: int, key: Path) -> bool:
    """Our file holds only the placeholder and is still the one at ``key`` (not replaced meanwhile)."""
    mine = os.fstat(fd)
    try:
        there = os.stat(key)
    except FileNotFoundError:
        return False
    return mine.st_size == len(PLACEHOLDER) and (mine.st_dev, mine.st_ino) == (there.st_dev, there.st_ino)
