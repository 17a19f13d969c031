import itertools
import logging
import os

import pytest
import torch

from probekit.core import precision
from probekit.core.errors import ProbekitError
from probekit.core.precision import resolve_precision


@pytest.fixture(autouse=True)
def auto_is_not_pinned(monkeypatch):
    """The suite pins auto for its session (tests/conftest.py); here auto itself is under test."""
    monkeypatch.delenv("PROBEKIT_AUTO_PRECISION", raising=False)


@pytest.fixture(autouse=True)
def fresh_state():
    precision._auto.cache_clear()
    precision._warned.clear()
    yield
    precision._auto.cache_clear()
    precision._warned.clear()


def simulate_cpu(monkeypatch, *, avx512_bf16=False, amx=False, amx_fp16=False):
    """A CPU with these features; any timing of a matmul fails the test (auto must not measure)."""
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_amx_fp16_supported", lambda: amx_fp16, raising=False)

    def no_timing(*args, **kwargs):
        raise AssertionError("auto must be decided by the hardware, not by a timing")

    monkeypatch.setattr(precision, "matmul_speedup", no_timing)
    monkeypatch.setattr(precision.time, "perf_counter", no_timing)


def simulate_cuda(monkeypatch, *, bf16, major):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: bf16)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (major, 0))


# The documented table (probekit.core.precision), written out by hand.
@pytest.mark.parametrize(
    ("avx512_bf16", "amx", "amx_fp16", "kind", "expected"),
    [
        (False, False, False, "cpu", "fp32"),  # AVX2 or AVX-512 only: bf16 is emulated
        (True, False, False, "cpu-avx512-bf16", "fp32"),  # native bf16, but not faster for the forward
        (True, True, False, "cpu-amx", "bf16"),
        (False, True, True, "cpu-amx", "bf16"),
    ],
)
def test_cpu_auto_follows_the_hardware_table(monkeypatch, avx512_bf16, amx, amx_fp16, kind, expected):
    simulate_cpu(monkeypatch, avx512_bf16=avx512_bf16, amx=amx, amx_fp16=amx_fp16)
    assert precision.hardware_kind("cpu") == kind
    assert resolve_precision("auto", "cpu") == expected


@pytest.mark.subprocess
@pytest.mark.slow
def test_auto_is_the_same_in_every_process_under_any_load(tmp_path):
    """Five fresh processes, the machine kept busy by a sixth: one answer, which the table gives."""
    import subprocess
    import sys

    code = "from probekit.core.precision import resolve_precision as r; print(r('auto', 'cpu'))"
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        env = {k: v for k, v in os.environ.items() if k != "PROBEKIT_AUTO_PRECISION"}
        answers = {
            subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True).stdout
            for _ in range(5)
        }
    finally:
        busy.kill()
        busy.wait()
    assert answers == {precision.AUTO_TABLE[precision.hardware_kind("cpu")] + "\n"}


@pytest.mark.parametrize(("bf16", "major", "expected"), [(True, 8, "bf16"), (False, 7, "fp32"), (False, 6, "fp32")])
def test_cuda_uses_bf16_only_where_supported(monkeypatch, bf16, major, expected):
    simulate_cuda(monkeypatch, bf16=bf16, major=major)
    assert resolve_precision("auto", "cuda") == expected


def test_auto_never_picks_a_precision_the_device_lacks(monkeypatch):
    for avx, amx, amx16 in itertools.product([False, True], [False, True], [False, True]):
        precision._auto.cache_clear()
        simulate_cpu(monkeypatch, avx512_bf16=avx, amx=amx, amx_fp16=amx16)
        native = {"bf16"} if (avx or amx) else set()
        native |= {"fp16"} if amx16 else set()
        assert resolve_precision("auto", "cpu") in {"fp32"} | native
    for bf16, major in itertools.product([False, True], [5, 7, 9]):
        precision._auto.cache_clear()
        simulate_cuda(monkeypatch, bf16=bf16, major=major)
        assert resolve_precision("auto", "cuda") in ({"fp32", "bf16"} if bf16 else {"fp32"})


def test_explicit_bf16_without_native_support_warns_once(monkeypatch, caplog):
    simulate_cpu(monkeypatch)
    with caplog.at_level(logging.WARNING, logger="probekit.core.precision"):
        assert resolve_precision("bf16", "cpu") == "bf16"
        assert resolve_precision("bf16", "cpu") == "bf16"
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "emulates" in warnings[0] and "fp32" in warnings[0]


def test_explicit_bf16_with_native_support_is_silent(monkeypatch, caplog):
    simulate_cpu(monkeypatch, avx512_bf16=True)
    with caplog.at_level(logging.WARNING, logger="probekit.core.precision"):
        assert resolve_precision("bf16", "cpu") == "bf16"
    assert not caplog.records


def test_unknown_precision_is_one_clear_error():
    with pytest.raises(ProbekitError, match="use one of auto, fp32, bf16, fp16"):
        resolve_precision("int8", "cpu")


def test_matmul_probe_measures_a_positive_ratio():
    assert precision.matmul_speedup("cpu", "fp32", size=64, repeats=1) > 0


def test_the_environment_pins_auto(monkeypatch):
    simulate_cpu(monkeypatch, amx=True)
    monkeypatch.setenv("PROBEKIT_AUTO_PRECISION", "fp32")
    assert resolve_precision("auto", "cpu") == "fp32"
    monkeypatch.setenv("PROBEKIT_AUTO_PRECISION", "int4")
    with pytest.raises(ProbekitError, match="PROBEKIT_AUTO_PRECISION"):
        resolve_precision("auto", "cpu")


def _cpuinfo_model() -> str | None:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            return next((line.split(":", 1)[1].strip() for line in info if line.lower().startswith("model name")), None)
    except OSError:
        return None


def test_machine_description_names_cpu_model_cores_and_torch(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    text = precision.machine_description()
    model = _cpuinfo_model()
    if model:
        assert model in text
    assert f"capability {torch.backends.cpu.get_cpu_capability()}" in text
    assert f"{os.cpu_count()} CPUs" in text
    assert f"torch {torch.__version__} ({torch.get_num_threads()} threads)" in text
    assert "GPU" not in text


def test_machine_description_names_the_gpu_it_runs_on(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Simulated GPU 80GB")
    assert precision.machine_description("cuda:0").endswith(", GPU Simulated GPU 80GB")
    assert precision.machine_description().endswith(", GPU Simulated GPU 80GB")  # visible, none named
    assert "GPU" not in precision.machine_description("cpu")  # a CPU run does not name the idle GPU
