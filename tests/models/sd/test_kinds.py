"""Activation kinds of Stable Diffusion's UNet (spatial transformers, self and cross attention, GEGLU)
and of SD3's MMDiT (joint attention with q/k norm, AdaLN modulation, the text stream) equal
hand-written recomputations from the modules' own sub-modules, on tiny pipelines whose configs
differ from the shared fixtures.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from probekit.core.pooling import Pooling
from probekit.models import load_backbone
from tests.models.kind_math import attend, attention, gap, inputs_of, merge_heads, split_heads
from tests.models.sd.conftest import _save, clip_text, vae

ATOL = 2e-5
MODULATION = ("shift_msa", "scale_msa", "gate_msa", "shift_mlp", "scale_mlp", "gate_mlp")


@pytest.fixture(scope="module")
def sd_backbone(tmp_path_factory):
    from diffusers import DDPMScheduler, UNet2DConditionModel

    root = tmp_path_factory.mktemp("sd-kinds")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(5)
        unet = UNet2DConditionModel(
            sample_size=8,
            in_channels=4,
            out_channels=4,
            layers_per_block=1,
            block_out_channels=(12, 24),
            down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
            up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
            cross_attention_dim=10,
            attention_head_dim=3,
            norm_num_groups=4,
        ).eval()
        _save(root, {"unet": unet, "vae": vae(), "text_encoder": clip_text(10)}, "StableDiffusionPipeline")
    DDPMScheduler(beta_schedule="scaled_linear").save_pretrained(root / "scheduler")
    return load_backbone(f"sd:{root}")


def test_sd_unet_kinds_equal_a_written_out_spatial_transformer(sd_backbone):
    net = sd_backbone.net
    spatial = net.down_blocks[0].attentions[0]
    block = spatial.transformer_blocks[0]
    host = "down_blocks.0.attentions.0"
    inner = f"{host}.transformer_blocks.0"
    names = [
        *(f"{inner}.attn1:{kind}" for kind in ("q", "k", "v", "attn_pre", "attn_out")),
        f"{inner}.attn2:q",
        f"{inner}.attn2:attn_pre",
        f"{inner}.ff:ffn",
        f"{inner}:increment",
        f"{host}:increment",
    ]
    kinds = {layer.name for layer in sd_backbone.kind_layers()}
    assert f"{inner}.attn2:k" not in kinds and f"{inner}.attn2:v" not in kinds  # keys / values of the prompt alone
    torch.manual_seed(2)
    x = torch.randn(2, 4, 8, 8)
    point = sd_backbone.schedule.point(500)
    with inputs_of(block, spatial) as calls:
        got = sd_backbone.features(x, point, names, Pooling(1))
    args, kwargs = calls[0][-1]
    hidden, context = args[0] if args else kwargs["hidden_states"], kwargs["encoder_hidden_states"]
    spatial_in = calls[1][-1][0][0]
    with torch.no_grad():
        a1, a2 = block.attn1, block.attn2
        n1 = block.norm1(hidden)
        q, k, v = a1.to_q(n1), a1.to_k(n1), a1.to_v(n1)
        pre = attention(q, k, v, a1.heads)
        out = a1.to_out[0](pre)
        h = hidden + out
        n2 = block.norm2(h)
        q2 = a2.to_q(n2)
        pre2 = attention(q2, a2.to_k(context), a2.to_v(context), a2.heads)
        h = h + a2.to_out[0](pre2)
        value, gate = block.ff.net[0].proj(block.norm3(h)).chunk(2, dim=-1)
        ffn = value * F.gelu(gate)
        h = h + block.ff.net[2](ffn)
        batch, channels, side, _ = spatial_in.shape
        grid = h.reshape(batch, side, side, channels).permute(0, 3, 1, 2)  # tokens are row-major pixels
        spatial_increment = spatial.proj_out(grid)
    want = dict(zip(names, (q, k, v, pre, out, q2, pre2, ffn, h - hidden, spatial_increment), strict=True))
    for name, tensor in want.items():
        torch.testing.assert_close(got[name], gap(tensor), atol=ATOL, rtol=0, msg=name)


@pytest.fixture(scope="module")
def sd3_backbone(tmp_path_factory):
    from diffusers import FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel

    root = tmp_path_factory.mktemp("sd3-kinds")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(6)
        parts = {
            "transformer": SD3Transformer2DModel(
                sample_size=8,
                patch_size=2,
                in_channels=4,
                num_layers=2,
                attention_head_dim=6,
                num_attention_heads=2,
                joint_attention_dim=12,
                caption_projection_dim=12,
                pooled_projection_dim=6 + 10,
                out_channels=4,
                pos_embed_max_size=8,
                qk_norm="rms_norm",
            ).eval(),
            "vae": vae(),
            "text_encoder": clip_text(4, projection=6),
            "text_encoder_2": clip_text(8, projection=10),
        }
    _save(root, parts, "StableDiffusion3Pipeline")
    FlowMatchEulerDiscreteScheduler().save_pretrained(root / "scheduler")
    return load_backbone(f"sd:{root}")


def test_sd3_kinds_equal_a_written_out_joint_block(sd3_backbone):
    block = sd3_backbone.net.transformer_blocks[0]
    host = "transformer_blocks.0"
    attn_kinds = ("q", "k", "v", "attn_pre", "attn_out")
    names = [
        *(f"{host}.attn:{kind}" for kind in attn_kinds),
        f"{host}.ff:ffn",
        f"{host}:increment",
        f"{host}:text",
        *(f"{host}.norm1:{m}" for m in MODULATION),
    ]
    kinds = {layer.name for layer in sd3_backbone.kind_layers()}
    assert "transformer_blocks.1:text" not in kinds  # the last block returns no text tokens
    torch.manual_seed(3)
    x = torch.randn(2, 4, 8, 8)
    point = sd3_backbone.schedule.point(600)
    with inputs_of(block) as calls:
        got = sd3_backbone.features(x, point, names, Pooling(1))
    _, kwargs = calls[0][-1]
    hidden, context, temb = kwargs["hidden_states"], kwargs["encoder_hidden_states"], kwargs["temb"]
    with torch.no_grad():
        mod = block.norm1.linear(F.silu(temb)).chunk(6, dim=1)
        shift, scale, gate, shift_mlp, scale_mlp, gate_mlp = mod
        c_shift, c_scale, c_gate, c_shift_mlp, c_scale_mlp, c_gate_mlp = block.norm1_context.linear(F.silu(temb)).chunk(
            6, dim=1
        )
        normed = block.norm1.norm(hidden) * (1 + scale[:, None]) + shift[:, None]
        c_normed = block.norm1_context.norm(context) * (1 + c_scale[:, None]) + c_shift[:, None]
        attn = block.attn
        q, k, v = attn.to_q(normed), attn.to_k(normed), attn.to_v(normed)
        heads = attn.heads
        qh, kh = attn.norm_q(split_heads(q, heads)), attn.norm_k(split_heads(k, heads))
        cq = attn.norm_added_q(split_heads(attn.add_q_proj(c_normed), heads))
        ck = attn.norm_added_k(split_heads(attn.add_k_proj(c_normed), heads))
        cv = split_heads(attn.add_v_proj(c_normed), heads)
        joint = merge_heads(
            attend(
                torch.cat([qh, cq], dim=2), torch.cat([kh, ck], dim=2), torch.cat([split_heads(v, heads), cv], dim=2)
            )
        )
        tokens = hidden.shape[1]
        pre, c_pre = joint[:, :tokens], joint[:, tokens:]
        out = attn.to_out[0](pre)
        h = hidden + gate[:, None] * out
        n2 = block.norm2(h) * (1 + scale_mlp[:, None]) + shift_mlp[:, None]
        ffn = F.gelu(block.ff.net[0].proj(n2), approximate="tanh")
        h = h + gate_mlp[:, None] * block.ff.net[2](ffn)
        c = context + c_gate[:, None] * attn.to_add_out(c_pre)
        c_n2 = block.norm2_context(c) * (1 + c_scale_mlp[:, None]) + c_shift_mlp[:, None]
        c = c + c_gate_mlp[:, None] * block.ff_context(c_n2)
    want = dict(zip(names[:8], (q, k, v, pre, out, ffn, h - hidden, c), strict=True))
    want.update({f"{host}.norm1:{m}": tensor for m, tensor in zip(MODULATION, mod, strict=True)})
    for name, tensor in want.items():
        torch.testing.assert_close(got[name], gap(tensor), atol=ATOL, rtol=0, msg=name)
