"""VAE latents: counted in the logged work (against a count by hand from layer shapes), stored and
reused by a second run (the log shows the encoder skipped), keyed so another VAE or image size is
never served; the encoder batch follows the memory budget.
"""

import logging
import re

import numpy as np
import pytest
import torch
from torch import nn

from probekit.core.errors import ProbekitError
from probekit.data.base import ImageDataset, ImageSplit
from probekit.features.cache import FeatureCache
from probekit.features.extraction import ExtractConfig, extract
from probekit.features.latents import LatentStore
from probekit.models import load_backbone
from probekit.models.vae import LIVE_ACTIVATIONS, encode_batch, encode_mean
from tests.models.sd.conftest import SCALE, _save, _unet, clip_text, vae

LAYERS = ["down_blocks.0", "mid_block"]


def _pipeline(root, seed=0):
    from diffusers import DDPMScheduler

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        parts = {"unet": _unet(12), "vae": vae(), "text_encoder": clip_text(12)}
    _save(root, parts, "StableDiffusionPipeline")
    DDPMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012).save_pretrained(root / "scheduler")
    return root


@pytest.fixture(scope="module")
def pipe(tmp_path_factory):
    return _pipeline(tmp_path_factory.mktemp("sd"))


def _dataset(n=6, size=20):
    rng = np.random.default_rng(0)
    split = lambda n: ImageSplit(
        rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8),
        (np.arange(n) % 2).astype(np.int64),
        np.arange(n, dtype=np.int64),
    )
    return ImageDataset("toy", {"train": split(n), "test": split(4)}, ["a", "b"], "memory")


def _hand_flops(run, root_modules):
    """FLOPs of ``run()`` counted by hooks from layer shapes: 2 x MACs of every Conv2d and Linear,
    plus Q K^T and A V of every attention (2 B L S d each), independently of torch's counter.
    """
    from diffusers.models.attention_processor import Attention

    total = [0]

    def conv(module, inputs, output):
        kh, kw = module.kernel_size
        total[0] += 2 * output.numel() * (module.in_channels // module.groups) * kh * kw

    def linear(module, inputs, output):
        total[0] += 2 * output.numel() * module.in_features

    def attention(module, args, kwargs, output):
        hidden = args[0] if args else kwargs["hidden_states"]
        context = kwargs.get("encoder_hidden_states")
        queries = hidden.shape[2] * hidden.shape[3] if hidden.dim() == 4 else hidden.shape[1]
        keys = queries if context is None else context.shape[1]
        total[0] += 2 * 2 * hidden.shape[0] * queries * keys * module.inner_dim

    handles = []
    for root in root_modules:
        for module in root.modules():
            if isinstance(module, nn.Conv2d):
                handles.append(module.register_forward_hook(conv))
            elif isinstance(module, nn.Linear):
                handles.append(module.register_forward_hook(linear))
            elif isinstance(module, Attention):
                handles.append(module.register_forward_hook(attention, with_kwargs=True))
    try:
        run()
    finally:
        for handle in handles:
            handle.remove()
    return total[0]


def _logged_work(caplog):
    line = next(r.getMessage() for r in caplog.records if r.getMessage().startswith("work:"))
    return float(re.search(r"= ([0-9.e+-]+) TFLOP", line).group(1)) * 1e12


@pytest.mark.slow
def test_logged_work_counts_the_encoder_and_matches_a_hand_count(pipe, tmp_path, caplog):
    backbone = load_backbone(f"sd:{pipe}")
    data, grid = _dataset(), [10, 500]
    with caplog.at_level(logging.INFO, logger="probekit"):
        extract(
            backbone,
            data,
            tmp_path / "f.h5",
            ExtractConfig(timesteps=grid, layers=LAYERS, batch_size=4),
            progress=False,
        )
    assert backbone.input_size == (16, 16)  # 8 latent pixels, two VAE stages
    image = torch.zeros(1, 3, 16, 16)
    encode = _hand_flops(lambda: backbone.encode(image), [backbone.vae])
    latent = backbone.encode(image)
    point = backbone.schedule.points([10])[0]
    forward = _hand_flops(
        lambda: backbone.features(
            latent, point, LAYERS, __import__("probekit.core.pooling", fromlist=["Pooling"]).Pooling.parse("gap")
        ),
        [backbone.net],
    )
    images = 6 + 4
    expected = images * encode + images * len(grid) * forward
    assert encode > forward  # the encoder is no rounding error here, as at SD's 512 px
    assert _logged_work(caplog) == pytest.approx(expected, rel=0.05)
    with FeatureCache(tmp_path / "f.h5") as cache:
        assert cache.attrs["encode_flops_per_image"] == pytest.approx(encode, rel=0.05)


@pytest.mark.slow
def test_second_run_skips_the_encoder_and_gives_the_same_features(pipe, tmp_path, caplog):
    backbone = load_backbone(f"sd:{pipe}")
    config = ExtractConfig(timesteps=[10], layers=LAYERS, batch_size=4, views=1)
    calls = {"n": 0}
    original = backbone.vae.encode

    def counted(x):
        from torch._subclasses.fake_tensor import FakeTensor

        calls["n"] += 0 if isinstance(x, FakeTensor) else len(x)  # the FLOP count runs on fake tensors: no work
        return original(x)

    backbone.vae.encode = counted
    extract(backbone, _dataset(), tmp_path / "first.h5", config, progress=False)
    assert calls["n"] == 6 * 2 + 4  # train: clean + one view; test: clean
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="probekit"):
        extract(
            backbone,
            _dataset(),
            tmp_path / "second.h5",
            ExtractConfig(timesteps=[10, 900], layers=LAYERS, batch_size=4, views=1),
            progress=False,
        )
    assert calls["n"] == 16  # not one more image encoded
    assert any(
        re.match(r"latents: encoder ran on 0 image views, skipped for 16 found in .*latents", r.getMessage())
        for r in caplog.records
    )
    extract(
        backbone,
        _dataset(),
        tmp_path / "fresh.h5",
        ExtractConfig(timesteps=[10, 900], layers=LAYERS, batch_size=4, views=1, store_latents=False),
        progress=False,
    )
    assert calls["n"] == 32
    with FeatureCache(tmp_path / "second.h5") as reused, FeatureCache(tmp_path / "fresh.h5") as fresh:
        for split in ("train", "test"):
            for layer in reused.layers:
                np.testing.assert_array_equal(
                    reused.file[split]["feats"][layer.name][:], fresh.file[split]["feats"][layer.name][:]
                )


