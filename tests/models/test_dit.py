"""DiT backbones: original .pt and diffusers layouts, VAE latents, null-class conditioning.

The reference network below is a plain-torch transcription of the published DiT forward
(github.com/facebookresearch/DiT, models.py), with the original parameter names, so its
``state_dict()`` is an original-format checkpoint and its block outputs are the ground truth.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from probekit.core.errors import ProbekitError
from probekit.core.noise import sample_noise, split_seed
from probekit.core.pooling import Pooling
from probekit.data.base import ImageDataset, ImageSplit
from probekit.features.cache import FeatureCache
from probekit.features.extraction import ExtractConfig, extract
from probekit.models import FORMATS, UNetBackbone, load_backbone, select_layers
from probekit.models.dit import DiTBackbone, infer_original_shape, parse_config_name

LATENT, PATCH, HIDDEN, DEPTH, HEADS, CLASSES = 8, 2, 32, 2, 2, 10
TOKENS = (LATENT // PATCH) ** 2
VAE_SCALE = 0.5  # not SD's 0.18215, so a hard-coded factor would show


# ----------------------------------------------------------------------------- reference DiT


def _sincos_grid(dim: int, side: int) -> np.ndarray:
    """MAE/DiT 2-D sin-cos table (side*side, dim): first half from the column index, second from the row."""

    def one_axis(d: int, positions: np.ndarray) -> np.ndarray:
        omega = 1.0 / 10000 ** (np.arange(d // 2, dtype=np.float64) / (d / 2))
        angles = np.outer(positions, omega)
        return np.concatenate([np.sin(angles), np.cos(angles)], axis=1)

    cols, rows = np.meshgrid(np.arange(side), np.arange(side))
    return np.concatenate([one_axis(dim // 2, cols.ravel()), one_axis(dim // 2, rows.ravel())], axis=1)


def _timestep_embedding(t: torch.Tensor, dim: int = 256) -> torch.Tensor:
    half = dim // 2
    freqs = torch.exp(-math.log(10000) * torch.arange(half, dtype=torch.float32) / half)
    args = t[:, None].float() * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


class _Attention(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        weights = (q @ k.transpose(-2, -1)) * (d // self.heads) ** -0.5
        return self.proj((weights.softmax(dim=-1) @ v).transpose(1, 2).reshape(b, n, d))


class _Mlp(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, 4 * dim)
        self.fc2 = nn.Linear(4 * dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x), approximate="tanh"))


class _Block(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.attn = _Attention(dim, heads)
        self.mlp = _Mlp(dim)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim, 6 * dim))

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        shift1, scale1, gate1, shift2, scale2, gate2 = self.adaLN_modulation(c).chunk(6, dim=1)
        norm = lambda h: F.layer_norm(h, h.shape[-1:], eps=1e-6)  # noqa: E731
        x = x + gate1[:, None] * self.attn(norm(x) * (1 + scale1[:, None]) + shift1[:, None])
        return x + gate2[:, None] * self.mlp(norm(x) * (1 + scale2[:, None]) + shift2[:, None])


class _Final(nn.Module):
    def __init__(self, dim: int, patch: int, out_channels: int) -> None:
        super().__init__()
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim, 2 * dim))
        self.linear = nn.Linear(dim, patch * patch * out_channels)


class RefDiT(nn.Module):
    """Original DiT parameter names and forward up to the last block; ``blocks(...)`` returns every block's tokens."""

    def __init__(self, learn_sigma: bool = True, depth: int = DEPTH, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.x_embedder = nn.Module()
        self.x_embedder.proj = nn.Conv2d(4, HIDDEN, PATCH, stride=PATCH)
        grid = torch.from_numpy(_sincos_grid(HIDDEN, LATENT // PATCH)).float()[None]
        self.pos_embed = nn.Parameter(grid, requires_grad=False)
        self.t_embedder = nn.Module()
        self.t_embedder.mlp = nn.Sequential(nn.Linear(256, HIDDEN), nn.SiLU(), nn.Linear(HIDDEN, HIDDEN))
        self.y_embedder = nn.Module()
        self.y_embedder.embedding_table = nn.Embedding(CLASSES + 1, HIDDEN)
        self.blocks = nn.ModuleList(_Block(HIDDEN, HEADS) for _ in range(depth))
        self.final_layer = _Final(HIDDEN, PATCH, 8 if learn_sigma else 4)

    def blocks_out(self, x: torch.Tensor, t: float, y: int) -> list[torch.Tensor]:
        with torch.no_grad():
            h = self.x_embedder.proj(x).flatten(2).transpose(1, 2) + self.pos_embed
            c = self.t_embedder.mlp(
                _timestep_embedding(torch.full((len(x),), float(t)))
            ) + self.y_embedder.embedding_table(torch.full((len(x),), y, dtype=torch.long))
            outs = []
            for block in self.blocks:
                h = block(h, c)
                outs.append(h)
        return outs


def _to_diffusers_keys(state: dict[str, torch.Tensor], depth: int = DEPTH) -> dict[str, torch.Tensor]:
    """The test's own original -> diffusers renaming (embedders copied into every block)."""
    out = {
        "pos_embed.proj.weight": state["x_embedder.proj.weight"],
        "pos_embed.proj.bias": state["x_embedder.proj.bias"],
        "proj_out_1.weight": state["final_layer.adaLN_modulation.1.weight"],
        "proj_out_1.bias": state["final_layer.adaLN_modulation.1.bias"],
        "proj_out_2.weight": state["final_layer.linear.weight"],
        "proj_out_2.bias": state["final_layer.linear.bias"],
    }
    for i in range(depth):
        d, o = f"transformer_blocks.{i}.", f"blocks.{i}."
        emb = d + "norm1.emb."
        for p in ("weight", "bias"):
            out[emb + f"timestep_embedder.linear_1.{p}"] = state[f"t_embedder.mlp.0.{p}"]
            out[emb + f"timestep_embedder.linear_2.{p}"] = state[f"t_embedder.mlp.2.{p}"]
            out[d + f"norm1.linear.{p}"] = state[o + f"adaLN_modulation.1.{p}"]
            qkv = state[o + f"attn.qkv.{p}"]
            out[d + f"attn1.to_q.{p}"] = qkv[:HIDDEN]
            out[d + f"attn1.to_k.{p}"] = qkv[HIDDEN : 2 * HIDDEN]
            out[d + f"attn1.to_v.{p}"] = qkv[2 * HIDDEN :]
            out[d + f"attn1.to_out.0.{p}"] = state[o + f"attn.proj.{p}"]
            out[d + f"ff.net.0.proj.{p}"] = state[o + f"mlp.fc1.{p}"]
            out[d + f"ff.net.2.{p}"] = state[o + f"mlp.fc2.{p}"]
        out[emb + "class_embedder.embedding_table.weight"] = state["y_embedder.embedding_table.weight"]
    return out


def _diffusers_dit(ref: RefDiT):
    from diffusers import DiTTransformer2DModel

    net = DiTTransformer2DModel(
        num_attention_heads=HEADS,
        attention_head_dim=HIDDEN // HEADS,
        in_channels=4,
        out_channels=8,
        num_layers=DEPTH,
        sample_size=LATENT,
        patch_size=PATCH,
        num_embeds_ada_norm=CLASSES,
        norm_eps=1e-6,
    )
    net.load_state_dict(_to_diffusers_keys(ref.state_dict()), strict=True)
    return net


def _tiny_vae():
    from diffusers import AutoencoderKL

    torch.manual_seed(1)
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2,
        block_out_channels=(8, 16),
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=4,
        sample_size=16,
        scaling_factor=VAE_SCALE,
    )


# ----------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("dit")
    ref = RefDiT()
    torch.save(ref.state_dict(), root / "tiny.pt")
    vae = _tiny_vae()
    vae.save_pretrained(root / "vae")
    _diffusers_dit(ref).save_pretrained(root / "transformer-only")
    pipe = root / "pipeline"
    _diffusers_dit(ref).save_pretrained(pipe / "transformer")
    vae.save_pretrained(pipe / "vae")
    (pipe / "scheduler").mkdir()
    (pipe / "scheduler" / "scheduler_config.json").write_text(
        json.dumps(
            {
                "_class_name": "DDIMScheduler",
                "num_train_timesteps": 500,
                "beta_schedule": "linear",
                "beta_start": 1e-4,
                "beta_end": 0.02,
            }
        )
    )
    (pipe / "model_index.json").write_text(json.dumps({"_class_name": "DiTPipeline"}))
    return {
        "root": root,
        "ref": ref,
        "pt": root / "tiny.pt",
        "vae": root / "vae",
        "folder": root / "transformer-only",
        "pipe": pipe,
    }


@pytest.fixture(scope="module")
def original(files) -> DiTBackbone:
    return load_backbone(f"dit:{files['pt']}?heads={HEADS}&vae={files['vae']}")


def _latents(n: int = 3, seed: int = 5) -> torch.Tensor:
    return torch.randn(n, 4, LATENT, LATENT, generator=torch.Generator().manual_seed(seed))


def _names() -> list[str]:
    return [f"transformer_blocks.{i}" for i in range(DEPTH)]


# ----------------------------------------------------------------------------- features


def test_original_checkpoint_matches_the_reference_dit(files, original):
    x = _latents()
    point = original.schedule.point(250)
    feats = original.features(x, point, _names(), Pooling())
    reference = files["ref"].blocks_out(x, 250, CLASSES)  # null class = index num_classes
    for i, name in enumerate(_names()):
        np.testing.assert_allclose(feats[name].numpy(), reference[i].numpy().mean(axis=1), rtol=1e-4, atol=1e-5)


def test_both_formats_give_the_same_features_and_hash(files, original):
    folder = load_backbone(f"dit:{files['folder']}?vae={files['vae']}&temb=original")
    x = _latents(4, seed=9)
    for t in (0, 40, 900):
        a = original.features(x, original.schedule.point(t), _names(), Pooling())
        b = folder.features(x, folder.schedule.point(t), _names(), Pooling())
        for name in _names():
            np.testing.assert_allclose(a[name].numpy(), b[name].numpy(), rtol=1e-5, atol=1e-6)
    assert original.weights_sha256() == folder.weights_sha256()


def test_diffusers_folder_default_runs_as_diffusers_does(files):
    from diffusers import DiTTransformer2DModel

    backbone = load_backbone(f"dit:{files['folder']}?vae={files['vae']}")
    net = DiTTransformer2DModel.from_pretrained(files["folder"]).eval()
    captured, handles = {}, []
    for i, block in enumerate(net.transformer_blocks):
        handles.append(block.register_forward_hook(lambda _m, _a, out, i=i: captured.__setitem__(i, out)))
    x = _latents()
    with torch.no_grad():
        net(x, timestep=torch.tensor([300.0] * 3), class_labels=torch.tensor([CLASSES] * 3))
    for h in handles:
        h.remove()
    feats = backbone.features(x, backbone.schedule.point(300), _names(), Pooling())
    for i, name in enumerate(_names()):
        np.testing.assert_allclose(feats[name].numpy(), captured[i].numpy().mean(axis=1), rtol=1e-5, atol=1e-6)
    # diffusers' timestep frequencies (i/127) differ from DiT's (i/128): temb=original is not a no-op
    reference = files["ref"].blocks_out(x, 300, CLASSES)[-1].numpy().mean(axis=1)
    assert not np.allclose(feats[_names()[-1]].numpy(), reference, rtol=1e-4, atol=1e-5)


def test_null_class_conditions_every_forward(files, original):
    seen = []
    table = original.net.transformer_blocks[0].norm1.emb.class_embedder
    handle = table.register_forward_pre_hook(lambda _m, args: seen.append(args[0].clone()))
    try:
        original.features(_latents(2), original.schedule.point(10), _names(), Pooling())
        original.forward(_latents(2), original.schedule.point(10))
    finally:
        handle.remove()
    assert seen and all(labels.tolist() == [CLASSES, CLASSES] for labels in seen)
    # and a real class gives other features than the null class
    x = _latents(2)
    with_class = files["ref"].blocks_out(x, 10, 3)[0].numpy().mean(axis=1)
    ours = original.features(x, original.schedule.point(10), ["layer-0"], Pooling())["layer-0"].numpy()
    assert not np.allclose(ours, with_class, atol=1e-4)


def test_avg_pooling_averages_the_token_grid(files, original):
    x = _latents(2)
    feats = original.features(x, original.schedule.point(20), ["transformer_blocks.1"], Pooling(2))[
        "transformer_blocks.1"
    ]
    tokens = files["ref"].blocks_out(x, 20, CLASSES)[1].numpy()  # (B, 16, C), row-major 4 x 4 grid
    side = LATENT // PATCH
    grid = tokens.reshape(2, side, side, HIDDEN)
    pooled = grid.reshape(2, 2, side // 2, 2, side // 2, HIDDEN).mean(axis=(2, 4))  # (B, 2, 2, C)
    expected = pooled.transpose(0, 3, 1, 2).reshape(2, -1)  # channel-major, like conv feature maps
    np.testing.assert_allclose(feats.numpy(), expected, rtol=1e-4, atol=1e-5)


def test_forward_stops_after_deepest_requested_block(original):
    calls = []
    handles = [
        original.net.transformer_blocks[1].register_forward_pre_hook(lambda *_: calls.append("block 1")),
        original.net.proj_out_1.register_forward_pre_hook(lambda *_: calls.append("head")),
    ]
    try:
        original.features(_latents(1), original.schedule.point(3), ["layer-0"], Pooling())
        assert calls == []
        original.features(_latents(1), original.schedule.point(3), ["layer-1"], Pooling())
        assert calls == ["block 1"]
    finally:
        for h in handles:
            h.remove()
    assert all(not m._forward_hooks for m in original.net.modules())


def test_learned_sigma_and_fixed_sigma_both_load(files, tmp_path, original):
    out = original.forward(_latents(2), original.schedule.point(5))
    assert out.shape == (2, 8, LATENT, LATENT)  # eps and the variance interpolation
    fixed = RefDiT(learn_sigma=False, seed=3)
    torch.save(fixed.state_dict(), tmp_path / "fixed.pt")
    backbone = load_backbone(f"dit:{tmp_path / 'fixed.pt'}?heads={HEADS}&vae={files['vae']}")
    assert backbone.forward(_latents(2), backbone.schedule.point(5)).shape == (2, 4, LATENT, LATENT)
    x = _latents(2)
    np.testing.assert_allclose(
        backbone.features(x, backbone.schedule.point(5), ["layer-1"], Pooling())["layer-1"].numpy(),
        fixed.blocks_out(x, 5, CLASSES)[1].numpy().mean(axis=1),
        rtol=1e-4,
        atol=1e-5,
    )


def test_training_checkpoint_uses_its_ema_weights(files, tmp_path, original):
    other = RefDiT(seed=7).state_dict()
    checkpoint = {
        "model": other,
        "ema": files["ref"].state_dict(),
        "opt": {"state": {}, "param_groups": []},
        "args": argparse.Namespace(model="DiT-XL/2", image_size=256),
    }
    torch.save(checkpoint, tmp_path / "0050000.pt")
    backbone = load_backbone(f"dit:{tmp_path / '0050000.pt'}?heads={HEADS}&vae={files['vae']}")
    x = _latents(2)
    a = backbone.features(x, backbone.schedule.point(60), ["layer-1"], Pooling())["layer-1"]
    b = original.features(x, original.schedule.point(60), ["layer-1"], Pooling())["layer-1"]
    np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-6, atol=1e-7)


# ----------------------------------------------------------------------------- VAE and schedule


def test_encode_is_the_scaled_posterior_mean(files, original):
    from diffusers import AutoencoderKL

    vae = AutoencoderKL.from_pretrained(files["vae"]).eval()
    x = torch.rand(3, 3, 16, 16, generator=torch.Generator().manual_seed(2)) * 2 - 1
    with torch.no_grad():
        expected = vae.encode(x).latent_dist.mean * VAE_SCALE
    latents = original.encode(x)
    assert latents.shape == (3, 4, LATENT, LATENT)
    np.testing.assert_allclose(latents.numpy(), expected.numpy(), rtol=1e-5, atol=1e-6)
    assert torch.equal(original.encode(x), latents)  # the mean: no sampling, no RNG
    assert original.input_size == (16, 16) and original.input_channels == 3 and original.value_range == (-1.0, 1.0)


def test_schedule_is_dits_ddpm_linear_1000(original):
    alpha_bar = np.cumprod(1 - np.linspace(1e-4, 0.02, 1000))
    for t in (0, 99, 999):
        point = original.schedule.point(t)
        assert point.alpha_bar == pytest.approx(alpha_bar[t], rel=1e-12) and point.model_input == t
    with pytest.raises(ProbekitError):
        original.schedule.point(1000)


def _dataset(n_train: int = 5, n_test: int = 3) -> ImageDataset:
    rng = np.random.default_rng(0)

    def split(n: int, offset: int) -> ImageSplit:
        return ImageSplit(
            images=rng.integers(0, 256, size=(n, 16, 16, 3), dtype=np.uint8),
            labels=(np.arange(n) % 2).astype(np.int64),
            index=np.arange(n, dtype=np.int64) + offset,
        )

    return ImageDataset("toy-rgb", {"train": split(n_train, 10), "test": split(n_test, 0)}, ["a", "b"], "memory")


def test_extract_encodes_once_per_batch_and_noises_latents(files, original, tmp_path):
    data = _dataset()
    batches = []
    encode = original.encode
    original.encode = lambda x: (batches.append(len(x)), encode(x))[1]  # type: ignore[method-assign]
    try:
        config = ExtractConfig(timesteps=[40, 600], layers="layer-1", draws=2, seed=3, batch_size=2)
        extract(original, data, tmp_path / "f.h5", config, progress=False)
    finally:
        del original.encode
    # one probe image, then train 2+2+1 and test 2+1: never once per (t, draw)
    assert batches == [1, 2, 2, 1, 2, 1]

    # Independent path for test sample 1 at t=40, draw 1: VAE mean -> latent noise -> reference DiT.
    from diffusers import AutoencoderKL

    vae = AutoencoderKL.from_pretrained(files["vae"]).eval()
    image = torch.from_numpy(data.splits["test"].images[1:2].astype(np.float32)).permute(0, 3, 1, 2) / 255 * 2 - 1
    with torch.no_grad():
        latent = vae.encode(image).latent_dist.mean * VAE_SCALE
    alpha_bar = float(np.cumprod(1 - np.linspace(1e-4, 0.02, 1000))[40])
    eps = sample_noise((4, LATENT, LATENT), [1], seed=split_seed(3, "test"), t=40, draw=1)
    x_t = math.sqrt(alpha_bar) * latent + math.sqrt(1 - alpha_bar) * eps
    expected = files["ref"].blocks_out(x_t, 40, CLASSES)[1].numpy().mean(axis=1)[0]
    with FeatureCache(tmp_path / "f.h5") as cache:
        stored = cache.file["test"]["feats"]["transformer_blocks.1"][:]
        assert stored.shape == (2, 2, 3, HIDDEN)
        np.testing.assert_allclose(stored[0, 1, 1], expected, rtol=1e-4, atol=1e-5)
        assert cache.attrs["framework"] == "dit"


# ----------------------------------------------------------------------------- layers


def test_layer_listing(original):
    layers = original.layers()
    assert [l.name for l in layers] == _names()
    assert [l.aliases for l in layers] == [("layer-0",), ("layer-1",)]
    assert {(l.stage, l.channels, l.resolution) for l in layers} == {("block", HIDDEN, f"{TOKENS} tokens")}
    assert [l.depth for l in layers] == [0, 1]
    assert select_layers(layers, "layer-1") == ["transformer_blocks.1"]
    assert select_layers(layers, "transformer_blocks.*") == _names()
    assert select_layers(layers, "-1") == ["transformer_blocks.1"]
    with pytest.raises(ProbekitError, match="unknown layer"):
        original.features(_latents(1), original.schedule.point(0), ["blocks.0"], Pooling())


# ----------------------------------------------------------------------------- loading


def test_pipeline_folder_is_recognised_with_its_vae_and_scheduler(files, original):
    backbone = load_backbone(str(files["pipe"]))
    assert isinstance(backbone, DiTBackbone)
    assert backbone.schedule.num_train_timesteps == 500
    assert backbone.weights_sha256() == original.weights_sha256()  # same weights, and its vae/ is the same VAE
    assert not backbone.original_temb  # diffusers layouts run with diffusers' timestep embedding by default
    assert FORMATS["dit"].recognises(
        str(files["folder"])
    )  # a bare transformer folder too (its VAE is then the hub default)


def test_unet_folders_stay_unets(tiny_unet_dir):
    assert list(FORMATS).index("dit") < list(FORMATS).index("diffusers-unet")
    assert isinstance(load_backbone(str(tiny_unet_dir)), UNetBackbone)


def test_random_init_is_a_seeded_twin(files, original):
    spec = f"dit:{files['pt']}?heads={HEADS}&vae={files['vae']}"
    a = load_backbone(spec, random_init=True, seed=4)
    b = load_backbone(spec, random_init=True, seed=4)
    assert a.weights_sha256() == b.weights_sha256() != original.weights_sha256()
    assert [l.name for l in a.layers()] == _names() and "random init" in a.model_id


def test_shapes_identify_published_sizes():
    expected = {"XL": (28, 1152, 16), "L": (24, 1024, 16), "B": (12, 768, 12), "S": (12, 384, 6)}
    for width, (depth, hidden, heads) in expected.items():
        for patch in (2, 4, 8):
            size = parse_config_name(f"DiT-{width}/{patch}")
            assert (size.depth, size.hidden, size.patch, size.heads) == (depth, hidden, patch, heads)
            assert parse_config_name(f"DiT-{width}-{patch}") == size
    # DiT-S/2 at 256 px, shapes only (expanded zeros use no memory)
    shapes = {
        "x_embedder.proj.weight": (384, 4, 2, 2),
        "pos_embed": (1, 256, 384),
        "blocks.0.mlp.fc1.weight": (1536, 384),
        "blocks.11.mlp.fc2.bias": (384,),
        "y_embedder.embedding_table.weight": (1001, 384),
        "final_layer.linear.weight": (32, 384),
    }
    shape = infer_original_shape({k: torch.zeros(1).expand(s) for k, s in shapes.items()})
    assert (shape.depth, shape.hidden, shape.patch, shape.num_classes, shape.latent_size, shape.out_channels) == (
        12,
        384,
        2,
        1000,
        32,
        8,
    )
    assert shape.known_size().name == "DiT-S/2"


def _save_variant(ref: RefDiT, path, change) -> str:
    state = dict(ref.state_dict())
    change(state)
    torch.save(state, path)
    return str(path)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda s: s.__setitem__("blocks.0.attn.extra", torch.zeros(1)), "unexpected blocks.0.attn.extra"),
        (lambda s: s.pop("blocks.1.mlp.fc2.bias"), "missing blocks.1.mlp.fc2.bias"),
        (lambda s: s.__setitem__("blocks.1.mlp.fc1.weight", torch.zeros(4 * HIDDEN, HIDDEN + 1)), "do not fit"),
        (lambda s: s.pop("x_embedder.proj.weight"), "not an original DiT state dict"),
    ],
)
def test_strict_loading_errors_are_one_line(files, tmp_path, change, message):
    path = _save_variant(files["ref"], tmp_path / "bad.pt", change)
    with pytest.raises(ProbekitError, match=message) as info:
        load_backbone(f"dit:{path}?heads={HEADS}&vae={files['vae']}")
    assert "\n" not in str(info.value)


