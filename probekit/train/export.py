"""Package a training run as a shippable checkpoint folder with a model card."""

from __future__ import annotations

import csv
import json
import shutil
from collections.abc import Sequence
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from probekit.core.errors import ProbekitError

WEIGHTS = "diffusion_pytorch_model.safetensors"


def _copy_model(source: Path, dest: Path, dtype: torch.dtype | None = None) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    for name in ("config.json", "scheduler_config.json"):
        shutil.copy2(source / name, dest / name)
    if dtype is None:
        shutil.copy2(source / WEIGHTS, dest / WEIGHTS)
    else:  # diffusers loads these back as float32 (values rounded to `dtype`)
        tensors = {k: v.to(dtype) for k, v in load_file(str(source / WEIGHTS)).items()}
        save_file(tensors, str(dest / WEIGHTS))


def export_checkpoint(
    run: str | Path,
    dest: str | Path,
    *,
    intermediate_steps: Sequence[int] = (),
    intermediate_dtype: torch.dtype = torch.float16,
) -> Path:
    """Copy the run's final EMA model (float32) to ``dest`` with its samples, loss curve, record and a
    model card; add the EMA checkpoints of ``intermediate_steps`` under ``dest/intermediate/`` in
    ``intermediate_dtype`` (for accuracy-over-training plots).
    """
    run, dest = Path(run), Path(dest)
    record_path = run / "record.json"
    if not record_path.is_file():
        raise ProbekitError(f"{run} is not a finished probekit training run (no record.json): train it first")
    record = json.loads(record_path.read_text())
    if dest.exists():
        shutil.rmtree(dest)
    _copy_model(run / "model", dest)
    step = record["steps"]
    shutil.copy2(run / "samples" / f"step-{step:07d}.png", dest / "samples.png")
    shutil.copy2(run / "loss.csv", dest / "loss.csv")
    shutil.copy2(record_path, dest / "record.json")
    for s in intermediate_steps:
        source = run / "checkpoints" / f"step-{s:07d}"
        if not source.is_dir():
            raise ProbekitError(
                f"{run} has no checkpoint at step {s}: choose among "
                f"{sorted(p.name for p in (run / 'checkpoints').iterdir())}"
            )
        _copy_model(source, dest / "intermediate" / f"step-{s:07d}", intermediate_dtype)
    (dest / "README.md").write_text(model_card(record, run / "loss.csv", intermediate_steps))
    return dest


def model_card(record: dict, loss_csv: Path, intermediate_steps: Sequence[int]) -> str:
    recipe = record["recipe"]
    with loss_csv.open() as f:
        rows = list(csv.DictReader(f))
    last_losses = [float(r["loss"]) for r in rows[-10:]]
    unet = recipe["unet"]
    lines = [
        f"# {recipe['data']} DDPM (probekit train)",
        "",
        "A diffusers `UNet2DModel` pretrained only to denoise (epsilon prediction); class labels were never used.",
        "These are the EMA weights. Probe them with `probekit extract --model <this folder> ...`.",
        "",
        "| | |",
        "| --- | --- |",
        f"| architecture | UNet2DModel, channels {unet['block_out_channels']}, {unet['layers_per_block']} layers per "
        "block, "
        f"{unet['sample_size']}x{unet['sample_size']}x{unet['in_channels']}, {record['parameters'] / 1e6:.2f} M "
        "parameters |",
        f"| noise schedule | DDPM, {recipe['beta_schedule']} betas {recipe['beta_start']}..{recipe['beta_end']}, T = "
        f"{recipe['num_train_timesteps']} |",
        f"| optimiser | AdamW lr {recipe['lr']}, weight decay {recipe['weight_decay']}, {recipe['warmup_steps']} "
        "warm-up steps, "
        f"gradient clip {recipe['grad_clip']}, batch {recipe['batch_size']}, EMA decay {recipe['ema_decay']} |",
        f"| augmentation | random horizontal flip: {recipe['hflip']} |",
        f"| precision | {recipe['precision']} |",
        f"| steps | {record['steps']} |",
        f"| images seen | {record['images_seen']} ({record['epochs']} epochs of {record['train_images']} images) |",
        f"| wall time | {record['wall_seconds'] / 3600:.2f} h |",
        f"| machine | {record['machine']} |",
        f"| final training loss (mean of the last {len(last_losses)} logged) | "
        f"{sum(last_losses) / len(last_losses):.4f} |",
        "",
        f"DDIM samples of these weights ({recipe['sample_steps']} steps, eta 0):",
        "",
        "![samples](samples.png)",
        "",
        "Files: `config.json`, `diffusion_pytorch_model.safetensors` (float32), `scheduler_config.json`, "
        "`loss.csv` (step, loss, lr), `record.json` (the full recipe).",
    ]
    if intermediate_steps:
        lines += [
            "",
            "Intermediate EMA checkpoints of the same run (float16 weights, loaded as float32): "
            + ", ".join(f"`intermediate/step-{s:07d}`" for s in intermediate_steps)
            + ".",
        ]
    return "\n".join(lines) + "\n"
