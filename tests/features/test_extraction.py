import math

import numpy as np
import pytest
import torch

from probekit.core.errors import ProbekitError
from probekit.core.noise import sample_noise, split_seed
from probekit.core.pooling import Pooling
from probekit.data.base import ImageDataset, ImageSplit
from probekit.features.cache import FeatureCache
from probekit.features.extraction import ExtractConfig, extract
from probekit.models import load_backbone


def _dataset(n_train=20, n_test=9, size=12, seed=0):
    rng = np.random.default_rng(seed)

    def split(n, offset):
        return ImageSplit(
            images=rng.integers(0, 256, size=(n, size, size, 1), dtype=np.uint8),
            labels=(np.arange(n) % 3).astype(np.int64),
            index=np.arange(n, dtype=np.int64) + offset,
        )

    return ImageDataset("toy", {"train": split(n_train, 100), "test": split(n_test, 0)}, ["a", "b", "c"], "memory")


LAYERS = ["down_blocks.0.resnets.0", "mid_block", "up_blocks.1.resnets.1"]


@pytest.mark.slow
def test_cache_shapes_and_metadata(tiny_unet_dir, tmp_path):
    backbone = load_backbone(str(tiny_unet_dir))
    config = ExtractConfig(timesteps=[0, 10, 150], layers=LAYERS, draws=2, batch_size=8)
    extract(backbone, _dataset(), tmp_path / "f.h5", config, command="probekit extract ...", progress=False)
    with FeatureCache(tmp_path / "f.h5") as cache:
        assert cache.complete
        attrs = cache.attrs
        assert attrs["model_sha256"] == backbone.weights_sha256() and attrs["command"] == "probekit extract ..."
        assert attrs["fit"]["fit"] == "pad" and attrs["fit"]["to_size"] == [16, 16]
        assert attrs["draws"] == 2 and attrs["pooling"] == "gap" and attrs["dataset"] == "toy"
        assert cache.timesteps == [0, 10, 150]
        p = cache.grid[1]
        assert p.sigma == pytest.approx(math.sqrt((1 - p.alpha_bar) / p.alpha_bar)) and p.model_input == 10
        assert [l.name for l in cache.layers] == [
            "down_blocks.0.resnets.0",
            "mid_block.resnets.1",
            "up_blocks.1.resnets.1",
        ]
        assert cache.file["train/feats/mid_block.resnets.1"].shape == (3, 2, 20, 16)
        assert cache.file["test/feats/down_blocks.0.resnets.0"].shape == (3, 2, 9, 8)
        np.testing.assert_array_equal(cache.index("train"), np.arange(20) + 100)


def test_features_identical_for_batch_sizes_7_and_32(tiny_unet_dir, tmp_path):
    backbone = load_backbone(str(tiny_unet_dir))
    data = _dataset()
    for batch in (7, 32):
        extract(
            backbone,
            data,
            tmp_path / f"b{batch}.h5",
            ExtractConfig(timesteps=[5, 60], layers=LAYERS, batch_size=batch),
            progress=False,
        )
    with FeatureCache(tmp_path / "b7.h5") as small, FeatureCache(tmp_path / "b32.h5") as large:
        for split in ("train", "test"):
            for layer in small.layers:
                a = small.file[split]["feats"][layer.name][:]
                b = large.file[split]["feats"][layer.name][:]
                np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_one_cell_equals_a_hand_noised_forward(tiny_unet_dir, tmp_path):
    backbone = load_backbone(str(tiny_unet_dir))
    data = _dataset()
    extract(
        backbone, data, tmp_path / "f.h5", ExtractConfig(timesteps=[30], layers=["mid_block"], seed=4), progress=False
    )
    # Independent path: pad 12 -> 16 and scale to [-1, 1] by hand, noise sample 2 with its own id.
    image = data.splits["test"].images[2, :, :, 0].astype(np.float64) / 255 * 2 - 1
    x0 = torch.full((1, 1, 16, 16), -1.0)
    x0[0, 0, 2:14, 2:14] = torch.from_numpy(image).float()
    alpha_bar = backbone.schedule.point(30).alpha_bar
    eps = sample_noise((1, 16, 16), [2], seed=split_seed(4, "test"), t=30, draw=0)
    x_t = math.sqrt(alpha_bar) * x0 + math.sqrt(1 - alpha_bar) * eps
    captured = {}
    handle = backbone.net.mid_block.register_forward_hook(lambda _m, _a, out: captured.update(out=out))
    with torch.no_grad():
        backbone.net(x_t, torch.tensor([30.0]))
    handle.remove()
    expected = captured["out"].mean(dim=(2, 3)).numpy()[0]
    with FeatureCache(tmp_path / "f.h5") as cache:
        np.testing.assert_allclose(cache.features("test", "mid_block.resnets.1", 30)[2], expected, rtol=1e-4, atol=1e-5)


