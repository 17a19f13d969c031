"""DDAE checkpoints: parity with DDAE's own code (golden fixtures), schedules, strict loading, CLI."""

from __future__ import annotations

import lzma
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from probekit.cli import main
from probekit.core.errors import ProbekitError
from probekit.core.pooling import Pooling
from probekit.data.base import ImageDataset, ImageSplit
from probekit.features.cache import FeatureCache
from probekit.features.extraction import ExtractConfig, extract
from probekit.models import load_backbone, select_layers
from probekit.models.ddae import DDAEEDMSchedule, EDMParams, parse_spec

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "ddae"
CASES = {"ddpm_unet": [1, 11, 300, 1000], "edm_ddpmpp": [1, 4, 10, 18]}
DDPM_LAYERS = [
    "stem",
    "in_1",
    "downsample_1",
    "in_2",
    "mid_res1",
    "mid_attn",
    "mid",
    "out_1",
    "out_2",
    "upsample_1",
    "out_3",
    "out_4",
]


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> dict[str, Path]:
    """The fixture checkpoints, decompressed to the .pth files DDAE's train.py wrote."""
    folder = tmp_path_factory.mktemp("ddae")
    paths = {}
    for name in CASES:
        path = folder / f"{name}.pth"
        path.write_bytes(lzma.decompress((FIXTURES / f"{name}.pth.xz").read_bytes()))
        paths[name] = path
    return paths


def _spec(name: str, checkpoint: Path, entry: str = "") -> str:
    return f"ddae:{FIXTURES / (name + '.yaml')}:{checkpoint}{entry}"


def _expected(name: str) -> dict[str, np.ndarray]:
    with np.load(FIXTURES / f"{name}_expected.npz") as data:
        return dict(data)


def _error(fn, *args, **kwargs) -> str:
    with pytest.raises(ProbekitError) as info:
        fn(*args, **kwargs)
    message = str(info.value)
    assert "\n" not in message
    return message


# ---------------------------------------------------------------- parity with DDAE's own code


@pytest.mark.parametrize("name", list(CASES))
@pytest.mark.parametrize("entry", ["ema", "model"])
def test_pooled_features_equal_ddae_get_feature(checkpoints, name, entry):
    backbone = load_backbone(_spec(name, checkpoints[name], "#MODEL" if entry == "model" else ""))
    expected = _expected(name)
    names = [layer.name for layer in backbone.layers()]
    # DDAE's own decoder readout names, exactly as its get_feature returns them
    assert {n for n in names if n.startswith("out_")} == {
        k.split("/")[-1] for k in expected if k.startswith("ema/1/out_")
    }
    checked = 0
    for t in CASES[name]:
        if f"x_noised/{entry}/{t}" not in expected:
            continue
        x_noised = torch.from_numpy(expected[f"x_noised/{entry}/{t}"])
        feats = backbone.features(x_noised, backbone.schedule.point(t), names, Pooling())
        for layer in names:
            np.testing.assert_allclose(
                feats[layer].numpy(), expected[f"{entry}/{t}/{layer}"], rtol=0, atol=1e-5, err_msg=f"{layer} t={t}"
            )
            checked += 1
    assert checked >= len(names)


def test_ema_and_model_entries_hold_different_weights(checkpoints):
    ema = load_backbone(_spec("ddpm_unet", checkpoints["ddpm_unet"], "#EMA"))
    online = load_backbone(_spec("ddpm_unet", checkpoints["ddpm_unet"], "#model"))
    assert ema.weights_sha256() != online.weights_sha256()
    default = load_backbone(_spec("ddpm_unet", checkpoints["ddpm_unet"]))
    assert default.weights_sha256() == ema.weights_sha256()


@pytest.mark.parametrize("name", list(CASES))
def test_noising_and_output_equal_ddae(checkpoints, name):
    backbone = load_backbone(_spec(name, checkpoints[name]))
    expected = _expected(name)
    x0 = torch.from_numpy(expected["x"]) * 2 - 1  # DDAE maps [0, 1] to [-1, 1]
    for t in CASES[name]:
        noisy = backbone.schedule.add_noise(x0, torch.from_numpy(expected[f"noise/{t}"]), backbone.schedule.point(t))
        np.testing.assert_allclose(noisy.numpy(), expected[f"x_noised/ema/{t}"], rtol=2e-6, atol=1e-5)
    t = CASES[name][1]
    out = backbone.forward(torch.from_numpy(expected[f"x_noised/ema/{t}"]), backbone.schedule.point(t))
    np.testing.assert_allclose(out.numpy(), expected[f"output/ema/{t}"], rtol=0, atol=1e-5)