def test_spec_errors(files, tmp_path):
    cases = {
        f"dit:{files['pt']}?vae={files['vae']}": "heads=N",  # unpublished size: head count unknown
        f"dit:{files['pt']}?config=DiT-S/2&vae={files['vae']}": "not DiT-S/2",
        f"dit:{files['pt']}?heads={HEADS}&image_size=256&vae={files['vae']}": "image_size=16",
        f"dit:{files['pt']}?heads=2&colour=red": "unknown DiT option 'colour'",
        f"dit:{files['pt']}?heads=3&vae={files['vae']}": "not divisible",
        f"dit:{files['folder']}?config=DiT-XL/2": "original .pt checkpoints only",
        f"dit:{files['folder']}?temb=both": "temb",
        f"dit:{tmp_path / 'absent.pt'}": "not found",
    }
    for spec, message in cases.items():
        with pytest.raises(ProbekitError, match=message) as info:
            load_backbone(spec)
        assert "\n" not in str(info.value), spec
    torch.save({"when": datetime.date(2024, 1, 1)}, tmp_path / "pickled.pt")
    with pytest.raises(ProbekitError, match="pickled objects besides tensors"):
        load_backbone(f"dit:{tmp_path / 'pickled.pt'}?heads=2&vae={files['vae']}")