def test_pixels_cache_is_the_scaled_image(tmp_path):
    data = _dataset()
    extract(load_backbone("pixels"), data, tmp_path / "p.h5", ExtractConfig(), progress=False)
    with FeatureCache(tmp_path / "p.h5") as cache:
        assert cache.timesteps == [0]
        np.testing.assert_allclose(
            cache.features("train", "pixels", 0), data.splits["train"].images.reshape(20, -1) / 255, rtol=1e-6
        )


def test_bad_requests_leave_no_file(tiny_unet_dir, tmp_path):
    backbone = load_backbone(str(tiny_unet_dir))
    for config, message in [
        (ExtractConfig(timesteps=[200]), "out of range"),
        (ExtractConfig(timesteps=[-3]), "out of range"),
        (ExtractConfig(layers="mid_blok"), "close matches: mid_block"),
        (ExtractConfig(draws=0), "draws"),
        (ExtractConfig(timesteps=[3, 3]), "repeated"),
    ]:
        with pytest.raises(ProbekitError, match=message):
            extract(backbone, _dataset(), tmp_path / "x.h5", config, progress=False)
        assert not (tmp_path / "x.h5").exists()
    (tmp_path / "x.h5").write_bytes(b"")
    with pytest.raises(ProbekitError, match="exists .*--overwrite"):
        extract(backbone, _dataset(), tmp_path / "x.h5", ExtractConfig(timesteps=[1]), progress=False)


