"""Stable Diffusion pipelines: a tiny random pipeline (CLIP text encoder and tokenizer,
UNet2DConditionModel, AutoencoderKL, scheduler) saved with save_pretrained; features checked against
a hand-written call of the diffusers UNet on the same latents and empty-prompt embeddings."""

import json

import numpy as np
import pytest
import torch

from probekit.errors import ProbekitError
from probekit.models import load_backbone
from probekit.models.sd import StableDiffusionBackbone
from probekit.pooling import Pooling

SCALE = 0.3  # not SD's 0.18215, so a hard-coded factor would show


def _tokenizer(folder):
    from transformers import CLIPTokenizer

    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1, "a</w>": 2, "photo</w>": 3, "o": 4, "f</w>": 5}
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    tok = CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"), model_max_length=7, pad_token="<|endoftext|>")
    return tok


@pytest.fixture(scope="module")
def pipe(tmp_path_factory):
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    root = tmp_path_factory.mktemp("sd")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        unet = UNet2DConditionModel(
            sample_size=8, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(8, 16),
            down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
            cross_attention_dim=12, attention_head_dim=4, norm_num_groups=4,
        )
        vae = AutoencoderKL(
            in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
            block_out_channels=(8, 16), layers_per_block=1, latent_channels=4, norm_num_groups=4, sample_size=16,
            scaling_factor=SCALE,
        )
        text = CLIPTextModel(CLIPTextConfig(vocab_size=6, hidden_size=12, intermediate_size=16, num_hidden_layers=1,
                                            num_attention_heads=2, max_position_embeddings=7, eos_token_id=1, bos_token_id=0, pad_token_id=1))
    unet.save_pretrained(root / "unet")
    vae.save_pretrained(root / "vae")
    text.save_pretrained(root / "text_encoder")
    (root / "tokenizer").mkdir()
    _tokenizer(root / "tokenizer").save_pretrained(root / "tokenizer")
    DDPMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, prediction_type="v_prediction").save_pretrained(root / "scheduler")
    (root / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionPipeline"}))
    return root, unet.eval(), vae.eval(), text.eval()


def test_features_equal_a_hand_written_unet_call(pipe):
    root, unet, vae, text = pipe
    backbone = load_backbone(f"sd:{root}")
    assert isinstance(backbone, StableDiffusionBackbone) and backbone.input_size == (16, 16)
    assert backbone.prediction_type == "v_prediction" and backbone.schedule.beta_schedule == "scaled_linear"
    images = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(1)) * 2 - 1
    with torch.no_grad():
        latents = vae.encode(images).latent_dist.mean * SCALE
        ids = torch.tensor([[0, 1, 1, 1, 1, 1, 1]])  # "" -> <start> <end> padded with <end> to 7 tokens
        context = text(ids).last_hidden_state.expand(2, -1, -1)
    torch.testing.assert_close(backbone.encode(images), latents)
    captured = {}
    handles = [unet.mid_block.register_forward_hook(lambda _m, _a, out: captured.__setitem__("mid", out)),
               unet.down_blocks[0].attentions[0].register_forward_hook(lambda _m, _a, out: captured.__setitem__("attn", out))]
    with torch.no_grad():
        unet(latents, torch.full((2,), 300.0), encoder_hidden_states=context)
    for handle in handles:
        handle.remove()
    point = backbone.schedule.point(300)
    feats = backbone.features(latents, point, ["mid_block", "down_blocks.0.attentions.0"], Pooling())
    np.testing.assert_allclose(feats["mid_block"].numpy(), captured["mid"].mean(dim=(2, 3)).numpy(), rtol=1e-5, atol=1e-6)
    attn = captured["attn"][0] if isinstance(captured["attn"], tuple) else captured["attn"].sample
    np.testing.assert_allclose(feats["down_blocks.0.attentions.0"].numpy(), attn.mean(dim=(2, 3)).numpy(), rtol=1e-5, atol=1e-6)
    names = [layer.name for layer in backbone.layers()]
    assert "down_blocks.0.resnets.0" in names and "up_blocks.1.attentions.0" in names


def test_missing_parts_are_one_line(tmp_path):
    with pytest.raises(ProbekitError, match="cannot load a Stable Diffusion pipeline"):
        load_backbone(f"sd:{tmp_path}")


def test_random_init_draws_a_fresh_unet_and_keeps_the_vae_and_text_encoder(pipe, tmp_path):
    """--random-init re-initialises the denoiser only: same latents, same empty-prompt conditioning."""
    import shutil

    from diffusers import UNet2DConditionModel

    root, unet, vae, text = pipe
    bare = tmp_path / "pipe"
    shutil.copytree(root, bare)
    for weights in (bare / "unet").glob("diffusion_pytorch_model.*"):
        weights.unlink()  # the UNet's config only: its weights must not be needed
    twin = load_backbone(f"sd:{bare}", random_init=True, seed=5)
    assert twin.model_id == f"sd:{bare} (random init, seed 5)"
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(5)
        expected = UNet2DConditionModel.from_config(unet.config).state_dict()
    state = twin.net.state_dict()
    assert state.keys() == expected.keys() == unet.state_dict().keys()
    for key in state:
        torch.testing.assert_close(state[key], expected[key], rtol=0, atol=0)
    assert any(not torch.equal(state[key], unet.state_dict()[key]) for key in state)
    for mine, saved in ((twin.vae, vae), (twin.text_encoder, text)):
        for key, value in saved.state_dict().items():
            torch.testing.assert_close(mine.state_dict()[key], value, rtol=0, atol=0)
    with torch.no_grad():
        context = text(torch.tensor([[0, 1, 1, 1, 1, 1, 1]])).last_hidden_state
    torch.testing.assert_close(twin.prompt_embeds, context)
    images = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(2)) * 2 - 1
    with torch.no_grad():
        torch.testing.assert_close(twin.encode(images), vae.encode(images).latent_dist.mean * SCALE)
    again = load_backbone(f"sd:{bare}", random_init=True, seed=5)
    point = twin.schedule.point(100)
    x = twin.encode(images)
    first, second = (b.features(x, point, ["mid_block"], Pooling())["mid_block"] for b in (twin, again))
    np.testing.assert_array_equal(first.numpy(), second.numpy())
    trained = load_backbone(f"sd:{root}")
    assert len({twin.weights_sha256(), again.weights_sha256()}) == 1
    assert twin.weights_sha256() not in (trained.weights_sha256(), load_backbone(f"sd:{bare}", random_init=True, seed=6).weights_sha256())
    with pytest.raises(ProbekitError, match="cannot load a Stable Diffusion pipeline"):
        load_backbone(f"sd:{bare}")  # without --random-init the missing UNet weights are an error
