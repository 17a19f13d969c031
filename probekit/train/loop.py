"""DDPM pretraining loop with exact resume.

Every random choice of step ``s`` (which images, their flips, timesteps and noise) is a pure
function of (seed, s), and the data order of an epoch a pure function of (seed, epoch). A run
resumed from its last checkpoint therefore replays exactly the steps an uninterrupted run takes;
the checkpoint holds the weights, the EMA, the optimizer and the learning-rate schedule.

Output folder::

    model/                  EMA weights (save_pretrained: config.json + safetensors) and
                            scheduler_config.json: load it with ``probekit extract --model .../model``
    checkpoints/step-N/     EMA weights at each checkpoint (same layout as model/)
    samples/step-N.png      DDIM samples of the EMA at each checkpoint
    state.pt                full training state of the last checkpoint (resume)
    loss.csv                step, loss, lr
    record.json             steps, images seen, wall time, machine, recipe
"""

from __future__ import annotations

import copy
import csv
import dataclasses
import json
import logging
import os
import shutil
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from probekit.core.errors import ProbekitError
from probekit.core.noise import noise_seed
from probekit.core.precision import machine_description, resolve_precision
from probekit.core.verbosity import progress_enabled
from probekit.data import fit_images, load_dataset, stratified_subset
from probekit.data.base import sized_dataset
from probekit.train.config import TrainConfig
from probekit.train.sampling import ddim_sample_grid

log = logging.getLogger(__name__)
STATE_FILE = "state.pt"


class _Order:
    """Data order: a fresh permutation per epoch, drawn from (seed, epoch); the last partial batch is dropped."""

    def __init__(self, n: int, batch_size: int, seed: int) -> None:
        if n < batch_size:
            raise ProbekitError(f"{n} training images is fewer than one batch of {batch_size}: lower batch_size")
        self.n, self.batch_size, self.seed = n, batch_size, seed
        self.steps_per_epoch = n // batch_size
        self._epoch, self._perm = -1, torch.empty(0, dtype=torch.long)

    def batch(self, step: int) -> torch.Tensor:
        epoch, position = divmod(step, self.steps_per_epoch)
        if epoch != self._epoch:
            generator = torch.Generator().manual_seed(noise_seed(self.seed, epoch, -1, 0))
            self._epoch, self._perm = epoch, torch.randperm(self.n, generator=generator)
        return self._perm[position * self.batch_size : (position + 1) * self.batch_size]


