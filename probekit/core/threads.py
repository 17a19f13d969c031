"""The one owner of the process's thread pools: torch's intra-op pool, the BLAS pools that numpy,
scipy and scikit-learn call, the OpenMP pools beside them, and the DataLoader workers' threads.

Why: on a machine shared with other work (one more runnable process per core, a cluster node
with a cpuset) the pools, not the arithmetic, decided the time. OpenMP's default wait policy lets
an idle thread spin for its next parallel region; with every core also running someone else's
process, a spinning thread takes the time slice the thread it waits for needs. Measured on a
2-core AVX-512 EPYC (docs/results/benchmarks.md, "Under contention"): one label-efficiency probe
run took 431 s with a busy process per core under the default policy, 47 s with
``OMP_WAIT_POLICY=PASSIVE`` (two threads) and 59 s with one thread; 68 s, 19 s and 16 s with only
the other users' load. The policy changes no number: it decides how a waiting thread waits, not
how work is split; the thread counts stay those of the machine, so results stay bit for bit.

The knobs, all respected when the user sets them:

- ``OMP_WAIT_POLICY`` (default here ``PASSIVE``; read by every OpenMP runtime when it loads, so it
  is set before torch or scikit-learn is imported: :func:`prepare_environment`, called first by
  the ``probekit`` command); ``KMP_BLOCKTIME`` (default ``0``) is the same for Intel's OpenMP.
- ``OMP_NUM_THREADS``: torch's intra-op threads; without it, torch's own default capped at the
  cores this process may run on (its affinity mask: a cpuset of 4 on a 64-core node gets 4).
- BLAS threads (OpenBLAS, MKL) follow torch's count (:func:`configure`), so numpy and torch never
  ask for more threads than cores between them, and a DataLoader worker gets one of each
  (:func:`worker_init`): the workers are the parallelism there.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Iterator, MutableMapping

log = logging.getLogger(__name__)

#: environment defaults for OpenMP runtimes, read when the runtime loads (see the module docstring)
WAIT_POLICY_DEFAULTS = {"OMP_WAIT_POLICY": "PASSIVE", "KMP_BLOCKTIME": "0"}


def prepare_environment(environ: MutableMapping[str, str] | None = None) -> dict[str, str]:
    """Set the OpenMP wait-policy defaults that the user has not set; return those set.

    Effective only before the first OpenMP runtime loads (``import torch``, ``import sklearn``);
    afterwards the variables are still set (for child processes) and a debug message says so.
    """
    environ = os.environ if environ is None else environ
    added = {name: value for name, value in WAIT_POLICY_DEFAULTS.items() if name not in environ}
    environ.update(added)
    if added and "torch" in sys.modules and environ is os.environ:
        log.debug("threads: torch was imported before %s were set; its OpenMP pool keeps its policy", added)
    return added


def available_cores() -> int:
    """The cores this process may run on (its affinity mask where the OS has one)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def intra_op_threads(torch_default: int, environ: MutableMapping[str, str] | None = None) -> int:
    """Torch's intra-op thread count: ``$OMP_NUM_THREADS`` when set (a positive integer), else
    ``torch_default`` (torch's own choice) capped at the cores of the affinity mask.
    """
    environ = os.environ if environ is None else environ
    text = environ.get("OMP_NUM_THREADS", "").strip()
    if text:
        try:
            value = int(text.split(",")[0])
        except ValueError:
            value = 0
        if value >= 1:
            return value
    return max(1, min(torch_default, available_cores()))


_configured: list[int] = []  # the count set by configure(), once per process


def configure() -> int:
    """Give torch and the BLAS libraries the same thread count (:func:`intra_op_threads`); return it.

    Called by the entry points of the heavy stages (extraction, probing) before their work; the
    first call sets the counts, later ones return them (a count changed since by the user, e.g.
    ``torch.set_num_threads``, is left alone). Imports torch, so the command line stays fast for
    commands that never need it.
    """
    if _configured:
        return _configured[0]
    import torch
    from threadpoolctl import threadpool_limits

    threads = intra_op_threads(torch.get_num_threads())
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    threadpool_limits(limits=threads, user_api="blas")  # process-wide until changed
    _configured.append(threads)
    log.debug("threads: %d intra-op (torch and BLAS)", threads)
    return threads


def worker_init(_worker_id: int = 0) -> None:
    """DataLoader ``worker_init_fn``: one torch thread and one BLAS thread per worker process."""
    import torch
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(1)
    threadpool_limits(limits=1, user_api="blas")


@contextlib.contextmanager
def one_thread(on_cpu: bool = True) -> Iterator[None]:
    """Run the enclosed torch ops on one CPU thread (no-op when ``on_cpu`` is false).

    For short, memory-bound ops (tie checks, votes): split over threads, each op waits for every
    thread, and on a loaded machine that wait dominates (measured 14x slower with 2 threads than
    with 1 on a 2-core machine at load 12).
    """
    if not on_cpu:
        yield
        return
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
