import json

import numpy as np
import pytest
import torch

from probekit.core.errors import ProbekitError
from probekit.core.pooling import Pooling
from probekit.models import PixelsBackbone, load_backbone, state_dict_sha256
from tests.conftest import make_tiny_unet


def test_folder_loads_weights_and_scheduler_config(tiny_unet_dir):
    backbone = load_backbone(str(tiny_unet_dir))
    reference = make_tiny_unet()
    for name, tensor in reference.state_dict().items():
        assert torch.equal(backbone.net.state_dict()[name], tensor)
    assert backbone.schedule.num_train_timesteps == 200 and backbone.schedule.beta_schedule == "squaredcos_cap_v2"
    assert backbone.input_size == (16, 16) and backbone.input_channels == 1


def test_missing_scheduler_config_means_ddpm_linear_1000(tmp_path):
    make_tiny_unet().save_pretrained(tmp_path)
    schedule = load_backbone(str(tmp_path)).schedule
    assert (schedule.num_train_timesteps, schedule.beta_schedule, schedule.beta_start, schedule.beta_end) == (
        1000,
        "linear",
        1e-4,
        0.02,
    )


def test_pipeline_layout_with_unet_and_scheduler_subfolders(tmp_path):
    make_tiny_unet().save_pretrained(tmp_path / "unet")
    (tmp_path / "scheduler").mkdir()
    (tmp_path / "scheduler" / "scheduler_config.json").write_text(json.dumps({"num_train_timesteps": 300}))
    (tmp_path / "model_index.json").write_text(json.dumps({"_class_name": "DDPMPipeline"}))
    backbone = load_backbone(str(tmp_path))
    assert backbone.schedule.num_train_timesteps == 300


def test_weights_hash_is_over_tensors(tiny_unet_dir):
    backbone = load_backbone(str(tiny_unet_dir))
    assert backbone.weights_sha256() == state_dict_sha256(make_tiny_unet())
    assert backbone.weights_sha256() != state_dict_sha256(make_tiny_unet(seed=1))


def test_random_init_is_a_seeded_twin(tiny_unet_dir):
    trained = load_backbone(str(tiny_unet_dir))
    twin_a = load_backbone(str(tiny_unet_dir), random_init=True, seed=3)
    twin_b = load_backbone(str(tiny_unet_dir), random_init=True, seed=3)
    assert [l.name for l in twin_a.layers()] == [l.name for l in trained.layers()]
    assert twin_a.weights_sha256() == twin_b.weights_sha256() != trained.weights_sha256()
    assert "random init" in twin_a.model_id
    # the global RNG is left alone
    torch.manual_seed(0)
    expected = torch.rand(1)
    torch.manual_seed(0)
    load_backbone(str(tiny_unet_dir), random_init=True, seed=9)
    assert torch.equal(torch.rand(1), expected)


def test_config_only_folder_needs_random_init(tmp_path):
    make_tiny_unet().save_config(tmp_path)
    with pytest.raises(ProbekitError, match="--random-init"):
        load_backbone(str(tmp_path))
    assert load_backbone(str(tmp_path), random_init=True).layers()


def test_pixels_backbone_is_the_flattened_image():
    backbone = load_backbone("pixels")
    assert isinstance(backbone, PixelsBackbone)
    x = torch.rand(2, 1, 4, 4)
    out = backbone.features(x, backbone.schedule.point(0), ["pixels"], Pooling())
    np.testing.assert_array_equal(out["pixels"].numpy(), x.numpy().reshape(2, 16))
    with pytest.raises(ProbekitError, match="random-init"):
        load_backbone("pixels", random_init=True)


@pytest.mark.parametrize("spec", ["/no/such/model", "./missing-folder"])
def test_missing_model_path_is_a_clear_error(spec):
    with pytest.raises(ProbekitError, match="not found"):
        load_backbone(spec)


