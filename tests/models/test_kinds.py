"""Activation kinds of a UNet2DModel and a DiT equal hand-written recomputations from the modules' own
sub-modules, on tiny random models whose configs differ from the shared fixtures.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from probekit.core.errors import ProbekitError
from probekit.core.pooling import Pooling
from probekit.core.schedule import DDPMSchedule
from probekit.models.dit.backbone import DiTBackbone
from probekit.models.layers import select_layers
from probekit.models.unet import UNetBackbone
from tests.models.kind_math import attention, gap, grid2, inputs_of

ATOL = 2e-5


def _schedule() -> DDPMSchedule:
    return DDPMSchedule.from_config({"num_train_timesteps": 100, "beta_schedule": "linear"})


@pytest.fixture(scope="module")
def unet() -> UNetBackbone:
    from diffusers import UNet2DModel

    torch.manual_seed(3)
    net = UNet2DModel(
        sample_size=8,
        in_channels=3,
        out_channels=3,
        block_out_channels=(12, 24),
        down_block_types=("AttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "AttnUpBlock2D"),
        layers_per_block=1,
        norm_num_groups=4,
        attention_head_dim=6,
    )
    return UNetBackbone(net, _schedule(), "kinds-unet")


def _resnet(block: torch.nn.Module, x: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
    """ResnetBlock2D written out: (skip + conv2(act(norm2(conv1(act(norm1 x)) + proj(act temb))))) / scale."""
    h = block.conv1(F.silu(block.norm1(x)))
    h = h + block.time_emb_proj(F.silu(temb))[:, :, None, None]
    h = block.conv2(F.silu(block.norm2(h)))
    skip = block.conv_shortcut(x) if block.conv_shortcut is not None else x
    return (skip + h) / block.output_scale_factor - skip


def test_unet_kinds_equal_recomputations(unet):
    torch.manual_seed(0)
    x = torch.randn(3, 3, 8, 8)
    point = unet.schedule.point(40)
    net = unet.net
    resnet, attn = net.down_blocks[0].resnets[0], net.down_blocks[0].attentions[0]
    down, up = net.down_blocks[0].downsamplers[0], net.up_blocks[0].upsamplers[0]
    up_resnet = net.up_blocks[1].resnets[0]  # channels change: the skip goes through conv_shortcut
    names = [
        "down_blocks.0.resnets.0:increment",
        "down_blocks.0.attentions.0:q",
        "down_blocks.0.attentions.0:k",
        "down_blocks.0.attentions.0:v",
        "down_blocks.0.attentions.0:attn_pre",
        "down_blocks.0.attentions.0:attn_out",
        "down_blocks.0.attentions.0:increment",
        "down_blocks.0.downsamplers.0:out",
        "up_blocks.0.upsamplers.0:out",
        "up_blocks.1.resnets.0:increment",
        "mid_block",
    ]
    with inputs_of(resnet, attn, down, up, up_resnet) as calls:
        got = unet.features(x, point, names, Pooling(1))
        got2 = unet.features(x, point, ["down_blocks.0.attentions.0:q"], Pooling(2))
    (r_args, _), (a_args, _), (d_args, _), (u_args, _), (ur_args, _) = (c[-1] for c in calls)
    with torch.no_grad():
        want = {"down_blocks.0.resnets.0:increment": _resnet(resnet, *r_args[:2])}
        h = a_args[0]
        batch, channels, side, _ = h.shape
        tokens = attn.group_norm(h).reshape(batch, channels, side * side).transpose(1, 2)
        q, k, v = attn.to_q(tokens), attn.to_k(tokens), attn.to_v(tokens)
        pre = attention(q, k, v, attn.heads)
        out = attn.to_out[0](pre)
        increment = (out.transpose(1, 2).reshape(h.shape) + h) / attn.rescale_output_factor - h
        want.update(
            {
                "down_blocks.0.attentions.0:q": q,
                "down_blocks.0.attentions.0:k": k,
                "down_blocks.0.attentions.0:v": v,
                "down_blocks.0.attentions.0:attn_pre": pre,
                "down_blocks.0.attentions.0:attn_out": out,
                "down_blocks.0.attentions.0:increment": increment,
                "down_blocks.0.downsamplers.0:out": F.conv2d(d_args[0], down.conv.weight, down.conv.bias, 2, 1),
                "up_blocks.0.upsamplers.0:out": up.conv(F.interpolate(u_args[0], scale_factor=2.0, mode="nearest")),
                "up_blocks.1.resnets.0:increment": _resnet(up_resnet, *ur_args[:2]),
            }
        )
    assert up_resnet.conv_shortcut is not None
    for name, tensor in want.items():
        torch.testing.assert_close(got[name], gap(tensor), atol=ATOL, rtol=0, msg=name)
    torch.testing.assert_close(got2["down_blocks.0.attentions.0:q"], grid2(q), atol=ATOL, rtol=0)
    # a block output next to kinds reads what it reads alone
    torch.testing.assert_close(got["mid_block"], unet.features(x, point, ["mid_block"], Pooling(1))["mid_block"])


def test_unet_kind_table_and_selection(unet):
    kinds = unet.kind_layers()
    names = [layer.name for layer in kinds]
    blocks = unet.layers()
    assert len(set(names)) == len(names)
    assert {name.rsplit(":", 1)[1] for name in names} == {"increment", "q", "k", "v", "attn_pre", "attn_out", "out"}
    q = next(layer for layer in kinds if layer.name == "down_blocks.0.attentions.0:q")
    assert (q.channels, q.resolution) == (12, "64 tokens")
    owner = next(layer for layer in blocks if layer.name == "down_blocks.0.attentions.0")
    assert (q.depth, q.stage) == (owner.depth, owner.stage)
    everything = blocks + kinds
    # plain names, globs and indices still mean block outputs only
    assert select_layers(everything, None) == [layer.name for layer in blocks]
    assert select_layers(everything, "down_blocks.*") == select_layers(blocks, "down_blocks.*")
    assert select_layers(everything, "1:3") == select_layers(blocks, "1:3")
    assert select_layers(everything, "*:q") == [n for n in names if n.endswith(":q")]
    assert select_layers(everything, "*attentions.0:[kv]") == [
        n for n in names if n.split(":")[0].endswith("attentions.0") and n[-2:] in (":k", ":v")
    ]
    assert select_layers(everything, "all,*:*") == [layer.name for layer in sorted(everything, key=lambda x: x.depth)]
    picked = select_layers(everything, "mid_block,*:attn_out")
    depth = {layer.name: layer.depth for layer in everything}
    assert "mid_block.resnets.1" in picked and len(picked) == 5  # the canonical name of mid_block
    assert [depth[name] for name in picked] == sorted(depth[name] for name in picked)  # forward order
    with pytest.raises(ProbekitError, match="matches no kind layer.*layers --kinds"):
        select_layers(everything, "*:nope")
    with pytest.raises(ProbekitError, match="unknown activation"):
        unet.features(torch.zeros(1, 3, 8, 8), unet.schedule.point(1), ["mid_block:nope"], Pooling(1))


@pytest.fixture(scope="module")
def dit() -> DiTBackbone:
    from diffusers import DiTTransformer2DModel

    torch.manual_seed(4)
    net = DiTTransformer2DModel(
        num_attention_heads=3,
        attention_head_dim=4,
        in_channels=4,
        out_channels=4,
        num_layers=3,
        sample_size=8,
        patch_size=4,
        num_embeds_ada_norm=5,
        norm_eps=1e-6,
    )
    return DiTBackbone(net, None, _schedule(), "kinds-dit", original_temb=False)


def test_dit_kinds_equal_a_written_out_block(dit):
    torch.manual_seed(1)
    x = torch.randn(2, 4, 8, 8)
    point = dit.schedule.point(70)
    block = dit.net.transformer_blocks[1]
    host = "transformer_blocks.1"
    kinds = ["q", "k", "v", "attn_pre", "attn_out"]
    names = [f"{host}.attn1:{kind}" for kind in kinds] + [
        f"{host}.ff:ffn",
        f"{host}:increment",
        *(f"{host}.norm1:{m}" for m in ("shift_msa", "scale_msa", "gate_msa", "shift_mlp", "scale_mlp", "gate_mlp")),
    ]
    with inputs_of(block) as calls:
        got = dit.features(x, point, names, Pooling(1))
    args, kwargs = calls[0][-1]
    hidden = args[0] if args else kwargs["hidden_states"]
    with torch.no_grad():
        emb = block.norm1.emb(kwargs["timestep"], kwargs["class_labels"], hidden_dtype=hidden.dtype)
        mod = block.norm1.linear(F.silu(emb)).chunk(6, dim=1)
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = mod
        normed = block.norm1.norm(hidden) * (1 + scale_msa[:, None]) + shift_msa[:, None]
        attn = block.attn1
        q, k, v = attn.to_q(normed), attn.to_k(normed), attn.to_v(normed)
        pre = attention(q, k, v, attn.heads)
        out = attn.to_out[0](pre)
        h = hidden + gate_msa[:, None] * out
        normed2 = block.norm3(h) * (1 + scale_mlp[:, None]) + shift_mlp[:, None]
        inner = F.gelu(block.ff.net[0].proj(normed2), approximate="tanh")
        h = h + gate_mlp[:, None] * block.ff.net[2](inner)
    want = dict(zip(names[:5], (q, k, v, pre, out), strict=True))
    want[f"{host}.ff:ffn"] = inner
    want[f"{host}:increment"] = h - hidden
    names_mod = ("shift_msa", "scale_msa", "gate_msa", "shift_mlp", "scale_mlp", "gate_mlp")
    want.update({f"{host}.norm1:{m}": tensor for m, tensor in zip(names_mod, mod, strict=True)})
    for name, tensor in want.items():
        torch.testing.assert_close(got[name], gap(tensor), atol=ATOL, rtol=0, msg=name)
    # the block's output is its input plus the increment (the block output layer, read alone)
    block_out = dit.features(x, point, [host], Pooling(1))[host]
    torch.testing.assert_close(block_out, gap(h), atol=ATOL, rtol=0)
    info = {layer.name: layer for layer in dit.kind_layers()}
    assert (info[f"{host}.norm1:gate_mlp"].resolution, info[f"{host}.norm1:gate_mlp"].channels) == ("vector", 12)
    assert info[f"{host}.attn1:q"].resolution == "4 tokens" and info[f"{host}.attn1:q"].depth == 1


def test_kinds_extract_into_the_cache_beside_block_outputs(unet, tmp_path):
    import numpy as np

    from probekit.core.noise import sample_noise, split_seed
    from probekit.data import fit_images
    from probekit.data.base import ImageDataset, ImageSplit
    from probekit.features.cache import FeatureCache
    from probekit.features.extraction import ExtractConfig, extract

    rng = np.random.default_rng(0)

    def split(offset: int) -> ImageSplit:
        return ImageSplit(
            images=rng.integers(0, 256, size=(4, 8, 8, 3), dtype=np.uint8),
            labels=np.array([0, 1, 0, 1]),
            index=np.arange(4, dtype=np.int64) + offset,
        )

    data = ImageDataset("toy", {"train": split(10), "test": split(0)}, ["a", "b"], "memory")
    config = ExtractConfig(timesteps=[10], layers="mid_block,*:q", batch_size=4)
    extract(unet, data, tmp_path / "f.h5", config, progress=False)
    q = "up_blocks.1.attentions.0:q"
    with FeatureCache(tmp_path / "f.h5") as cache:
        names = [layer.name for layer in cache.layers]
        assert names == select_layers(unet.layers() + unet.kind_layers(), "mid_block,*:q")
        assert cache.file[f"train/feats/{q}"].shape == (1, 1, 4, 12)
        stored = cache.file[f"train/feats/{q}"][0, 0]
    train = data.splits["train"]
    x0, _ = fit_images(train.images, size=unet.input_size, channels=3, value_range=unet.value_range, fit="auto")
    point = unet.schedule.point(10)
    noise = sample_noise(x0.shape[1:], train.index, seed=split_seed(0, "train"), t=10, draw=0)
    direct = unet.features(unet.schedule.add_noise(x0, noise, point), point, [q], Pooling(1))[q]
    np.testing.assert_allclose(stored, direct.numpy(), atol=1e-6)


def test_compile_and_kinds_are_refused_together(unet):
    from probekit.features.extraction import ExtractConfig, plan_extraction

    with pytest.raises(ProbekitError, match="--compile does not combine with activation kinds"):
        plan_extraction(unet, ExtractConfig(layers="*:q", compile=True))
    assert plan_extraction(unet, ExtractConfig(layers="*:q")).infos[0].name.endswith(":q")