def test_error_mid_extraction_leaves_an_incomplete_cache(tiny_unet_dir, tmp_path, monkeypatch):
    backbone = load_backbone(str(tiny_unet_dir))
    calls = {"n": 0}
    original = backbone.features

    def flaky(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 4:
            raise RuntimeError("device lost")
        return original(*args, **kwargs)

    monkeypatch.setattr(backbone, "features", flaky)
    with pytest.raises(RuntimeError, match="device lost"):
        extract(backbone, _dataset(), tmp_path / "f.h5", ExtractConfig(timesteps=[1], batch_size=8), progress=False)
    with FeatureCache(tmp_path / "f.h5") as cache:
        assert not cache.complete
        with pytest.raises(ProbekitError, match="unfinished"):
            cache.require_complete()


def _all_features(path):
    with FeatureCache(path) as cache:
        return {
            (split, layer.name): cache.file[split]["feats"][layer.name][:]
            for split in cache.splits
            for layer in cache.layers
        }


def _interrupt_after(backbone, monkeypatch, forwards):
    """Make ``backbone.features`` raise KeyboardInterrupt on forward number ``forwards`` + 1."""
    calls = {"n": 0}
    original = backbone.features

    def interrupted(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] > forwards:
            raise KeyboardInterrupt
        return original(*args, **kwargs)

    monkeypatch.setattr(backbone, "features", interrupted)
    return lambda: monkeypatch.setattr(backbone, "features", original)


# Run-to-run comparisons hold in bf16 too (the suite pins auto to fp32; bf16 is asked for here).
@pytest.mark.slow
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_interrupted_extraction_resumes_to_the_uninterrupted_result(tiny_unet_dir, tmp_path, monkeypatch, precision):
    backbone = load_backbone(str(tiny_unet_dir))
    config = ExtractConfig(timesteps=[0, 30], layers=LAYERS, draws=2, batch_size=4, precision=precision)
    extract(backbone, _dataset(), tmp_path / "whole.h5", config, progress=False)

    restore = _interrupt_after(backbone, monkeypatch, forwards=1 + 4 * 2 * 2)  # width probe + 4 batches x 2 t x 2 draws
    with pytest.raises(KeyboardInterrupt):
        extract(backbone, _dataset(), tmp_path / "part.h5", config, progress=False)
    with FeatureCache(tmp_path / "part.h5") as cache:
        assert not cache.complete and cache.progress("train") == (16, 20) and cache.progress("test") == (0, 9)
    restore()

    calls = {"n": 0}
    original = backbone.features
    monkeypatch.setattr(
        backbone, "features", lambda *a, **k: (calls.__setitem__("n", calls["n"] + 1), original(*a, **k))[1]
    )
    extract(backbone, _dataset(), tmp_path / "part.h5", config, progress=False)
    # Only the 4 train samples and 9 test samples left: 1 + 3 batches, x 2 t x 2 draws, plus the width probe.
    assert calls["n"] == 1 + (1 + 3) * 2 * 2
    whole, resumed = _all_features(tmp_path / "whole.h5"), _all_features(tmp_path / "part.h5")
    assert whole.keys() == resumed.keys()
    for key in whole:
        np.testing.assert_array_equal(whole[key], resumed[key])
    with FeatureCache(tmp_path / "part.h5") as cache:
        assert cache.complete and cache.attrs["precision"] == precision


@pytest.mark.slow
def test_resume_of_an_auto_run_adopts_the_recorded_precision(tiny_unet_dir, tmp_path, monkeypatch):
    """An unfinished cache made where auto meant bf16, resumed where it means fp32: bf16 is kept."""
    backbone = load_backbone(str(tiny_unet_dir))
    restore = _interrupt_after(backbone, monkeypatch, forwards=3)
    with pytest.raises(KeyboardInterrupt):
        extract(
            backbone,
            _dataset(),
            tmp_path / "part.h5",
            ExtractConfig(timesteps=[0, 30], layers=LAYERS, batch_size=4, precision="bf16"),
            progress=False,
        )
    restore()
    extract(
        backbone,
        _dataset(),
        tmp_path / "part.h5",
        ExtractConfig(timesteps=[0, 30], layers=LAYERS, batch_size=4),
        progress=False,
    )  # auto, pinned to fp32 in this session
    with FeatureCache(tmp_path / "part.h5") as cache:
        assert cache.complete and cache.attrs["precision"] == "bf16"


@pytest.mark.slow
def test_resume_refuses_different_work_and_complete_caches(tiny_unet_dir, tmp_path, monkeypatch):
    backbone = load_backbone(str(tiny_unet_dir))
    config = ExtractConfig(timesteps=[0, 30], layers=LAYERS, batch_size=4)
    restore = _interrupt_after(backbone, monkeypatch, forwards=3)
    with pytest.raises(KeyboardInterrupt):
        extract(backbone, _dataset(), tmp_path / "part.h5", config, progress=False)
    restore()
    with pytest.raises(ProbekitError, match="different grid"):
        extract(
            backbone, _dataset(), tmp_path / "part.h5", ExtractConfig(timesteps=[0, 31], layers=LAYERS), progress=False
        )
    with pytest.raises(ProbekitError, match="different seed"):
        extract(
            backbone,
            _dataset(),
            tmp_path / "part.h5",
            ExtractConfig(timesteps=[0, 30], layers=LAYERS, seed=1),
            progress=False,
        )
    with pytest.raises(ProbekitError, match="different splits"):
        extract(backbone, _dataset(n_train=21), tmp_path / "part.h5", config, progress=False)
    other = load_backbone(str(tiny_unet_dir), random_init=True, seed=5)
    with pytest.raises(ProbekitError, match="different model_sha256"):
        extract(other, _dataset(), tmp_path / "part.h5", config, progress=False)
    extract(backbone, _dataset(), tmp_path / "part.h5", config, progress=False)
    with pytest.raises(ProbekitError, match="already a complete cache.*--overwrite"):
        extract(backbone, _dataset(), tmp_path / "part.h5", config, progress=False)
    extract(backbone, _dataset(), tmp_path / "part.h5", config, overwrite=True, progress=False)


@pytest.mark.slow
def test_out_of_memory_halves_the_batch_and_gives_the_same_features(tiny_unet_dir, tmp_path, monkeypatch, caplog):
    backbone = load_backbone(str(tiny_unet_dir))
    config = ExtractConfig(timesteps=[0, 30], layers=LAYERS, batch_size=16)
    extract(backbone, _dataset(), tmp_path / "whole.h5", config, progress=False)
    original = backbone.features
    sizes = []

    def small_memory(x, *args, **kwargs):
        sizes.append(x.shape[0])
        if x.shape[0] > 5:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return original(x, *args, **kwargs)

    monkeypatch.setattr(backbone, "features", small_memory)
    with caplog.at_level("WARNING"):
        extract(backbone, _dataset(), tmp_path / "halved.h5", config, progress=False)
    assert "out of memory at batch size 16: retrying in halves of 8" in caplog.text
    assert max(size for size in sizes[1:] if size <= 5) <= 5 and 16 in sizes and 8 in sizes
    whole, halved = _all_features(tmp_path / "whole.h5"), _all_features(tmp_path / "halved.h5")
    for key in whole:
        np.testing.assert_allclose(whole[key], halved[key], rtol=1e-5, atol=1e-6)


def test_bf16_autocast_moves_features_a_little_and_is_recorded(tiny_unet_dir, tmp_path):
    backbone = load_backbone(str(tiny_unet_dir))
    for precision in ("fp32", "bf16"):
        config = ExtractConfig(timesteps=[10], layers=LAYERS, precision=precision, channels_last=True)
        extract(backbone, _dataset(), tmp_path / f"{precision}.h5", config, progress=False)
    fp32, bf16 = _all_features(tmp_path / "fp32.h5"), _all_features(tmp_path / "bf16.h5")
    for key in fp32:
        scale = np.abs(fp32[key]).max()
        difference = np.abs(fp32[key] - bf16[key]).max()
        assert 0 < difference < 0.1 * scale  # bf16 has an 8-bit mantissa: visible but small changes
    with FeatureCache(tmp_path / "bf16.h5") as cache:
        assert cache.attrs["precision"] == "bf16"
    with pytest.raises(ProbekitError, match="precision"):
        extract(backbone, _dataset(), tmp_path / "x.h5", ExtractConfig(precision="int8"), progress=False)


def _hand_count_flops(backbone, layer: str) -> tuple[int, int]:
    """FLOPs of one 16 x 16 image's forward up to ``layer``, counted by hooks: 2 x outputs x fan-in
    for every convolution and linear layer, and 4 B L^2 (heads x head width) for softmax(Q K^T) V
    in each attention layer; returns (FLOPs, attention layers that ran).
    """
    from diffusers.models.attention_processor import Attention

    expected, attentions = 0, 0

    def count(module, inputs, output):
        nonlocal expected, attentions
        if isinstance(module, torch.nn.Conv2d):
            per_output = module.in_channels // module.groups * module.kernel_size[0] * module.kernel_size[1]
            expected += 2 * output.numel() * per_output
        elif isinstance(module, torch.nn.Linear):
            expected += 2 * output.numel() * module.in_features
        elif isinstance(module, Attention):
            batch, _, height, width = inputs[0].shape  # (B, C, H, W) -> L = H W tokens
            expected += 4 * batch * (height * width) ** 2 * module.inner_dim
            attentions += 1

    kinds = (torch.nn.Conv2d, torch.nn.Linear, Attention)
    handles = [m.register_forward_hook(count) for m in backbone.net.modules() if isinstance(m, kinds)]
    try:
        backbone.features(torch.zeros(1, 1, 16, 16), backbone.schedule.points([10])[0], [layer], Pooling())
    finally:
        for handle in handles:
            handle.remove()
    return expected, attentions


def test_flops_per_image_and_achieved_rate_are_recorded(tiny_unet_dir, tmp_path, caplog):
    """The recorded count equals a hand count of every convolution and linear layer that ran
    (the forward stops after down_blocks.0, before any attention).
    """
    backbone = load_backbone(str(tiny_unet_dir))
    config = ExtractConfig(timesteps=[10, 50], layers=["down_blocks.0.resnets.0"], batch_size=8, precision="auto")
    with caplog.at_level("INFO", logger="probekit.features.extraction"):
        extract(backbone, _dataset(), tmp_path / "f.h5", config, progress=False)
    expected, attentions = _hand_count_flops(backbone, "down_blocks.0.resnets.0")
    assert attentions == 0
    with FeatureCache(tmp_path / "f.h5") as cache:
        assert cache.attrs["flops_per_image"] == expected > 0
        assert cache.attrs["precision"] == "fp32"  # auto, resolved (to fp32 in the test suite) and recorded
        assert cache.attrs["achieved_flops"] > 0
    assert "GFLOP per image and grid point" in caplog.text and "GFLOP/s" in caplog.text
    forwards = 2 * (len(_dataset().splits["train"].labels) + len(_dataset().splits["test"].labels))
    budget = (
        f"work: {forwards} image x grid-point forwards x {expected / 1e9:.3g} GFLOP = "
        f"{forwards * expected / 1e12:.3g} TFLOP"
    )
    assert budget in caplog.text


def test_flops_count_attention_on_the_cpu(tiny_unet_dir, tmp_path):
    """A forward through an attention layer: its softmax(Q K^T) V counts too."""
    layer = "down_blocks.1.attentions.0"
    backbone = load_backbone(str(tiny_unet_dir))
    config = ExtractConfig(timesteps=[10], layers=[layer], batch_size=8, precision="fp32")
    extract(backbone, _dataset(), tmp_path / "f.h5", config, progress=False)
    expected, attentions = _hand_count_flops(backbone, layer)
    assert attentions == 1
    with FeatureCache(tmp_path / "f.h5") as cache:
        assert cache.attrs["flops_per_image"] == expected


@pytest.mark.slow
def test_views_are_deterministic_survive_resume_and_match_a_hand_augmented_forward(
    tiny_unet_dir, tmp_path, monkeypatch
):
    from probekit.data.augment import crop_flip_views
    from probekit.features.extraction import noise_draw

    backbone = load_backbone(str(tiny_unet_dir))
    config = ExtractConfig(timesteps=[0, 30], layers=LAYERS, draws=2, views=2, batch_size=4)
    extract(backbone, _dataset(), tmp_path / "whole.h5", config, progress=False)
    with FeatureCache(tmp_path / "whole.h5") as cache:
        assert cache.views == 2
        # train: (1 clean + 2 augmented views) x 2 draws slots; test: the clean image's 2 draws
        assert cache.file["train/feats/mid_block.resnets.1"].shape == (2, 6, 20, 16)
        assert cache.file["test/feats/mid_block.resnets.1"].shape == (2, 2, 9, 16)
        assert cache.train_slots("train", "mid_block.resnets.1", 30).shape == (4, 20, 16)
        stored_view2_draw1 = cache.file["train/feats/up_blocks.1.resnets.1"][1, 2 * 2 + 1]

    # independent recomputation of view 2, draw 1 at t=30 for the whole train split
    data = _dataset()
    split = data.splits["train"]
    images = crop_flip_views(split.images, split.index, seed=0, split="train", view=2)
    from probekit.data import fit_images

    x0, _ = fit_images(
        images, size=backbone.input_size, channels=backbone.input_channels, value_range=backbone.value_range, fit="auto"
    )
    point = backbone.schedule.points([30])[0]
    noise = sample_noise(x0.shape[1:], split.index, seed=split_seed(0, "train"), t=30, draw=noise_draw(2, 1))
    from probekit.core.pooling import Pooling

    with torch.no_grad():
        feats = backbone.features(
            backbone.schedule.add_noise(x0, noise, point), point, ["up_blocks.1.resnets.1"], Pooling.parse("gap")
        )
    np.testing.assert_allclose(stored_view2_draw1, feats["up_blocks.1.resnets.1"].numpy(), rtol=1e-5, atol=1e-6)

    # a batch size that splits differently, and a resumed run, give the same bytes
    extract(
        backbone,
        _dataset(),
        tmp_path / "b7.h5",
        ExtractConfig(timesteps=[0, 30], layers=LAYERS, draws=2, views=2, batch_size=7),
        progress=False,
    )
    restore = _interrupt_after(
        backbone, monkeypatch, forwards=1 + 2 * 3 * 2 * 2
    )  # probe + 2 batches x 3 views x 2 t x 2 draws
    with pytest.raises(KeyboardInterrupt):
        extract(backbone, _dataset(), tmp_path / "part.h5", config, progress=False)
    restore()
    extract(backbone, _dataset(), tmp_path / "part.h5", config, progress=False)
    whole = _all_features(tmp_path / "whole.h5")
    for other in ("b7.h5", "part.h5"):
        again = _all_features(tmp_path / other)
        for key in whole:
            np.testing.assert_allclose(whole[key], again[key], rtol=1e-5, atol=1e-6)