@pytest.mark.slow
def test_another_vae_or_image_size_or_seed_is_never_served_stored_latents(pipe, tmp_path, caplog):
    other = _pipeline(tmp_path / "other", seed=1)
    config = ExtractConfig(timesteps=[10], layers=LAYERS, batch_size=4, views=1, latent_cache=str(tmp_path / "lat"))

    def skipped(model, out, **changes):
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="probekit"):
            extract(
                load_backbone(f"sd:{model}"),
                _dataset(),
                tmp_path / out,
                ExtractConfig(**{**config.__dict__, **changes}),
                progress=False,
            )
        line = next(r.getMessage() for r in caplog.records if r.getMessage().startswith("latents: encoder ran"))
        return int(re.search(r"skipped for (\d+)", line).group(1))

    assert skipped(pipe, "a.h5") == 0
    assert skipped(other, "b.h5") == 0  # another VAE
    assert skipped(pipe, "c.h5", image_size=16) == 0  # another image size (resized before the fit)
    assert skipped(pipe, "d.h5", seed=3) == 10  # clean views reused, the augmented views of another seed not
    assert skipped(pipe, "e.h5", timesteps=[20]) == 16
    assert len(list((tmp_path / "lat").glob("latents-*.h5"))) == 3


def test_store_round_trip_in_any_id_order_and_missing_rows(tmp_path):
    store = LatentStore(tmp_path, {"k": 1})
    latents = torch.randn(4, 2, 3, 3)
    store.put("train", "clean", np.array([7, 2, 5, 0]), latents)
    np.testing.assert_array_equal(
        store.get("train", "clean", np.array([5, 7, 0, 2])).numpy(), latents[[2, 0, 3, 1]].numpy()
    )
    assert store.get("train", "clean", np.array([1, 2])) is None  # row 1 was never written (not zeros)
    assert store.get("train", "crop-flip-pad4-seed0-view1", np.array([2])) is None
    assert store.get("test", "clean", np.array([20])) is None
    store.close()
    with pytest.raises(ProbekitError, match="another key"):
        path = LatentStore(tmp_path, {"k": 2}).path  # another key: another file, never this one
        (tmp_path / path.name).rename(store.path.with_name("x.h5"))
        store.path.unlink()
        store.path.with_name("x.h5").rename(store.path)
        LatentStore(tmp_path, {"k": 1})


def test_encoder_batch_follows_the_budget(pipe):
    backbone = load_backbone(f"sd:{pipe}")
    per_image = LIVE_ACTIVATIONS * 8 * 64 * 64 * 4 + (32 * 32) ** 2 * 4  # first stage 8 wide; 32 x 32 latent pixels
    assert encode_batch(backbone.vae, 64, 64, 3 * per_image + 5) == 3
    assert encode_batch(backbone.vae, 64, 64, 1) == 1
    calls = []
    original = backbone.vae.encode
    backbone.vae.encode = lambda x: (calls.append(len(x)), original(x))[1]
    images = torch.rand(7, 3, 64, 64) * 2 - 1
    budgeted = encode_mean(backbone.vae, images, 3 * per_image)
    assert calls == [3, 3, 1]
    one_by_one = torch.cat([original(image[None]).latent_dist.mean for image in images]) * SCALE
    torch.testing.assert_close(budgeted, one_by_one, rtol=1e-5, atol=1e-6)