def test_folder_that_is_not_a_model(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(ProbekitError, match="not a model"):
        load_backbone(str(tmp_path))


# ------------------------------------------------------------------------------ damaged checkpoints


class _TouchesMarker:
    """Unpickling this would run ``touch marker``."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.marker}",))


def _copy_of(tiny_unet_dir, tmp_path):
    import shutil

    folder = tmp_path / "unet"
    shutil.copytree(tiny_unet_dir, folder)
    return folder


def _one_line(error: pytest.ExceptionInfo) -> str:
    message = str(error.value)
    assert "\n" not in message
    return message


def test_config_that_is_not_json(tiny_unet_dir, tmp_path):
    folder = _copy_of(tiny_unet_dir, tmp_path)
    (folder / "config.json").write_text("{ this is not json")
    with pytest.raises(ProbekitError, match=r"unet/config.json is not valid JSON .*restore") as error:
        load_backbone(str(folder))
    _one_line(error)


@pytest.mark.parametrize("damage", ["garbage", "truncated", "empty"])
def test_damaged_weights_file(damage, tiny_unet_dir, tmp_path):
    folder = _copy_of(tiny_unet_dir, tmp_path)
    weights = folder / "diffusion_pytorch_model.safetensors"
    raw = weights.read_bytes()
    weights.write_bytes(
        {"garbage": np.random.default_rng(0).bytes(800), "truncated": raw[: len(raw) // 3], "empty": b""}[damage]
    )
    with pytest.raises(ProbekitError, match=r"diffusion_pytorch_model.safetensors .*corrupt.*re-download") as error:
        load_backbone(str(folder))
    _one_line(error)


def test_channel_counts_that_differ_from_the_weights(tiny_unet_dir, tmp_path):
    folder = _copy_of(tiny_unet_dir, tmp_path)
    config = json.loads((folder / "config.json").read_text())
    config["in_channels"] = config["out_channels"] = 3  # the weights were saved for 1 channel
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ProbekitError) as error:
        load_backbone(str(folder))
    message = _one_line(error)
    # conv_in.weight is (out=8, in, 3, 3); conv_out.weight is (out, in=8, 3, 3); conv_out.bias is (out,)
    assert "conv_in.weight is [8, 1, 3, 3] in the weights but [8, 3, 3, 3]" in message
    assert "conv_out.weight is [1, 8, 3, 3] in the weights but [3, 8, 3, 3]" in message
    assert "and 1 more" in message and "config.json" in message


def test_weights_missing_or_extra_are_refused_not_randomly_filled(tiny_unet_dir, tmp_path):
    from safetensors.torch import load_file, save_file

    folder = _copy_of(tiny_unet_dir, tmp_path)
    weights = folder / "diffusion_pytorch_model.safetensors"
    state = load_file(weights)
    del state["conv_out.bias"]
    state["head.weight"] = torch.zeros(3)
    save_file(state, weights)
    with pytest.raises(
        ProbekitError, match=r"the weights lack conv_out.bias; the config has no place for head.weight"
    ) as error:
        load_backbone(str(folder))
    _one_line(error)


def test_pickled_bin_weights_that_run_code(tiny_unet_dir, tmp_path):
    import shutil

    folder = tmp_path / "unet"
    folder.mkdir()
    shutil.copy(tiny_unet_dir / "config.json", folder)
    marker = tmp_path / "pwned"
    torch.save({"conv_in.weight": _TouchesMarker(marker)}, folder / "diffusion_pytorch_model.bin")
    with pytest.raises(ProbekitError, match=r"refusing to load .*diffusion_pytorch_model.bin") as error:
        load_backbone(str(folder))
    _one_line(error)
    assert not marker.exists()


@pytest.mark.parametrize("suffix", [".pt", ".pth"])
def test_pickled_dit_checkpoint_that_runs_code(suffix, tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / f"model{suffix}"
    torch.save({"x_embedder.proj.weight": _TouchesMarker(marker)}, path)
    for spec in (f"dit:{path}", str(path)):
        with pytest.raises(ProbekitError, match=f"model{suffix}") as error:
            load_backbone(spec)
        _one_line(error)
    assert not marker.exists()


@pytest.mark.parametrize("content", [b"a text file\n", bytes(range(256)) * 4])
def test_file_that_is_not_a_checkpoint(content, tmp_path):
    (tmp_path / "model.ckpt").write_bytes(content)
    with pytest.raises(ProbekitError, match="not a model probekit can read") as error:
        load_backbone(str(tmp_path / "model.ckpt"))
    _one_line(error)


def test_unreadable_model_folder_simulated(tiny_unet_dir, monkeypatch):
    import os

    real_access = os.access
    denied = str(tiny_unet_dir)
    monkeypatch.setattr(os, "access", lambda p, mode, **kw: False if str(p) == denied else real_access(p, mode, **kw))
    with pytest.raises(ProbekitError, match=r"cannot read model .*: permission denied; make it readable"):
        load_backbone(denied)


def test_unreadable_model_folder(tmp_path):
    import os

    if os.geteuid() == 0:
        pytest.skip("root reads any folder; test_unreadable_model_folder_simulated covers this")
    make_tiny_unet().save_pretrained(tmp_path / "model")
    (tmp_path / "model").chmod(0)
    try:
        with pytest.raises(ProbekitError, match="permission denied"):
            load_backbone(str(tmp_path / "model"))
    finally:
        (tmp_path / "model").chmod(0o755)


def test_pickled_ddae_checkpoint_that_runs_code(tmp_path):
    from pathlib import Path

    config = Path(__file__).resolve().parents[1] / "fixtures" / "ddae" / "ddpm_unet.yaml"
    marker = tmp_path / "pwned"
    path = tmp_path / "model_100.pth"
    torch.save({"EMA": {"ema_model.nn_model.w": _TouchesMarker(marker)}}, path)
    with pytest.raises(ProbekitError, match="model_100.pth") as error:
        load_backbone(f"ddae:{config}:{path}")
    _one_line(error)
    assert not marker.exists()
