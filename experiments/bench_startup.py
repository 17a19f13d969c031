"""Start-up cost of opening a large checkpoint, first and second time (weights hash, FLOP count).

Writes (once) a Stable Diffusion 1.5-sized pipeline with random weights: diffusers' default
``UNet2DConditionModel`` (860 M parameters, SD 1.5's UNet config), SD's ``AutoencoderKL`` (84 M)
at 512 px, and a one-layer 768-wide CLIP text encoder with a letters-only tokenizer (the text
encoder only conditions the UNet; its size does not matter here). Then it opens the pipeline in
two fresh processes that share one probekit cache folder and times, in each: loading, the weight
hash (computed in the first, remembered in the second), and the FLOP count on fake tensors
(UNet forward and VAE encoder at 512 px, no arithmetic). ``--real-forward`` also times the
one-image real forward that the count used to cost.

    python experiments/bench_startup.py --folder /tmp/sd15-random [--real-forward]
"""

from __future__ import annotations

import argparse
import json
import os
import string
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def build(folder: Path) -> None:
    import torch
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    torch.manual_seed(0)
    # diffusers' default config is SD 1.x's UNet but for the 768-wide text context and 64 px latents
    UNet2DConditionModel(sample_size=64, cross_attention_dim=768).save_pretrained(folder / "unet")
    AutoencoderKL(
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(128, 256, 512, 512),
        layers_per_block=2,
        latent_channels=4,
        sample_size=512,
    ).save_pretrained(folder / "vae")
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    vocab.update({c: len(vocab) + i for i, c in enumerate(string.ascii_lowercase)})
    vocab.update({c + "</w>": len(vocab) + i for i, c in enumerate(string.ascii_lowercase)})
    tokenizer_dir = folder / "tokenizer"
    tokenizer_dir.mkdir(parents=True, exist_ok=True)
    (tokenizer_dir / "vocab.json").write_text(json.dumps(vocab))
    (tokenizer_dir / "merges.txt").write_text("#version: 0.2\n")
    CLIPTokenizer(
        str(tokenizer_dir / "vocab.json"),
        str(tokenizer_dir / "merges.txt"),
        model_max_length=77,
        pad_token="<|endoftext|>",
    ).save_pretrained(tokenizer_dir)
    CLIPTextModel(
        CLIPTextConfig(
            vocab_size=len(vocab),
            hidden_size=768,
            intermediate_size=768,
            num_hidden_layers=1,
            num_attention_heads=12,
            max_position_embeddings=77,
            eos_token_id=1,
            bos_token_id=0,
            pad_token_id=1,
        )
    ).save_pretrained(folder / "text_encoder")
    DDPMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012).save_pretrained(
        folder / "scheduler"
    )
    (folder / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionPipeline"}))


def open_once(folder: Path, real_forward: bool) -> dict[str, float]:
    import torch

    from probekit.features.extraction import ExtractConfig, plan_extraction
    from probekit.features.flops import _probe_forward
    from probekit.models import load_backbone

    timings: dict[str, float] = {}
    started = time.perf_counter()
    backbone = load_backbone(f"sd:{folder}")
    timings["load_s"] = time.perf_counter() - started
    started = time.perf_counter()
    backbone.weights_sha256()
    timings["hash_s"] = time.perf_counter() - started
    plan = plan_extraction(backbone, ExtractConfig(timesteps=[100]))
    image = torch.zeros(1, 3, 512, 512)
    started = time.perf_counter()
    probe = _probe_forward(backbone, image, plan, "fp32")
    timings["count_s"] = time.perf_counter() - started
    timings["unet_tflop"] = probe.forward_flops / 1e12
    timings["vae_tflop"] = probe.encode_flops / 1e12
    if real_forward:
        started = time.perf_counter()
        with torch.no_grad():
            backbone.features(backbone.encode(image), plan.grid[0], plan.layers, plan.pooling)
        timings["real_forward_s"] = time.perf_counter() - started
    return timings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--folder", type=Path, default=Path(tempfile.gettempdir()) / "probekit-sd15-random")
    parser.add_argument(
        "--real-forward", action="store_true", help="also time the one-image real forward (UNet + VAE at 512 px)"
    )
    parser.add_argument("--open", action="store_true", help=argparse.SUPPRESS)  # one timed open, in this process
    args = parser.parse_args()
    if args.open:
        print(json.dumps(open_once(args.folder, args.real_forward)))
        return
    if not (args.folder / "model_index.json").is_file():
        started = time.perf_counter()
        build(args.folder)
        print(f"wrote {args.folder} in {time.perf_counter() - started:.0f} s")
    from probekit.core.precision import machine_description

    print(machine_description())
    with tempfile.TemporaryDirectory() as cache:
        env = {**os.environ, "PROBEKIT_CACHE_DIR": cache}
        for run in ("first open", "second open"):
            command = [sys.executable, __file__, "--open", "--folder", str(args.folder)]
            if args.real_forward and run == "first open":
                command.append("--real-forward")
            result = subprocess.run(command, env=env, check=True, capture_output=True, text=True)
            print(f"{run}: {result.stdout.strip().splitlines()[-1]}")


if __name__ == "__main__":
    main()