def _step_randomness(
    config: TrainConfig, step: int, shape: tuple[int, ...]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(timesteps, noise, flip mask) of one step: a pure function of (seed, step)."""
    generator = torch.Generator().manual_seed(noise_seed(config.seed, step, -2, 0))
    timesteps = torch.randint(0, config.num_train_timesteps, (shape[0],), generator=generator)
    noise = torch.randn(shape, generator=generator)
    flips = torch.rand(shape[0], generator=generator) < 0.5
    return timesteps, noise, flips


def _lr_factor(config: TrainConfig, step: int) -> float:
    return min(1.0, (step + 1) / config.warmup_steps) if config.warmup_steps > 0 else 1.0


def _build_unet(config: TrainConfig) -> torch.nn.Module:
    from diffusers import UNet2DModel

    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(config.seed)
            return UNet2DModel(**config.unet)
    except (TypeError, ValueError) as err:
        raise ProbekitError(f"cannot build the UNet from the config's `unet` settings: {err}") from err


def _save_model(ema: torch.nn.Module, config: TrainConfig, folder: Path) -> None:
    """EMA weights + scheduler config, written to a temporary folder and then renamed into place."""
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    ema.save_pretrained(tmp)
    (tmp / "scheduler_config.json").write_text(json.dumps(config.scheduler_config(), indent=2))
    shutil.rmtree(folder, ignore_errors=True)
    os.replace(tmp, folder)


def train(
    config: TrainConfig,
    out: str | Path,
    *,
    device: str | torch.device = "cpu",
    progress: bool = True,
    stop_at: int | None = None,
) -> Path:
    """Train (or resume) into ``out``; returns ``out/model``. ``stop_at`` ends the run early at that
    step with a checkpoint, as an interruption would (used to test resume).
    """
    out, device = Path(out), torch.device(device)
    # Resolved once, before the recipe is saved or compared for resume: runs record what they used.
    config = dataclasses.replace(config, precision=resolve_precision(config.precision, device))
    out.mkdir(parents=True, exist_ok=True)
    dataset = load_dataset(config.data, image_column=config.image_column, label_column=config.label_column)
    model = _build_unet(config).to(device).train()
    size, channels = model.config.sample_size, model.config.in_channels
    # Images of mixed sizes are decoded at the network's size (shorter side resized, centre crop).
    dataset, _ = sized_dataset(dataset, None, size if isinstance(size, int) else None)
    # Pixels are read per step (lazy datasets decode just the batch), so memory does not grow with N.
    images = stratified_subset(dataset.splits["train"], config.train_limit, seed=config.seed)
    order = _Order(len(images), config.batch_size, config.seed)
    ema = copy.deepcopy(model).eval().requires_grad_(False)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: _lr_factor(config, step))
    alphas_cumprod = torch.tensor(_alphas_cumprod(config), dtype=torch.float32, device=device)

    step, wall_before = 0, 0.0
    state_path = out / STATE_FILE
    if state_path.exists():
        try:
            state = torch.load(state_path, map_location=device, weights_only=True)
        except Exception as err:  # noqa: BLE001 -- truncated zip, refused pickle, ...: all mean "unusable"
            raise ProbekitError(
                f"cannot resume from {state_path} ({str(err).splitlines()[0][:160]}): delete it to start the run "
                f"over, or choose another --out"
            ) from err
        # Settings added since a run was saved take their defaults, so older runs still resume.
        saved = {k: v for k, v in {**TrainConfig().as_dict(), **state["config"]}.items() if k != "total_steps"}
        if saved != {k: v for k, v in config.as_dict().items() if k != "total_steps"}:
            raise ProbekitError(
                f"{out} holds a run with a different recipe: resume with the same config or choose another --out"
            )
        model.load_state_dict(state["model"])
        ema.load_state_dict(state["ema"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        step, wall_before = int(state["step"]), float(state["wall_seconds"])
        log.info("resuming %s from step %d", out, step)
    _truncate_loss_log(out / "loss.csv", step)

    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=config.precision == "bf16")
    end = min(config.total_steps, stop_at) if stop_at is not None else config.total_steps
    started, losses = time.perf_counter(), []
    with tqdm(
        total=config.total_steps, initial=step, unit="step", desc="train", disable=not progress_enabled(progress)
    ) as bar:
        while step < end:
            index = order.batch(step).numpy()
            x0, _ = fit_images(images.read(index), size=size, channels=channels, value_range=(-1.0, 1.0))
            timesteps, noise, flips = _step_randomness(config, step, tuple(x0.shape))
            if config.hflip:
                x0 = torch.where(flips[:, None, None, None], x0.flip(-1), x0)
            x0, timesteps, noise = x0.to(device), timesteps.to(device), noise.to(device)
            ab = alphas_cumprod[timesteps][:, None, None, None]
            x_t = ab.sqrt() * x0 + (1 - ab).sqrt() * noise
            with autocast:
                prediction = model(x_t, timesteps).sample
            loss = F.mse_loss(prediction.float(), noise)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
            optimizer.step()
            scheduler.step()
            _update_ema(ema, model, config.ema_decay, step)
            step += 1
            losses.append(loss.item())
            bar.update(1)
            if step % config.log_every == 0 or step == end:
                _append_loss(out / "loss.csv", step, float(np.mean(losses)), scheduler.get_last_lr()[0])
                bar.set_postfix(loss=f"{np.mean(losses):.4f}")
                losses = []
            if step % config.checkpoint_every == 0 or step == end:
                wall = wall_before + time.perf_counter() - started
                _checkpoint(out, step, wall, config, model, ema, optimizer, scheduler, device, order.n)
    return out / "model"


def _alphas_cumprod(config: TrainConfig) -> np.ndarray:
    from probekit.core.schedule import betas_for

    return np.cumprod(
        1.0 - betas_for(config.beta_schedule, config.beta_start, config.beta_end, config.num_train_timesteps)
    )


@torch.no_grad()
def _update_ema(ema: torch.nn.Module, model: torch.nn.Module, decay: float, step: int) -> None:
    # Warm-up of the decay (as in many DDPM codebases) so early EMA weights are not mostly init.
    decay = min(decay, (1 + step) / (10 + step))
    for ema_param, param in zip(ema.parameters(), model.parameters()):
        ema_param.lerp_(param, 1.0 - decay)
    for ema_buffer, buffer in zip(ema.buffers(), model.buffers()):
        ema_buffer.copy_(buffer)


def _checkpoint(
    out: Path, step: int, wall: float, config: TrainConfig, model, ema, optimizer, scheduler, device, n_images: int
) -> None:
    name = f"step-{step:07d}"
    _save_model(ema, config, out / "checkpoints" / name)
    _save_model(ema, config, out / "model")
    (out / "samples").mkdir(exist_ok=True)
    ddim_sample_grid(ema, config, out / "samples" / f"{name}.png", device=device)
    state = {
        "step": step,
        "wall_seconds": wall,
        "config": config.as_dict(),
        "model": model.state_dict(),
        "ema": ema.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
    }
    tmp = out / (STATE_FILE + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, out / STATE_FILE)
    record = {
        "steps": step,
        "images_seen": step * config.batch_size,
        "train_images": n_images,
        "epochs": round(step * config.batch_size / n_images, 3),
        "wall_seconds": round(wall, 1),
        "machine": machine_description(device),
        "device": str(device),
        "recipe": config.as_dict(),
        "parameters": sum(p.numel() for p in model.parameters()),
    }
    (out / "record.json").write_text(json.dumps(record, indent=2))
    log.info("checkpoint %s (%.0f s of training)", name, wall)


def _append_loss(path: Path, step: int, loss: float, lr: float) -> None:
    new = not path.exists()
    with path.open("a", newline="") as f:
        writer = csv.writer(f)
        if new:
            writer.writerow(["step", "loss", "lr"])
        writer.writerow([step, f"{loss:.6f}", f"{lr:.3e}"])


def _truncate_loss_log(path: Path, step: int) -> None:
    """Drop rows logged after the checkpoint being resumed: those steps will be run again."""
    if not path.exists():
        return
    with path.open() as f:
        rows = list(csv.reader(f))
    kept = [rows[0]] + [row for row in rows[1:] if int(row[0]) <= step]
    with path.open("w", newline="") as f:
        csv.writer(f).writerows(kept)
