import csv
import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from probekit.core.errors import ProbekitError
from probekit.models import load_backbone
from probekit.train import TrainConfig, train

TINY_UNET = {
    "sample_size": 16,
    "in_channels": 1,
    "out_channels": 1,
    "block_out_channels": [8, 16],
    "down_block_types": ["DownBlock2D", "AttnDownBlock2D"],
    "up_block_types": ["AttnUpBlock2D", "UpBlock2D"],
    "layers_per_block": 1,
    "norm_num_groups": 4,
    "attention_head_dim": 8,
}


@pytest.fixture()
def tiny_npz(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "tiny.npz"
    np.savez(
        path,
        x=rng.integers(0, 256, size=(40, 12, 12), dtype=np.uint8),
        y=np.arange(40) % 4,
        x_test=rng.integers(0, 256, size=(8, 12, 12), dtype=np.uint8),
        y_test=np.arange(8) % 4,
    )
    return str(path)


def _config(data, **overrides):
    settings = dict(
        data=data,
        unet=TINY_UNET,
        batch_size=8,
        total_steps=6,
        checkpoint_every=3,
        warmup_steps=2,
        ema_decay=0.9,
        log_every=1,
        sample_count=4,
        sample_steps=2,
        num_train_timesteps=100,
    )
    settings.update(overrides)
    return TrainConfig.from_dict(settings)


def _weights(folder):
    return load_file(str(folder / "diffusion_pytorch_model.safetensors"))


@pytest.mark.slow
def test_a_few_steps_write_model_samples_record_and_loss(tiny_npz, tmp_path):
    model_dir = train(_config(tiny_npz), tmp_path / "run", progress=False)
    assert (model_dir / "config.json").is_file() and (model_dir / "scheduler_config.json").is_file()
    assert sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir()) == ["step-0000003", "step-0000006"]
    assert (tmp_path / "run" / "samples" / "step-0000006.png").read_bytes()[:4] == b"\x89PNG"
    record = json.loads((tmp_path / "run" / "record.json").read_text())
    assert record["steps"] == 6 and record["images_seen"] == 48 and record["train_images"] == 40
    rows = list(csv.DictReader((tmp_path / "run" / "loss.csv").open()))
    assert [int(r["step"]) for r in rows] == [1, 2, 3, 4, 5, 6]
    assert all(np.isfinite(float(r["loss"])) for r in rows)
    # the model moved away from its initialisation
    state = torch.load(tmp_path / "run" / "state.pt", weights_only=True)
    assert state["step"] == 6


@pytest.mark.slow
def test_resume_gives_the_same_weights_as_an_uninterrupted_run(tiny_npz, tmp_path):
    config = _config(tiny_npz)
    train(config, tmp_path / "straight", progress=False)
    train(config, tmp_path / "resumed", progress=False, stop_at=3)  # interrupted after the step-3 checkpoint
    assert torch.load(tmp_path / "resumed" / "state.pt", weights_only=True)["step"] == 3
    train(config, tmp_path / "resumed", progress=False)
    straight, resumed = _weights(tmp_path / "straight" / "model"), _weights(tmp_path / "resumed" / "model")
    for name, tensor in straight.items():
        torch.testing.assert_close(resumed[name], tensor, rtol=0, atol=0)
    rows = list(csv.DictReader((tmp_path / "resumed" / "loss.csv").open()))
    assert [int(r["step"]) for r in rows] == [1, 2, 3, 4, 5, 6]


def test_a_different_recipe_in_the_same_folder_is_refused(tiny_npz, tmp_path):
    train(_config(tiny_npz, total_steps=3), tmp_path / "run", progress=False)
    with pytest.raises(ProbekitError, match="different recipe"):
        train(_config(tiny_npz, lr=1e-3), tmp_path / "run", progress=False)


def test_saved_checkpoint_loads_through_model_and_gives_the_same_features(tiny_npz, tmp_path):
    model_dir = train(_config(tiny_npz, total_steps=3), tmp_path / "run", progress=False)
    backbone = load_backbone(str(model_dir))
    assert backbone.schedule.num_train_timesteps == 100
    # the same weights built by hand from the safetensors file, as an independent reference
    from diffusers import UNet2DModel

    reference = UNet2DModel(**TINY_UNET)
    reference.load_state_dict(_weights(model_dir))
    x = torch.randn(3, 1, 16, 16)
    captured = {}
    handle = reference.mid_block.register_forward_hook(lambda _m, _a, out: captured.update(out=out))
    with torch.no_grad():
        reference(x, torch.full((3,), 10.0))
    handle.remove()
    from probekit.core.pooling import Pooling

    feats = backbone.features(x, backbone.schedule.point(10), ["mid_block"], Pooling())
    torch.testing.assert_close(feats["mid_block"], captured["out"].mean(dim=(2, 3)))


def test_bad_recipes_are_refused(tiny_npz, tmp_path):
    with pytest.raises(ProbekitError, match="unknown training setting"):
        TrainConfig.from_dict({"learning_rate": 1.0})
    with pytest.raises(ProbekitError, match="precision"):
        TrainConfig.from_dict({"precision": "fp8"})
    with pytest.raises(ProbekitError, match="fewer than one batch"):
        train(_config(tiny_npz, batch_size=64), tmp_path / "run", progress=False)


def test_a_corrupt_state_file_is_one_clear_error(tiny_npz, tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "state.pt").write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(
        ProbekitError, match=r"cannot resume from .*state\.pt .*delete it to start the run over"
    ) as info:
        train(_config(tiny_npz, total_steps=2), tmp_path / "run", progress=False)
    assert "\n" not in str(info.value)


def test_a_lazy_hf_dataset_trains_exactly_like_the_same_pixels_in_memory(tiny_npz, tmp_path):
    datasets = pytest.importorskip("datasets")
    import io

    from PIL import Image

    arrays = np.load(tiny_npz)

    def table(x, y):
        encoded = []
        for image in x:
            buffer = io.BytesIO()
            Image.fromarray(image).save(buffer, format="PNG")  # lossless grayscale
            encoded.append({"bytes": buffer.getvalue(), "path": None})
        features = datasets.Features({"image": datasets.Image(), "digit": datasets.Value("int64")})
        return datasets.Dataset.from_dict({"image": encoded, "digit": y.tolist()}, features=features)

    hf = tmp_path / "hf"
    datasets.DatasetDict(
        train=table(arrays["x"], arrays["y"]), test=table(arrays["x_test"], arrays["y_test"])
    ).save_to_disk(str(hf))
    steps = dict(total_steps=3, checkpoint_every=3)
    from_memory = train(_config(tiny_npz, **steps), tmp_path / "memory", progress=False)
    lazy = train(_config(f"hf-disk:{hf}", label_column="digit", **steps), tmp_path / "lazy", progress=False)
    expected, got = _weights(from_memory), _weights(lazy)
    assert expected.keys() == got.keys()
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], rtol=0, atol=0)


def test_an_auto_run_resumes_in_the_precision_it_started_in(tiny_npz, tmp_path):
    """Started where auto meant bf16, resumed where it means fp32 (this session pins fp32): bf16 is kept."""
    train(_config(tiny_npz, precision="bf16", total_steps=3), tmp_path / "run", progress=False, stop_at=2)
    train(_config(tiny_npz, precision="auto", total_steps=3), tmp_path / "run", progress=False)
    record = json.loads((tmp_path / "run" / "record.json").read_text())
    assert record["recipe"]["precision"] == "bf16" and record["steps"] == 3