# ---------------------------------------------------------------- schedules vs hand-derived numbers


def test_ddpm_schedule_matches_hand_derived_and_ddae(checkpoints):
    schedule = load_backbone(_spec("ddpm_unet", checkpoints["ddpm_unet"])).schedule
    betas = np.linspace(1e-4, 0.02, 1000)
    for t in (1, 2, 11, 500, 1000):
        alpha_bar = np.prod(1 - betas[:t])  # steps 1..t
        point = schedule.point(t)
        assert point.t == t and point.model_input == pytest.approx(t / 1000, rel=1e-12)
        assert point.alpha_bar == pytest.approx(alpha_bar, rel=1e-10)
        assert point.sigma == pytest.approx(math.sqrt((1 - alpha_bar) / alpha_bar), rel=1e-9)
        assert point.logsnr == pytest.approx(math.log(alpha_bar / (1 - alpha_bar)), rel=1e-9)
    assert schedule.point(1).alpha_bar == pytest.approx(1 - 1e-4, rel=1e-12)
    ddae = _expected("ddpm_unet")["alphabar_t"]  # float32, index 0 = clean
    np.testing.assert_allclose([schedule.point(t).alpha_bar for t in range(1, 1001)], ddae[1:], rtol=2e-5)
    grid = schedule.default_grid()
    assert grid == sorted(set(grid)) and grid[0] == 1 and grid[-1] <= 1000 and {1, 11, 21} <= set(grid)


def test_ddpm_refuses_t_outside_1_to_n_T(checkpoints):
    schedule = load_backbone(_spec("ddpm_unet", checkpoints["ddpm_unet"])).schedule
    assert "1..1000" in _error(schedule.point, 0)
    assert "1..1000" in _error(schedule.point, 1001)
    _error(schedule.point, 2.5)


def test_edm_schedule_matches_hand_derived_and_ddae(checkpoints):
    schedule = load_backbone(_spec("edm_ddpmpp", checkpoints["edm_ddpmpp"])).schedule
    lo, hi, rho, steps = 0.002 ** (1 / 7), 80 ** (1 / 7), 7, 18
    expected = _expected("edm_ddpmpp")
    for t in range(1, steps + 1):
        sigma = (hi + (steps - t) / (steps - 1) * (lo - hi)) ** rho  # t = 1 -> sigma_min
        point = schedule.point(t)
        assert point.sigma == pytest.approx(sigma, rel=1e-12)
        assert point.alpha_bar == pytest.approx(1 / (1 + sigma**2), rel=1e-12)
        assert point.logsnr == pytest.approx(-2 * math.log(sigma), rel=1e-12)
        assert point.model_input == pytest.approx(math.log(sigma) / 4, rel=1e-12)  # c_noise
        assert point.sigma == pytest.approx(float(expected["sigmas_reversed"][t]), rel=1e-6)
    assert schedule.point(1).sigma == pytest.approx(0.002) and schedule.point(18).sigma == pytest.approx(80)
    for t in CASES["edm_ddpmpp"]:
        assert schedule.point(t).sigma == pytest.approx(float(expected[f"sigma/{t}"]), rel=1e-6)
    grid = schedule.default_grid()
    assert grid[0] == 1 and 4 in grid and grid == sorted(set(grid)) and max(grid) <= 18
    c_skip, c_out, c_in, c_noise = schedule.preconditioning(0.3)
    assert (c_skip, c_out, c_in) == pytest.approx((0.25 / 0.34, 0.15 / math.sqrt(0.34), 1 / math.sqrt(0.34)))


def test_edm_noising_is_variance_exploding():
    schedule = DDAEEDMSchedule(EDMParams(sigma_data=0.5, sigma_min=0.002, sigma_max=80.0, rho=7.0))
    x0, noise = torch.full((1, 1, 2, 2), 0.5), torch.full((1, 1, 2, 2), -1.0)
    point = schedule.point(10)
    np.testing.assert_allclose(schedule.add_noise(x0, noise, point).numpy(), 0.5 - point.sigma, rtol=1e-6)


def test_edm_refuses_index_0_and_past_the_last_step():
    schedule = DDAEEDMSchedule(EDMParams(sigma_data=0.5, sigma_min=0.002, sigma_max=80.0, rho=7.0))
    message = _error(schedule.point, 0)
    assert "sigma = 0" in message and "1..18" in message
    assert "1..18" in _error(schedule.point, 19)


# ---------------------------------------------------------------- layer registry and early stop