def test_diffusers_folder_with_absent_weights_is_refused(files, tmp_path):
    from safetensors.torch import load_file, save_file

    folder = tmp_path / "partial"
    _diffusers_dit(files["ref"]).save_pretrained(folder)
    weights = load_file(folder / "diffusion_pytorch_model.safetensors")
    del weights["transformer_blocks.1.ff.net.2.bias"]
    weights["transformer_blocks.0.extra.weight"] = torch.zeros(1)
    save_file(weights, folder / "diffusion_pytorch_model.safetensors")
    with pytest.raises(
        ProbekitError, match=r"missing transformer_blocks\.1\.ff\.net\.2\.bias.*unexpected transformer_blocks\.0\.extra"
    ) as info:
        load_backbone(f"dit:{folder}?vae={files['vae']}")
    assert "\n" not in str(info.value)


def test_vae_none_runs_the_transformer_on_pixels(files, original):
    """``vae=none``: no latent encoder; images are fed at the network's own size and channels."""
    for spec in (f"dit:{files['pt']}?heads={HEADS}&vae=none", f"dit:{files['folder']}?vae=none"):
        pixels = load_backbone(spec)
        assert pixels.vae is None and pixels.input_channels == 4 and pixels.input_size == (LATENT, LATENT)
        x = _latents()
        assert torch.equal(pixels.encode(x), x)
        assert pixels.weights_key is not None  # every weight is local: the hash can be remembered
    pixels = load_backbone(f"dit:{files['pt']}?heads={HEADS}&vae=none")
    point = pixels.schedule.point(100)
    torch.testing.assert_close(pixels.forward(_latents(), point), original.forward(_latents(), point))
    with pytest.raises(ProbekitError, match=f"image_size={LATENT}"):
        load_backbone(f"dit:{files['pt']}?heads={HEADS}&vae=none&image_size={8 * LATENT}")
