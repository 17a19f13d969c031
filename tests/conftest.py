"""Shared fixtures: tiny random diffusers UNets saved in the real on-disk layout."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch


@pytest.fixture(autouse=True)
def auto_precision_is_fp32(monkeypatch: pytest.MonkeyPatch) -> None:
    """``--precision auto`` depends on the machine (bf16 where native and faster); tests compare
    features with float32 references, so auto is pinned to fp32 here, in subprocesses too.
    tests/core/test_precision.py tests auto itself (it overrides this fixture).
    """
    monkeypatch.setenv("PROBEKIT_AUTO_PRECISION", "fp32")
    monkeypatch.setattr("probekit.probes.knn._low_precision_is_faster", lambda *args: False)


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