def test_layer_registry_names_order_and_shapes(checkpoints):
    backbone = load_backbone(_spec("ddpm_unet", checkpoints["ddpm_unet"]))
    layers = backbone.layers()
    assert [layer.name for layer in layers] == DDPM_LAYERS
    assert [layer.depth for layer in layers] == list(range(len(layers)))
    by_name = {layer.name: layer for layer in layers}
    # config: 8x8 input, n_channels 32, ch_mults [1, 2]
    assert (by_name["in_1"].channels, by_name["in_1"].resolution) == (32, "8x8")
    assert (by_name["in_2"].channels, by_name["in_2"].resolution) == (64, "4x4")
    assert (by_name["mid"].stage, by_name["mid"].channels) == ("mid", 64)
    assert (by_name["out_4"].stage, by_name["out_4"].channels, by_name["out_4"].resolution) == ("up", 32, "8x8")
    assert by_name["downsample_1"].stage == "down" and by_name["upsample_1"].stage == "up"
    # DDAE's module paths are aliases
    assert select_layers(layers, "up.4,middle,down.0") == ["in_1", "mid", "out_4"]


def test_forward_stops_after_the_deepest_requested_layer(checkpoints):
    backbone = load_backbone(_spec("edm_ddpmpp", checkpoints["edm_ddpmpp"]))
    calls: list[str] = []
    handles = [
        backbone.net.middle.register_forward_pre_hook(lambda *_: calls.append("middle")),
        backbone.net.final.register_forward_hook(lambda *_: calls.append("final")),
    ]
    x = torch.randn(2, 3, 8, 8)
    try:
        backbone.features(x, backbone.schedule.point(4), ["stem", "in_2"], Pooling())
        assert calls == []
        backbone.features(x, backbone.schedule.point(4), ["out_2"], Pooling())
        assert calls == ["middle"]
    finally:
        for handle in handles:
            handle.remove()


# ---------------------------------------------------------------- strict loading and spec errors


def test_spec_syntax():
    assert parse_spec("ddae:a.yaml:b.pth") == parse_spec("ddae:a.yaml:b.pth#EMA")
    assert parse_spec("ddae:dir/a.yaml:dir/b.pth#MODEL").entry == "MODEL"
    assert "ddae:CONFIG.yaml:CHECKPOINT.pth" in _error(parse_spec, "ddae:a.yaml")
    assert "#MODEL" in _error(parse_spec, "ddae:a.yaml:b.pth#OPT")


def test_missing_files_bad_yaml_and_not_a_checkpoint(checkpoints, tmp_path):
    ckpt = checkpoints["ddpm_unet"]
    assert "not found" in _error(load_backbone, f"ddae:{tmp_path / 'nope.yaml'}:{ckpt}")
    assert "not found" in _error(load_backbone, _spec("ddpm_unet", tmp_path / "nope.pth"))
    bad = tmp_path / "bad.yaml"
    bad.write_text("model_type: 'DDPM'\nnetwork: [unclosed\n")
    assert "cannot parse" in _error(load_backbone, f"ddae:{bad}:{ckpt}")
    text = tmp_path / "notes.pth"
    text.write_text("not a checkpoint")
    assert "not a PyTorch checkpoint" in _error(load_backbone, _spec("ddpm_unet", text))
    no_entry = tmp_path / "model_only.pth"
    torch.save({"MODEL": {}}, no_entry)
    assert "no 'EMA' entry" in _error(load_backbone, _spec("ddpm_unet", no_entry))


class _Payload:
    """Any non-tensor object: a weights-only load must refuse to rebuild it."""


def test_pickled_objects_are_refused(checkpoints, tmp_path):
    unsafe = tmp_path / "unsafe.pth"
    torch.save({"EMA": _Payload()}, unsafe)
    assert "will not unpickle" in _error(load_backbone, _spec("ddpm_unet", unsafe))


def test_mismatched_keys_name_the_offenders(checkpoints, tmp_path):
    state = torch.load(checkpoints["ddpm_unet"], weights_only=True)
    state["EMA"].pop("ema_model.nn_model.final.bias")
    state["EMA"]["ema_model.nn_model.extra.weight"] = torch.zeros(1)
    broken = tmp_path / "broken.pth"
    torch.save(state, broken)
    message = _error(load_backbone, _spec("ddpm_unet", broken))
    assert "missing: final.bias" in message and "unexpected: extra.weight" in message and "YAML config" in message


