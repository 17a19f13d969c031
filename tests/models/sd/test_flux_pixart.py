"""Flux and PixArt pipelines: tiny random pipelines built with diffusers' and transformers' own classes,
saved with save_pretrained, match diffusers' own forward (its pipelines' prompt encoding, latent
packing and position ids) within 1e-6; their kinds equal recomputations from the blocks' sub-modules.
"""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from probekit.core.errors import ProbekitError
from probekit.core.pooling import Pooling
from probekit.models import load_backbone
from tests.models.kind_math import attend, gap, inputs_of, merge_heads, split_heads
from tests.models.sd.conftest import _save_tokenizer, _t5_tokenizer, clip_text, vae

SIZE = 16  # pixels: the tiny VAE halves, Flux packs 2 x 2: 4 x 4 = 16 image tokens


def _t5(d_model: int = 16):
    from transformers import T5Config, T5EncoderModel

    return T5EncoderModel(T5Config(vocab_size=8, d_model=d_model, d_kv=4, d_ff=16, num_layers=1, num_heads=2)).eval()


def _write(root, parts: dict, pipeline: str, tokenizers: dict) -> None:
    for name, part in parts.items():
        part.save_pretrained(root / name)
    for name, kind in tokenizers.items():
        (_save_tokenizer if kind == "clip" else _t5_tokenizer)(root / name)
    (root / "model_index.json").write_text(json.dumps({"_class_name": pipeline}))


def build_flux(root, guidance: bool) -> dict:
    """A tiny FluxPipeline folder: FLUX.1-dev-like (guidance embedding) or -schnell-like; 1 double, 2 single blocks."""
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxTransformer2DModel

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(7)
        parts = {
            "transformer": FluxTransformer2DModel(
                patch_size=1,
                in_channels=16,
                out_channels=16,
                num_layers=1,
                num_single_layers=2,
                attention_head_dim=8,
                num_attention_heads=2,
                joint_attention_dim=16,
                pooled_projection_dim=12,
                guidance_embeds=guidance,
                axes_dims_rope=(2, 2, 4),
            ).eval(),
            "vae": vae(latent_channels=4, shift=0.2),
            "text_encoder": clip_text(12),
            "text_encoder_2": _t5(),
        }
    _write(root, parts, "FluxPipeline", {"tokenizer": "clip", "tokenizer_2": "t5"})
    FlowMatchEulerDiscreteScheduler(shift=3.0, use_dynamic_shifting=True).save_pretrained(root / "scheduler")
    return parts


@pytest.fixture(scope="module", params=[True, False], ids=["dev", "schnell"])
def flux_pipe(request, tmp_path_factory):
    root = tmp_path_factory.mktemp("flux")
    return root, build_flux(root, request.param)


