"""Same seeds -> same weights, before and after a change to the training code: trains a tiny
DDPM (probekit.train.train, with warm-up) and fine-tunes a tiny random UNet
(probekit.analyses.finetune, warm-up then cosine, crops, flips, noise, a partial last batch), and
prints a SHA-256 of every saved tensor. Run it on two trees and compare the lines:

    PYTHONPATH=. python experiments/check_training_identity.py OUT_DIR
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import numpy as np
import torch


def _digest(state: dict) -> str:
    h = hashlib.sha256()
    for key in sorted(state):
        value = state[key]
        if isinstance(value, torch.Tensor):
            h.update(key.encode())
            h.update(value.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def main(out: Path) -> None:
    from diffusers import UNet2DModel

    from probekit.analyses.finetune import FinetuneConfig, Finetuner
    from probekit.data.base import ImageDataset, ImageSplit
    from probekit.models import load_backbone
    from probekit.train import TrainConfig, train

    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    data = out / "tiny.npz"
    np.savez(
        data,
        x=rng.integers(0, 256, size=(40, 12, 12), dtype=np.uint8),
        y=np.arange(40) % 4,
        x_test=rng.integers(0, 256, size=(8, 12, 12), dtype=np.uint8),
        y_test=np.arange(8) % 4,
    )
    unet = {
        "sample_size": 16,
        "in_channels": 1,
        "out_channels": 1,
        "block_out_channels": [8, 16],
        "down_block_types": ["DownBlock2D", "AttnDownBlock2D"],
        "up_block_types": ["AttnUpBlock2D", "UpBlock2D"],
        "layers_per_block": 1,
        "norm_num_groups": 4,
        "attention_head_dim": 8,
    }
    config = TrainConfig.from_dict(
        dict(
            data=str(data), unet=unet, batch_size=8, total_steps=12, checkpoint_every=6, warmup_steps=4,
            ema_decay=0.9, log_every=1, sample_count=4, sample_steps=2, num_train_timesteps=100, precision="fp32",
        )
    )  # fmt: skip
    train(config, out / "train", progress=False)
    state = torch.load(out / "train" / "state.pt", weights_only=True)
    print("train model", _digest(state["model"]))
    print("train ema  ", _digest(state["ema"]))

    torch.manual_seed(0)
    UNet2DModel(**{**unet, "block_out_channels": [8, 16]}).save_pretrained(out / "unet")
    labels = (np.arange(44) % 3).astype(np.int64)
    images = (rng.integers(0, 50, size=(44, 16, 16, 1)) + 90 * labels[:, None, None, None]).astype(np.uint8)
    test = ImageSplit(images[:12], labels[:12], np.arange(12, dtype=np.int64))
    dataset = ImageDataset("toy", {"train": ImageSplit(images, labels, np.arange(44)), "test": test}, list("abc"), "m")
    tune = FinetuneConfig(
        timestep=5, layer="down_blocks.1.resnets.0", epochs=3, batch_size=8, lr_head=1e-2, lr_body=1e-3,
        warmup_epochs=0.5, val_fraction=0.25,
    )  # fmt: skip
    Finetuner(load_backbone(str(out / "unet")), dataset, out / "ft", tune).run(progress=False)
    state = torch.load(out / "ft" / "state.pt", weights_only=True)
    print("finetune model", _digest(state["model"]))
    print("finetune best ", _digest(torch.load(out / "ft" / "best.pt", weights_only=True)))
    print("finetune curves", hashlib.sha256((out / "ft" / "curves.csv").read_bytes()).hexdigest())


if __name__ == "__main__":
    target = Path(sys.argv[1])
    target.mkdir(parents=True, exist_ok=True)
    main(target)
