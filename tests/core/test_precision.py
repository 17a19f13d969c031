import itertools
import logging
import os

import pytest
import torch

from probekit.core import precision
from probekit.core.errors import ProbekitError
from probekit.core.precision import resolve_precision


@pytest.fixture(autouse=True)
def auto_precision_is_fp32(monkeypatch):
    """Overrides the suite-wide fixture: here auto itself is under test."""
    monkeypatch.delenv("PROBEKIT_AUTO_PRECISION", raising=False)


@pytest.fixture(autouse=True)
def fresh_state():
    precision._auto.cache_clear()
    precision._warned.clear()
    yield
    precision._auto.cache_clear()
    precision._warned.clear()


def simulate_cpu(monkeypatch, *, avx512_bf16=False, amx=False, amx_fp16=False, speedup=None):
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_amx_fp16_supported", lambda: amx_fp16, raising=False)
    calls = []

    def fake_speedup(device, name, **_):
        calls.append(name)
        if speedup is None:
            raise AssertionError("the matmul probe must not run without native support")
        return speedup

    monkeypatch.setattr(precision, "matmul_speedup", fake_speedup)
    return calls


def simulate_cuda(monkeypatch, *, bf16, major):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: bf16)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (major, 0))


def test_cpu_without_native_bf16_stays_fp32_without_measuring(monkeypatch):
    calls = simulate_cpu(monkeypatch)
    assert resolve_precision("auto", "cpu") == "fp32"
    assert calls == []


@pytest.mark.parametrize(("speedup", "expected"), [(0.8, "fp32"), (1.1, "fp32"), (2.5, "bf16")])
def test_cpu_with_native_bf16_follows_the_measurement(monkeypatch, speedup, expected):
    calls = simulate_cpu(monkeypatch, avx512_bf16=True, speedup=speedup)
    assert resolve_precision("auto", "cpu") == expected
    assert calls == ["bf16"]


@pytest.mark.parametrize(("bf16", "major", "expected"), [(True, 8, "bf16"), (False, 7, "fp32"), (False, 6, "fp32")])
def test_cuda_uses_bf16_only_where_supported(monkeypatch, bf16, major, expected):
    simulate_cuda(monkeypatch, bf16=bf16, major=major)
    assert resolve_precision("auto", "cuda") == expected


def test_auto_never_picks_a_precision_the_device_lacks(monkeypatch):
    for avx, amx, amx16, speedup in itertools.product([False, True], [False, True], [False, True], [0.5, 3.0]):
        precision._auto.cache_clear()
        simulate_cpu(monkeypatch, avx512_bf16=avx, amx=amx, amx_fp16=amx16, speedup=speedup)
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
    calls = simulate_cpu(monkeypatch, avx512_bf16=True, speedup=3.0)
    monkeypatch.setenv("PROBEKIT_AUTO_PRECISION", "fp32")
    assert resolve_precision("auto", "cpu") == "fp32"
    assert calls == []
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