def test_model_entry_saved_without_the_ddp_wrapper(checkpoints, tmp_path):
    state = torch.load(checkpoints["ddpm_unet"], weights_only=True)
    state["MODEL"] = {key.removeprefix("module."): value for key, value in state["MODEL"].items()}
    plain = tmp_path / "plain.pth"
    torch.save(state, plain)
    with_ddp = load_backbone(_spec("ddpm_unet", checkpoints["ddpm_unet"], "#MODEL"))
    assert load_backbone(_spec("ddpm_unet", plain, "#MODEL")).weights_sha256() == with_ddp.weights_sha256()


def test_config_of_another_network_is_refused(checkpoints, tmp_path):
    other = tmp_path / "other.yaml"
    other.write_text((FIXTURES / "ddpm_unet.yaml").read_text().replace("ch_mults: [1, 2]", "ch_mults: [1, 1]"))
    message = _error(load_backbone, f"ddae:{other}:{checkpoints['ddpm_unet']}")
    assert "wrong shape" in message and "give the YAML config" in message


@pytest.mark.parametrize(
    ("old", "new", "words"),
    [
        ("model_type: 'DDPM'", "model_type: 'VDM'", "model_type"),
        ("n_blocks: 1", "n_blocks: 1\n  width: 3", "unknown network keys"),
        ("n_channels: 32", "n_channels: 24", "multiple of 32"),
        ("n_T: 1000", "n_T: many", "n_T"),
    ],
)
def test_bad_config_values(checkpoints, tmp_path, old, new, words):
    config = tmp_path / "cfg.yaml"
    config.write_text((FIXTURES / "ddpm_unet.yaml").read_text().replace(old, new))
    assert words in _error(load_backbone, f"ddae:{config}:{checkpoints['ddpm_unet']}")


def test_random_init_needs_no_checkpoint(tmp_path):
    spec = f"ddae:{FIXTURES / 'edm_ddpmpp.yaml'}:{tmp_path / 'absent.pth'}"
    a = load_backbone(spec, random_init=True, seed=3)
    b = load_backbone(spec, random_init=True, seed=3)
    c = load_backbone(spec, random_init=True, seed=4)
    assert a.weights_sha256() == b.weights_sha256() != c.weights_sha256()
    assert "random init" in a.model_id and a.framework == "ddae-edm"


# ---------------------------------------------------------------- end to end


def test_cli_layers(checkpoints, capsys):
    assert main(["layers", "--model", _spec("ddpm_unet", checkpoints["ddpm_unet"]), "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    for name in DDPM_LAYERS:
        assert name in out
    assert "t = step 1..1000" in out and "default grid: 1,6,11,21" in out
    assert main(["layers", "--model", "ddae:/nope/cfg.yaml:/nope/ckpt.pth", "--device", "cpu"]) == 2
    assert "not found" in capsys.readouterr().err


def _dataset() -> ImageDataset:
    rng = np.random.default_rng(0)

    def split(n: int, offset: int) -> ImageSplit:
        return ImageSplit(
            images=rng.integers(0, 256, size=(n, 8, 8, 3), dtype=np.uint8),
            labels=(np.arange(n) % 2).astype(np.int64),
            index=np.arange(n, dtype=np.int64) + offset,
        )

    return ImageDataset("toy", {"train": split(6, 10), "test": split(3, 0)}, ["a", "b"], "memory")


@pytest.mark.parametrize(("name", "timesteps"), [("ddpm_unet", [1, 11]), ("edm_ddpmpp", [4, 2])])
def test_extract_end_to_end(checkpoints, tmp_path, name, timesteps):
    backbone = load_backbone(_spec(name, checkpoints[name]))
    out = extract(
        backbone,
        _dataset(),
        tmp_path / "f.h5",
        ExtractConfig(timesteps=timesteps, layers="in_1,mid,out_3", batch_size=4),
        progress=False,
    )
    with FeatureCache(out) as cache:
        assert cache.complete and cache.timesteps == sorted(timesteps)
        assert [layer.name for layer in cache.layers] == ["in_1", "mid", "out_3"]
        feats = cache.file["train/feats/out_3"][:]
        assert feats.shape == (2, 1, 6, 32) and np.isfinite(feats).all()
        point = cache.grid[0]
        if name == "ddpm_unet":
            assert point.model_input == pytest.approx(1 / 1000) and point.alpha_bar == pytest.approx(1 - 1e-4)
        else:
            sigma = (80 ** (1 / 7) + 16 / 17 * (0.002 ** (1 / 7) - 80 ** (1 / 7))) ** 7  # index 2
            assert point.sigma == pytest.approx(sigma) and point.alpha_bar == pytest.approx(1 / (1 + sigma**2))
