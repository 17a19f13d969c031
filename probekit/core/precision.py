"""Compute precision decided by what the hardware is, never by a stopwatch.

``auto`` (the default of ``probekit extract`` and ``probekit train``) resolves from the device's
kind alone, so the same command computes alike in every process on one machine, and a resume
never re-decides (an unfinished cache's recorded precision is adopted, see
:mod:`probekit.features.extraction`). The table, :data:`AUTO_TABLE`:

=====================================  ======  ===================================================
hardware                               auto    why
=====================================  ======  ===================================================
CUDA GPU with bf16 (Ampere and later)  bf16    tensor cores; fp16 is never chosen automatically:
                                               diffusion UNet activations can overflow its range
CUDA GPU without bf16                  fp32    bf16 would be emulated
CPU with AMX tiles (Sapphire Rapids+)  bf16    measured 1.3x-5.9x faster matmuls than fp32
CPU with AVX512-BF16 but no AMX        fp32    measured: the shipped UNet's forward is not
                                               faster with bf16 autocast (experiments/
                                               bench_precision.py, docs/guide/extraction.md)
any other CPU (AVX2, AVX-512 only)     fp32    bf16 is emulated, orders of magnitude slower
anything else                          fp32
=====================================  ======  ===================================================

An explicit ``bf16`` / ``fp16`` on a device that lacks it natively is honoured, with one warning per
process that says why it will be slow. The environment variable ``PROBEKIT_AUTO_PRECISION``
(fp32, bf16 or fp16) pins what ``auto`` resolves to, for runs that must compute alike on different
machines (the test suite pins it for its whole session); a pinned low precision is then treated as
an explicit one. The module imports torch only inside its functions.
"""

from __future__ import annotations

import functools
import logging
import os
import time
from typing import Any

from probekit.core.errors import ProbekitError

log = logging.getLogger(__name__)

#: The values of ``--precision``.
PRECISION_CHOICES = ("auto", "fp32", "bf16", "fp16")
#: Low precisions in the order ``auto`` tries them.
LOW_PRECISIONS = ("bf16", "fp16")
#: environment variable that pins what ``auto`` resolves to
AUTO_ENV = "PROBEKIT_AUTO_PRECISION"
#: hardware kind -> what ``auto`` resolves to (see the module docstring for the measurements)
AUTO_TABLE: dict[str, str] = {
    "cuda-bf16": "bf16",
    "cuda": "fp32",
    "cpu-amx": "bf16",
    "cpu-avx512-bf16": "fp32",
    "cpu": "fp32",
    "other": "fp32",
}

_warned: set[tuple[str, str]] = set()


def torch_dtype(precision: str) -> Any:
    """The torch dtype of a resolved precision name (``fp32`` -> torch.float32)."""
    import torch

    dtypes = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
    if precision not in dtypes:
        raise ProbekitError(f"unknown precision {precision!r}: use one of {', '.join(PRECISION_CHOICES)}")
    return dtypes[precision]


def native_precisions(device: Any) -> frozenset[str]:
    """Low precisions (``bf16``, ``fp16``) that ``device`` executes in hardware, not by emulation.

    CUDA: bf16 where ``torch.cuda.is_bf16_supported()``; fp16 on compute capability 7.0 and later
    (tensor cores). CPU: bf16 with AVX512-BF16 or AMX tiles; fp16 with AMX-FP16 (as torch reports
    them). Other devices: none.
    """
    import torch

    device = torch.device(device)
    found: set[str] = set()
    if device.type == "cuda":
        if torch.cuda.is_bf16_supported(including_emulation=False):
            found.add("bf16")
        if torch.cuda.get_device_capability(device)[0] >= 7:
            found.add("fp16")
    elif device.type == "cpu":
        cpu = torch.cpu
        if _flag(cpu, "_is_avx512_bf16_supported") or _flag(cpu, "_is_amx_tile_supported"):
            found.add("bf16")
        if _flag(cpu, "_is_amx_fp16_supported"):
            found.add("fp16")
    return frozenset(found)


def _flag(module: Any, name: str) -> bool:
    check = getattr(module, name, None)
    return bool(check()) if callable(check) else False


