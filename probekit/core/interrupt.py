"""A stop request (Ctrl-C, SIGTERM) that survives being raised where Python cannot pass it on.

The signal handler raises :class:`KeyboardInterrupt` where the program happens to be. If that is
inside a finaliser or a weakref callback, Python prints "Exception ignored" and carries on as if
nothing happened. The handler therefore also records the request, and long loops call
:func:`check` at their safe points (between the runner's commands, between batches), so a
swallowed stop still stops them there.
"""

from __future__ import annotations

import threading

_requested = threading.Event()


def request_stop(_signum: int = 0, _frame: object = None) -> None:
    """A signal handler: record the stop request and raise :class:`KeyboardInterrupt` now."""
    _requested.set()
    raise KeyboardInterrupt


def check() -> None:
    """Raise :class:`KeyboardInterrupt` if a stop was requested (and perhaps swallowed) earlier."""
    if _requested.is_set():
        raise KeyboardInterrupt


def clear() -> None:
    """Forget a request: for a process that goes on after handling one (tests, in-process runs)."""
    _requested.clear()
