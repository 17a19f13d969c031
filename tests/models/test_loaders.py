import json

import numpy as np
import pytest
import torch

from probekit.errors import ProbekitError
from probekit.models import PixelsBackbone, load_backbone, state_dict_sha256
from probekit.pooling import Pooling
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
    assert (schedule.num_train_timesteps, schedule.beta_schedule, schedule.beta_start, schedule.beta_end) == (1000, "linear", 1e-4, 0.02)


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