def matmul_speedup(device: Any, precision: str, size: int = 768, repeats: int = 3) -> float:
    """fp32 time over ``precision`` time of a ``size`` x ``size`` x ``size`` matmul on ``device``.

    Each side is timed ``repeats`` times after one warm-up and the fastest run counts, so a busy
    machine biases the ratio towards neither side. Above 1 means the low precision is faster.
    """
    import torch

    device = torch.device(device)
    generator = torch.Generator().manual_seed(0)
    a = torch.randn(size, size, generator=generator).to(device)
    b = torch.randn(size, size, generator=generator).to(device)

    def best_time(x: torch.Tensor, y: torch.Tensor) -> float:
        times = []
        for _ in range(repeats + 1):
            _sync(device)
            start = time.perf_counter()
            x @ y
            _sync(device)
            times.append(time.perf_counter() - start)
        return min(times[1:])

    dtype = torch_dtype(precision)
    return best_time(a, b) / best_time(a.to(dtype), b.to(dtype))


def _sync(device: Any) -> None:
    if device.type == "cuda":
        import torch

        torch.cuda.synchronize(device)


def hardware_kind(device: Any) -> str:
    """The row of :data:`AUTO_TABLE` that ``device`` falls in (``cuda-bf16``, ``cpu-amx``, ...).

    Read from what torch reports the hardware supports, never from a timing.
    """
    import torch

    device = torch.device(device)
    if device.type == "cuda":
        return "cuda-bf16" if "bf16" in native_precisions(device) else "cuda"
    if device.type == "cpu":
        if _flag(torch.cpu, "_is_amx_tile_supported"):
            return "cpu-amx"
        if _flag(torch.cpu, "_is_avx512_bf16_supported"):
            return "cpu-avx512-bf16"
        return "cpu"
    return "other"


@functools.cache
def _auto(device_type: str, device_index: int | None) -> str:
    import torch

    device = torch.device(device_type, device_index) if device_index is not None else torch.device(device_type)
    kind = hardware_kind(device)
    chosen = AUTO_TABLE[kind]
    log.info("precision auto: %s on this %s", chosen, kind)
    return chosen


def resolve_precision(requested: str, device: Any) -> str:
    """The precision to compute in: ``requested`` unless it is ``auto`` (see the module docstring).

    Raises ProbekitError for a name outside :data:`PRECISION_CHOICES`. An explicit low precision
    that ``device`` lacks natively is returned as asked, with one warning per (device, precision).
    """
    import torch

    if requested not in PRECISION_CHOICES:
        raise ProbekitError(f"unknown --precision {requested!r}: use one of {', '.join(PRECISION_CHOICES)}")
    device = torch.device(device)
    if requested == "auto":
        pinned = os.environ.get(AUTO_ENV, "").strip()
        if not pinned:
            return _auto(device.type, device.index)
        if pinned not in PRECISION_CHOICES[1:]:
            raise ProbekitError(f"{AUTO_ENV}={pinned!r} is not a precision: set it to fp32, bf16 or fp16, or unset it")
        requested = pinned
    if requested in LOW_PRECISIONS and requested not in native_precisions(device):
        key = (device.type, requested)
        if key not in _warned:
            _warned.add(key)
            log.warning(
                "--precision %s: this %s has no native %s instructions, so torch emulates it and it is "
                "usually much slower than fp32; use --precision auto or fp32",
                requested,
                device.type,
                requested,
            )
    return requested


def cpu_description() -> str:
    """CPU model (as ``lscpu`` names it), torch's CPU capability, and native low precisions.

    For benchmark records: ratios between kernels differ between CPUs, so every benchmark names it.
    """
    import platform

    import torch

    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            for line in info:
                if line.lower().startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    native = ",".join(sorted(native_precisions("cpu"))) or "none"
    return f"{model}, torch capability {torch.backends.cpu.get_cpu_capability()}, native low precision: {native}"


def machine_description(device: Any = None) -> str:
    """Everything a timing depends on, in one line for benchmark and run records.

    Platform, :func:`cpu_description`, CPU count, torch version and threads; the GPU's name when
    ``device`` is a CUDA device, or when ``device`` is None and CUDA is visible.
    """
    import platform

    import torch

    text = (
        f"{platform.platform()}, {cpu_description()}, {os.cpu_count()} CPUs, "
        f"torch {torch.__version__} ({torch.get_num_threads()} threads)"
    )
    on_cuda = torch.device(device).type == "cuda" if device is not None else torch.cuda.is_available()
    if on_cuda:
        text += f", GPU {torch.cuda.get_device_name(device)}"
    return text
