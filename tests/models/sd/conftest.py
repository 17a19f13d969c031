"""Tiny random Stable Diffusion pipelines (1.x-style, XL, 3 with and without T5), saved with
save_pretrained in the real pipeline layout. Every tokenizer pads to ``MAX_TOKENS``.
"""

from __future__ import annotations

import json
import string
from pathlib import Path

import pytest
import torch

SCALE = 0.3  # not SD's 0.18215, so a hard-coded factor would show
SHIFT = 0.1  # SD3's VAE subtracts a shift before scaling
MAX_TOKENS = 12
#: <start>, <end> (also the padding), then every letter alone and at the end of a word
VOCAB = {"<|startoftext|>": 0, "<|endoftext|>": 1}
VOCAB.update({c: len(VOCAB) + i for i, c in enumerate(string.ascii_lowercase)})
VOCAB.update({c + "</w>": len(VOCAB) + i for i, c in enumerate(string.ascii_lowercase)})


def clip_ids(text: str) -> torch.Tensor:
    """(1, MAX_TOKENS) token ids of ``text`` written out by hand: no merges, so one token per letter."""
    ids = [0]
    for word in text.split():
        ids += [VOCAB[c] for c in word[:-1]] + [VOCAB[word[-1] + "</w>"]]
    ids = (ids[: MAX_TOKENS - 1] + [1] + [1] * MAX_TOKENS)[:MAX_TOKENS]
    return torch.tensor([ids])


def _save_tokenizer(folder: Path) -> None:
    from transformers import CLIPTokenizer

    folder.mkdir(parents=True)
    (folder / "vocab.json").write_text(json.dumps(VOCAB))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    tokenizer = CLIPTokenizer(
        str(folder / "vocab.json"), str(folder / "merges.txt"), model_max_length=MAX_TOKENS, pad_token="<|endoftext|>"
    )
    tokenizer.save_pretrained(folder)


def clip_text(hidden: int, projection: int | None = None):
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    config = CLIPTextConfig(
        vocab_size=len(VOCAB),
        hidden_size=hidden,
        intermediate_size=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        max_position_embeddings=MAX_TOKENS,
        eos_token_id=1,
        bos_token_id=0,
        pad_token_id=1,
        projection_dim=projection or hidden,
    )
    return (CLIPTextModel if projection is None else CLIPTextModelWithProjection)(config).eval()


def vae(latent_channels: int = 4, shift: float | None = None):
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2,
        block_out_channels=(8, 16),
        layers_per_block=1,
        latent_channels=latent_channels,
        norm_num_groups=4,
        sample_size=16,
        scaling_factor=SCALE,
        shift_factor=shift,
    ).eval()


def _unet(cross_attention_dim: int, **extra):
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(
        sample_size=8,
        in_channels=4,
        out_channels=4,
        layers_per_block=1,
        block_out_channels=(8, 16),
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=cross_attention_dim,
        attention_head_dim=4,
        norm_num_groups=4,
        **extra,
    ).eval()


def _save(root: Path, parts: dict, pipeline: str) -> None:
    for name, part in parts.items():
        part.save_pretrained(root / name)
    for name in [n.replace("text_encoder", "tokenizer") for n in parts if n.startswith("text_encoder")]:
        if name != "tokenizer_3":
            _save_tokenizer(root / name)
    (root / "model_index.json").write_text(json.dumps({"_class_name": pipeline}))


@pytest.fixture(scope="session")
def sd_pipe(tmp_path_factory):
    """SD 1.x layout: UNet2DConditionModel, AutoencoderKL, CLIPTextModel, v-prediction DDPM scheduler."""
    from diffusers import DDPMScheduler

    root = tmp_path_factory.mktemp("sd")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        parts = {"unet": _unet(12), "vae": vae(), "text_encoder": clip_text(12)}
    _save(root, parts, "StableDiffusionPipeline")
    DDPMScheduler(
        beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, prediction_type="v_prediction"
    ).save_pretrained(root / "scheduler")
    return root, parts


@pytest.fixture(scope="session")
def sdxl_pipe(tmp_path_factory):
    """SDXL layout: a text_time UNet, CLIPTextModel (12 wide) + CLIPTextModelWithProjection (20 wide, projection 8)."""
    from diffusers import EulerDiscreteScheduler

    root = tmp_path_factory.mktemp("sdxl")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(1)
        parts = {
            "unet": _unet(
                32,
                addition_embed_type="text_time",
                addition_time_embed_dim=4,
                projection_class_embeddings_input_dim=4 * 6 + 8,
            ),
            "vae": vae(),
            "text_encoder": clip_text(12),
            "text_encoder_2": clip_text(20, projection=8),
        }
    _save(root, parts, "StableDiffusionXLPipeline")
    EulerDiscreteScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012).save_pretrained(
        root / "scheduler"
    )
    return root, parts


def _t5_tokenizer(folder: Path) -> None:
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = ["<pad>", "</s>", "<unk>", "a", "photo", "of", "cat", "dog"]
    tokenizer = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, pad_token="<pad>", eos_token="</s>", unk_token="<unk>"
    ).save_pretrained(folder)


def _sd3(tmp_path_factory, t5: bool):
    from diffusers import FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel
    from transformers import T5Config, T5EncoderModel

    root = tmp_path_factory.mktemp("sd3t5" if t5 else "sd3")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(2)
        parts = {
            "transformer": SD3Transformer2DModel(
                sample_size=8,
                patch_size=2,
                in_channels=4,
                num_layers=3,
                attention_head_dim=4,
                num_attention_heads=2,
                joint_attention_dim=16,
                caption_projection_dim=8,
                pooled_projection_dim=6 + 10,
                out_channels=4,
                pos_embed_max_size=8,
            ).eval(),
            "vae": vae(shift=SHIFT),
            "text_encoder": clip_text(4, projection=6),
            "text_encoder_2": clip_text(8, projection=10),
        }
        if t5:
            parts["text_encoder_3"] = T5EncoderModel(
                T5Config(vocab_size=8, d_model=16, d_kv=4, d_ff=16, num_layers=1, num_heads=2)
            ).eval()
    _save(root, parts, "StableDiffusion3Pipeline")
    if t5:
        _t5_tokenizer(root / "tokenizer_3")
    FlowMatchEulerDiscreteScheduler(shift=3.0).save_pretrained(root / "scheduler")
    return root, parts


@pytest.fixture(scope="session")
def sd3_pipe(tmp_path_factory):
    """SD3 layout without T5 (text_encoder_3 absent, as the pipeline allows): MMDiT, two CLIPs with projection."""
    return _sd3(tmp_path_factory, t5=False)


@pytest.fixture(scope="session")
def sd3_t5_pipe(tmp_path_factory):
    """SD3 layout with a tiny T5 encoder (16 wide = joint_attention_dim) and a word-level tokenizer."""
    return _sd3(tmp_path_factory, t5=True)