def _diffusers_flux(root, parts, x_t, s):
    """The noise prediction as FluxPipeline computes it: its own prompt encoding, packing, ids and unpacking."""
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxPipeline
    from transformers import AutoTokenizer

    pipe = FluxPipeline(
        scheduler=FlowMatchEulerDiscreteScheduler.from_pretrained(root / "scheduler"),
        vae=parts["vae"],
        text_encoder=parts["text_encoder"],
        tokenizer=AutoTokenizer.from_pretrained(root / "tokenizer"),
        text_encoder_2=parts["text_encoder_2"],
        tokenizer_2=AutoTokenizer.from_pretrained(root / "tokenizer_2"),
        transformer=parts["transformer"],
    )
    batch, channels, height, width = x_t.shape
    with torch.no_grad():
        embeds, pooled, text_ids = pipe.encode_prompt(prompt="", prompt_2=None, max_sequence_length=512)
        packed = FluxPipeline._pack_latents(x_t, batch, channels, height, width)
        ids = FluxPipeline._prepare_latent_image_ids(batch, height // 2, width // 2, x_t.device, x_t.dtype)
        guidance = torch.full([batch], 3.5) if parts["transformer"].config.guidance_embeds else None
        out = parts["transformer"](
            hidden_states=packed,
            timestep=torch.full([batch], s),
            guidance=guidance,
            pooled_projections=pooled.expand(batch, -1),
            encoder_hidden_states=embeds.expand(batch, -1, -1),
            txt_ids=text_ids,
            img_ids=ids,
        ).sample
    return FluxPipeline._unpack_latents(out, height * 2, width * 2, 2)  # the VAE halves: pixels = 2 x latents


def test_flux_forward_equals_the_pipelines_own(flux_pipe):
    root, parts = flux_pipe
    backbone = load_backbone(f"sd:{root}?size={SIZE}")
    assert backbone.framework == "flux" and backbone.input_size == (SIZE, SIZE)
    assert [layer.name for layer in backbone.layers()] == [
        "transformer_blocks.0",
        "single_transformer_blocks.0",
        "single_transformer_blocks.1",
    ]
    assert backbone.layers()[2].aliases == ("layer-2",) and backbone.layers()[0].resolution == "16 tokens"
    images = torch.rand(2, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(1)) * 2 - 1
    with torch.no_grad():
        latents = (parts["vae"].encode(images).latent_dist.mean - 0.2) * parts["vae"].config.scaling_factor
    torch.testing.assert_close(backbone.encode(images), latents)
    point = backbone.schedule.point(400)
    noise = torch.randn(latents.shape, generator=torch.Generator().manual_seed(2))
    x_t = backbone.schedule.add_noise(latents, noise, point)
    torch.testing.assert_close(x_t, 0.6 * latents + 0.4 * noise)
    assert point.model_input == pytest.approx(0.4)
    want = _diffusers_flux(root, parts, x_t, 0.4)
    torch.testing.assert_close(backbone.forward(x_t, point), want, atol=1e-6, rtol=0)
    # block outputs: the image tokens after each block, from a hook on the pipeline's own call
    block = parts["transformer"].single_transformer_blocks[1]
    seen = {}
    handle = block.register_forward_hook(lambda _m, _a, out: seen.__setitem__("out", out[1]))
    try:
        _diffusers_flux(root, parts, x_t, 0.4)
    finally:
        handle.remove()
    got = backbone.features(x_t, point, ["layer-2"], Pooling(1))["layer-2"]
    torch.testing.assert_close(got, seen["out"].mean(dim=1), atol=1e-6, rtol=0)


def test_flux_kinds_equal_recomputations(flux_pipe):
    root, _ = flux_pipe
    backbone = load_backbone(f"sd:{root}?size={SIZE}")
    net = backbone.net
    single, double = net.single_transformer_blocks[0], net.transformer_blocks[0]
    s_host, d_host = "single_transformer_blocks.0", "transformer_blocks.0"
    names = [
        f"{s_host}.attn:q",
        f"{s_host}.attn:attn_pre",
        f"{s_host}:ffn",
        f"{s_host}:increment",
        f"{s_host}.norm:gate_msa",
        f"{d_host}.attn:k",
        f"{d_host}:text",
    ]
    kinds = {layer.name: layer for layer in backbone.kind_layers()}
    assert kinds[f"{s_host}.attn:q"].resolution == "16 tokens"  # image tokens only, not the text before them
    assert f"{s_host}.attn:attn_out" not in kinds  # single blocks' attention has no output projection
    x = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(3))
    point = backbone.schedule.point(700)
    with inputs_of(single, double) as calls:
        got = backbone.features(x, point, names, Pooling(1))
    _, s_kwargs = calls[0][-1]
    _, d_kwargs = calls[1][-1]
    with torch.no_grad():
        hidden, context, temb = s_kwargs["hidden_states"], s_kwargs["encoder_hidden_states"], s_kwargs["temb"]
        rotary = s_kwargs["image_rotary_emb"]
        text = context.shape[1]
        joint = torch.cat([context, hidden], dim=1)
        shift, scale, gate = single.norm.linear(F.silu(temb)).chunk(3, dim=1)
        normed = single.norm.norm(joint) * (1 + scale[:, None]) + shift[:, None]
        attn = single.attn
        q, k, v = attn.to_q(normed), attn.to_k(normed), attn.to_v(normed)
        from diffusers.models.embeddings import apply_rotary_emb

        qh = apply_rotary_emb(attn.norm_q(q.unflatten(-1, (attn.heads, -1))), rotary, sequence_dim=1)
        kh = apply_rotary_emb(attn.norm_k(k.unflatten(-1, (attn.heads, -1))), rotary, sequence_dim=1)
        vh = v.unflatten(-1, (attn.heads, -1))
        pre = merge_heads(attend(qh.transpose(1, 2), kh.transpose(1, 2), vh.transpose(1, 2)))
        mlp = F.gelu(single.proj_mlp(normed), approximate="tanh")
        out = joint + gate[:, None] * single.proj_out(torch.cat([pre, mlp], dim=2))
        d_hidden, d_context, d_temb = (d_kwargs[key] for key in ("hidden_states", "encoder_hidden_states", "temb"))
        d_shift, d_scale, _ = double.norm1.linear(F.silu(d_temb)).chunk(6, dim=1)[:3]
        d_k = double.attn.to_k(double.norm1.norm(d_hidden) * (1 + d_scale[:, None]) + d_shift[:, None])
        d_text, _ = double(
            hidden_states=d_hidden,
            encoder_hidden_states=d_context,
            temb=d_temb,
            image_rotary_emb=d_kwargs["image_rotary_emb"],
        )
    image = slice(text, None)
    want = {
        names[0]: q[:, image],
        names[1]: pre[:, image],
        names[2]: mlp[:, image],
        names[3]: out[:, image] - hidden,
        names[4]: gate,
        names[5]: d_k,
        names[6]: d_text,
    }
    for name, tensor in want.items():
        torch.testing.assert_close(got[name], gap(tensor), atol=2e-5, rtol=0, msg=name)


