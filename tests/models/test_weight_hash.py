"""Weight hashes remembered by (path, size, mtime): an unchanged checkpoint is not hashed again."""

import os

import pytest

import probekit.models.backbone as backbone_module
from probekit.models import load_backbone
from probekit.models.backbone import state_dict_sha256
from probekit.models.weight_hash import local_sources


@pytest.fixture
def hash_calls(monkeypatch):
    calls = {"n": 0}
    original = backbone_module.state_dict_sha256

    def counted(module):
        calls["n"] += 1
        return original(module)

    monkeypatch.setattr(backbone_module, "state_dict_sha256", counted)
    return calls


def test_second_open_of_an_unchanged_checkpoint_costs_no_hash(tiny_unet_dir, tmp_path, monkeypatch, hash_calls):
    monkeypatch.setenv("PROBEKIT_CACHE_DIR", str(tmp_path / "cache"))
    first = load_backbone(str(tiny_unet_dir)).weights_sha256()
    assert hash_calls["n"] == 1
    second = load_backbone(str(tiny_unet_dir)).weights_sha256()
    assert hash_calls["n"] == 1 and second == first == state_dict_sha256(load_backbone(str(tiny_unet_dir)).net)
    assert (tmp_path / "cache" / "weight-hashes.json").is_file()


def test_a_touched_file_or_another_random_init_is_hashed_afresh(tiny_unet_dir, tmp_path, monkeypatch, hash_calls):
    import shutil

    monkeypatch.setenv("PROBEKIT_CACHE_DIR", str(tmp_path / "cache"))
    model = tmp_path / "model"
    shutil.copytree(tiny_unet_dir, model)
    load_backbone(str(model)).weights_sha256()
    weights = next(model.glob("*.safetensors"))
    stat = weights.stat()
    os.utime(weights, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    load_backbone(str(model)).weights_sha256()
    assert hash_calls["n"] == 2
    twin = load_backbone(str(model), random_init=True, seed=3).weights_sha256()
    assert hash_calls["n"] == 3 and twin == state_dict_sha256(load_backbone(str(model), random_init=True, seed=3).net)
    load_backbone(str(model), random_init=True, seed=4).weights_sha256()
    assert hash_calls["n"] == 4


def test_hub_ids_name_no_local_source(tmp_path):
    assert local_sources("owner/name-that-is-not-here") == []
    ckpt = tmp_path / "m.pt"
    ckpt.write_bytes(b"")
    assert local_sources(f"dit:{ckpt}?vae={tmp_path}") == sorted([ckpt.resolve(), tmp_path.resolve()])
