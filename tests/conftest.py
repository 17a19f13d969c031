"""Shared fixtures: tiny random diffusers UNets saved in the real on-disk layout."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

#: What ``--precision auto`` resolves to in this test session: set here, at import, so that it holds
#: before any fixture of any scope runs and in every subprocess the tests start. ``auto`` follows
#: the hardware (bf16 on CPUs with AMX), and the tests compare features with float32 references;
#: a value exported by the caller (``PROBEKIT_AUTO_PRECISION=bf16``, which makes ``auto`` act as
#: on such a CPU) is overridden for the same reason and shown in the header.
#: tests/core/test_precision.py tests ``auto`` itself; the run-to-run comparisons that must also
#: hold in bf16 ask for it explicitly.
SESSION_PRECISION = "fp32"
_CALLER_PRECISION = os.environ.get("PROBEKIT_AUTO_PRECISION")
os.environ["PROBEKIT_AUTO_PRECISION"] = SESSION_PRECISION


# Under pytest-xdist (make test-fast) each worker gets its share of the cores: two workers with
# torch's default of one thread per core would run four spinning threads on two cores.
if os.environ.get("PYTEST_XDIST_WORKER"):
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))))


def pytest_report_header(config: pytest.Config) -> str:
    caller = (
        f" (the caller's {_CALLER_PRECISION!r} overridden)"
        if _CALLER_PRECISION not in (None, SESSION_PRECISION)
        else ""
    )
    return f"probekit: --precision auto pinned to {SESSION_PRECISION} for the whole session{caller}"


def make_tiny_unet(in_channels: int = 1, sample_size: int = 16, seed: int = 0):
    from diffusers import UNet2DModel

    torch.manual_seed(seed)
    return UNet2DModel(
        sample_size=sample_size,
        in_channels=in_channels,
        out_channels=in_channels,
        block_out_channels=(8, 16),
        down_block_types=("DownBlock2D", "AttnDownBlock2D"),
        up_block_types=("AttnUpBlock2D", "UpBlock2D"),
        layers_per_block=1,
        norm_num_groups=4,
        attention_head_dim=8,
    )


@pytest.fixture(scope="session")
def tiny_unet_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A saved UNet2DModel (safetensors + config) with a cosine scheduler config beside it."""
    path = tmp_path_factory.mktemp("tiny-unet")
    make_tiny_unet().save_pretrained(path)
    (path / "scheduler_config.json").write_text(
        json.dumps({"_class_name": "DDPMScheduler", "num_train_timesteps": 200, "beta_schedule": "squaredcos_cap_v2"})
    )
    return path


@pytest.fixture(autouse=True)
def private_probekit_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Remembered weight hashes go to a folder of the test session, never to the user's ~/.cache."""
    folder = tmp_path_factory.getbasetemp() / "probekit-cache"
    monkeypatch.setenv("PROBEKIT_CACHE_DIR", str(folder))
    return folder