def test_flux_size_option_is_checked(flux_pipe, sd3_pipe):
    root, _ = flux_pipe
    with pytest.raises(ProbekitError, match="does not pack"):
        load_backbone(f"sd:{root}?size=18")
    with pytest.raises(ProbekitError, match="unknown sd: option 'side'"):
        load_backbone(f"sd:{root}?side=16")
    with pytest.raises(ProbekitError, match="size= applies to Flux pipelines only"):
        load_backbone(f"sd:{sd3_pipe[0]}?size=16")


def build_pixart(root, pipeline: str) -> dict:
    """A tiny PixArt pipeline folder (``pipeline``: PixArtSigmaPipeline or PixArtAlphaPipeline)."""
    from diffusers import DPMSolverMultistepScheduler, PixArtTransformer2DModel

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(8)
        parts = {
            "transformer": PixArtTransformer2DModel(
                num_attention_heads=2,
                attention_head_dim=6,
                in_channels=4,
                out_channels=8,
                num_layers=2,
                cross_attention_dim=12,
                caption_channels=16,
                sample_size=8,
                patch_size=2,
                norm_type="ada_norm_single",
            ).eval(),
            "vae": vae(),
            "text_encoder": _t5(),
        }
    _write(root, parts, pipeline, {"tokenizer": "t5"})
    DPMSolverMultistepScheduler(beta_schedule="linear", beta_start=1e-4, beta_end=0.02).save_pretrained(
        root / "scheduler"
    )
    return parts


@pytest.fixture(scope="module", params=["PixArtSigmaPipeline", "PixArtAlphaPipeline"])
def pixart_pipe(request, tmp_path_factory):
    root = tmp_path_factory.mktemp("pixart")
    return root, build_pixart(root, request.param), request.param


def test_pixart_forward_and_kinds_equal_diffusers(pixart_pipe):
    from diffusers import PixArtAlphaPipeline, PixArtSigmaPipeline
    from transformers import AutoTokenizer

    root, parts, pipeline = pixart_pipe
    backbone = load_backbone(f"sd:{root}")
    assert backbone.framework == "pixart" and backbone.input_size == (SIZE, SIZE)
    tokens = 300 if pipeline == "PixArtSigmaPipeline" else 120
    pipe = (PixArtSigmaPipeline if tokens == 300 else PixArtAlphaPipeline)(
        tokenizer=AutoTokenizer.from_pretrained(root / "tokenizer"),
        text_encoder=parts["text_encoder"],
        vae=parts["vae"],
        transformer=parts["transformer"],
        scheduler=None,
    )
    x = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(4))
    point = backbone.schedule.point(250)
    with torch.no_grad():
        embeds, mask, _, _ = pipe.encode_prompt(
            "", do_classifier_free_guidance=False, clean_caption=False, max_sequence_length=tokens
        )
        want = parts["transformer"](
            x,
            encoder_hidden_states=embeds.expand(2, -1, -1),
            encoder_attention_mask=mask.expand(2, -1),
            timestep=torch.full([2], 250),
            added_cond_kwargs={"resolution": None, "aspect_ratio": None},
        ).sample
    assert embeds.shape[1] == tokens
    torch.testing.assert_close(backbone.forward(x, point), want, atol=1e-6, rtol=0)
    block = backbone.net.transformer_blocks[1]
    host = "transformer_blocks.1"
    names = [f"{host}:{m}" for m in ("shift_msa", "scale_mlp", "gate_mlp")] + [f"{host}.attn2:q", f"{host}:increment"]
    with inputs_of(block) as calls:
        got = backbone.features(x, point, names + [host], Pooling(1))
    args, kwargs = calls[0][-1]
    hidden = args[0] if args else kwargs["hidden_states"]
    with torch.no_grad():
        timestep = kwargs["timestep"]
        table = (block.scale_shift_table[None] + timestep.reshape(2, 6, -1)).unbind(dim=1)
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = table
        normed = block.norm1(hidden) * (1 + scale_msa[:, None]) + shift_msa[:, None]
        attn1 = block.attn1
        h = hidden + gate_msa[:, None] * attn1.to_out[0](
            merge_heads(attend(*(split_heads(f(normed), attn1.heads) for f in (attn1.to_q, attn1.to_k, attn1.to_v))))
        )
        q2 = block.attn2.to_q(h)  # PixArt's cross-attention reads the residual stream without a norm
    want = {names[0]: shift_msa, names[1]: scale_mlp, names[2]: gate_mlp, names[3]: q2}
    for name, tensor in want.items():
        torch.testing.assert_close(got[name], gap(tensor), atol=2e-5, rtol=0, msg=name)
    # the increment is the block's output minus its input
    torch.testing.assert_close(got[f"{host}:increment"], got[host] - gap(hidden), atol=2e-5, rtol=0)
