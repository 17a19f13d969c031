"""The pretraining loop of every family, with exact resume.

The family (:mod:`probekit.train.families`) builds the network and turns a step's draws into a
loss; everything else (data order, flips, optimiser, EMA, checkpoints, resume) is shared here.
Every random choice of step ``s`` (which images, their flips, noise levels and noise) is a pure
function of (seed, s), and the data order of an epoch a pure function of (seed, epoch). A run
resumed from its last checkpoint therefore replays exactly the steps an uninterrupted run takes;
the checkpoint holds the weights, the EMA, the optimizer and the learning-rate schedule.

Output folder::

    model/                  EMA weights in the family's public layout (DDPM: diffusers folder; DiT / SiT:
                            original .pt; EDM: DDAE's config.yaml + model.pth); record.json's
                            ``model_spec`` is the ``--model`` string that loads it
    checkpoints/step-N/     EMA weights at each checkpoint (same layout as model/)
    samples/step-N.png      samples of the EMA at each checkpoint
    state.pt                full training state of the last checkpoint (resume)
    loss.csv                step, loss, lr
    record.json             steps, images seen, wall time, throughput, machine, recipe
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
from tqdm.auto import tqdm

from probekit.core.errors import ProbekitError
from probekit.core.precision import machine_description, resolve_precision
from probekit.core.training import EpochOrder, atomic_save, load_state, lr_factor, step_generator
from probekit.core.verbosity import progress_enabled
from probekit.data import fit_images, load_dataset, stratified_subset
from probekit.data.base import sized_dataset
from probekit.train.config import TrainConfig
from probekit.train.families import TrainFamily, get_family
from probekit.train.sampling import sample_grid

log = logging.getLogger(__name__)
STATE_FILE = "state.pt"
# noise_seed streams of pretraining's draws (fine-tuning has its own: -3, -4)
_ORDER_STREAM, _STEP_STREAM = -1, -2


def step_randomness(
    family: TrainFamily, config: TrainConfig, step: int, shape: tuple[int, ...]
) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """(the family's draws, flip mask) of one step: a pure function of (seed, step)."""
    generator = step_generator(config.seed, step, _STEP_STREAM)
    draws = family.draw(config, generator, shape)
    flips = torch.rand(shape[0], generator=generator) < 0.5
    return draws, flips


def build_network(family: TrainFamily, config: TrainConfig) -> torch.nn.Module:
    """The family's network, initialised from ``config.seed`` without touching the global RNG."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        return family.build(config)


def _save_model(family: TrainFamily, ema, model, config: TrainConfig, folder: Path, step: int) -> None:
    """The family's checkpoint layout, written to a temporary folder and then renamed into place."""
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.parent.mkdir(parents=True, exist_ok=True)
    family.save(ema, model, config, tmp, step)
    shutil.rmtree(folder, ignore_errors=True)
    os.replace(tmp, folder)


def _recorded_precision(out: Path) -> str | None:
    """The precision an unfinished run in ``out`` was computing in (from its record), or None."""
    try:
        if not (out / STATE_FILE).exists():
            return None
        precision = json.loads((out / "record.json").read_text())["recipe"]["precision"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return str(precision) if precision in ("fp32", "bf16") else None


def train(
    config: TrainConfig,
    out: str | Path,
    *,
    device: str | torch.device = "cpu",
    progress: bool = True,
    stop_at: int | None = None,
    continue_from: str | Path | None = None,
) -> Path:
    """Train (or resume) into ``out``; returns ``out/model`` (``record.json``'s ``model_spec`` loads it).
    ``stop_at`` ends the run early at that step with a checkpoint, as an interruption would (used to
    test resume). ``continue_from``: a folder shipped by ``probekit train --ship`` of the same recipe,
    from whose step a new run in ``out`` goes on (see :func:`_seed_from_shipped`).
    """
    out, device = Path(out), torch.device(device)
    # Resolved once, before the recipe is saved or compared for resume: runs record what they used.
    # A resumed auto run keeps the precision it started in (another machine may resolve auto otherwise).
    recorded = _recorded_precision(out) if config.precision == "auto" else None
    config = dataclasses.replace(config, precision=recorded or resolve_precision(config.precision, device))
    out.mkdir(parents=True, exist_ok=True)
    dataset = load_dataset(config.data, image_column=config.image_column, label_column=config.label_column)
    family = get_family(config.family)
    model = build_network(family, config).to(device).train()
    size, channels = family.image_shape(config)
    # Images of mixed sizes are decoded at the network's size (shorter side resized, centre crop).
    dataset, _ = sized_dataset(dataset, None, size if isinstance(size, int) else None)
    # Pixels are read per step (lazy datasets decode just the batch), so memory does not grow with N.
    images = stratified_subset(dataset.splits["train"], config.train_limit, seed=config.seed)
    # The last partial batch is dropped: every step sees batch_size images.
    order = EpochOrder(len(images), config.batch_size, config.seed, stream=_ORDER_STREAM, drop_last=True)
    ema = copy.deepcopy(model).eval().requires_grad_(False)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(step, config.warmup_steps))

    step, wall_before, origin = 0, 0.0, None
    state_path = out / STATE_FILE
    if continue_from is not None and not state_path.exists():
        # Seeded once; from then on the run resumes like any other (its state says where it came from).
        _seed_from_shipped(Path(continue_from), config, family, model, ema, optimizer, out)
    if state_path.exists():
        state = load_state(state_path, device)
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
        origin = state.get("continued_from")
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
            draws, flips = step_randomness(family, config, step, tuple(x0.shape))
            if config.hflip:
                x0 = torch.where(flips[:, None, None, None], x0.flip(-1), x0)
            x0, draws = x0.to(device), {k: v.to(device) for k, v in draws.items()}
            loss = family.loss(model, x0, draws, config, autocast)
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
                _checkpoint(out, step, wall, config, family, model, ema, optimizer, scheduler, device, order.n, origin)
    return out / "model"


def _seed_from_shipped(
    shipped: Path,
    config: TrainConfig,
    family: TrainFamily,
    model: torch.nn.Module,
    ema: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    out: Path,
) -> None:
    """Write the state a run of ``config`` would resume from at the shipped folder's step.

    A shipped folder keeps only the EMA weights (rounded to its dtype) and the loss log, so the
    continued run starts its weights *and* its EMA from those, with fresh AdamW moments; the step
    counter, data order, per-step draws and learning-rate schedule go on from the shipped step as
    in an uninterrupted run. The record says so (``continued_from``) and so does the model card.
    """
    try:
        record = json.loads((shipped / "record.json").read_text())
        shipped_config = TrainConfig.from_dict(record["recipe"])
        step = int(record["steps"])
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise ProbekitError(
            f"{shipped} is not a folder shipped by probekit train (record.json unreadable: {err}): "
            "give --continue-from the folder that --ship wrote"
        ) from err
    ignore = ("total_steps", "checkpoint_every")
    theirs = {k: v for k, v in shipped_config.as_dict().items() if k not in ignore}
    ours = {k: v for k, v in config.as_dict().items() if k not in ignore}
    if theirs != ours:
        differing = sorted(k for k in ours if theirs.get(k) != ours[k])
        raise ProbekitError(
            f"{shipped} was trained with another recipe ({', '.join(differing)} differ): "
            "continue it with the recipe in its record.json"
        )
    if step >= config.total_steps:
        raise ProbekitError(f"{shipped} already has {step} steps: raise --total-steps above {step} to continue it")
    try:
        family.load_weights(model, shipped)
    except (OSError, RuntimeError, KeyError) as err:
        raise ProbekitError(f"cannot load the weights of {shipped} into the recipe's network: {err}") from err
    ema.load_state_dict(model.state_dict())
    for group in optimizer.param_groups:  # the schedule's base rate, as LambdaLR records it
        group.setdefault("initial_lr", group["lr"])
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_factor(s, config.warmup_steps), last_epoch=step - 1
    )
    origin = {
        "folder": str(shipped),
        "step": step,
        "how": "weights and EMA started from the shipped EMA weights; AdamW moments fresh",
    }
    shutil.copy2(shipped / "loss.csv", out / "loss.csv")
    name = f"step-{step:07d}"
    _save_model(family, ema, model, config, out / "checkpoints" / name, step)
    (out / "samples").mkdir(exist_ok=True)
    shutil.copy2(shipped / "samples.png", out / "samples" / f"{name}.png")
    wall = float(record.get("wall_seconds") or 0.0)
    atomic_save(_state(step, wall, config, model, ema, optimizer, scheduler, origin), out / STATE_FILE)
    log.info("continuing %s from step %d into %s", shipped, step, out)


@torch.no_grad()
def _update_ema(ema: torch.nn.Module, model: torch.nn.Module, decay: float, step: int) -> None:
    # Warm-up of the decay (as in many DDPM codebases) so early EMA weights are not mostly init.
    decay = min(decay, (1 + step) / (10 + step))
    for ema_param, param in zip(ema.parameters(), model.parameters()):
        ema_param.lerp_(param, 1.0 - decay)
    for ema_buffer, buffer in zip(ema.buffers(), model.buffers()):
        ema_buffer.copy_(buffer)


def _checkpoint(
    out: Path,
    step: int,
    wall: float,
    config: TrainConfig,
    family: TrainFamily,
    model,
    ema,
    optimizer,
    scheduler,
    device,
    n_images: int,
    origin: dict | None = None,
) -> None:
    name = f"step-{step:07d}"
    _save_model(family, ema, model, config, out / "checkpoints" / name, step)
    _save_model(family, ema, model, config, out / "model", step)
    (out / "samples").mkdir(exist_ok=True)
    sample_grid(family, ema, config, out / "samples" / f"{name}.png", device=device)
    atomic_save(_state(step, wall, config, model, ema, optimizer, scheduler, origin), out / STATE_FILE)
    record = {
        "steps": step,
        "images_seen": step * config.batch_size,
        "train_images": n_images,
        "epochs": round(step * config.batch_size / n_images, 3),
        "wall_seconds": round(wall, 1),
        "images_per_second": round(step * config.batch_size / wall, 2) if wall > 0 else None,
        "machine": machine_description(device),
        "cpu": cpu_model() if device.type == "cpu" else None,
        "device": str(device),
        "recipe": config.as_dict(),
        "parameters": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "network": family.describe_network(config),
        "objective": family.objective,
        "model_spec": family.model_spec(out / "model", config),
        **({"continued_from": origin} if origin else {}),
    }
    (out / "record.json").write_text(json.dumps(record, indent=2))
    log.info("checkpoint %s (%.0f s of training)", name, wall)


def _state(step: int, wall: float, config: TrainConfig, model, ema, optimizer, scheduler, origin: dict | None) -> dict:
    """The training state a run resumes from (``state.pt``)."""
    return {
        "step": step,
        "wall_seconds": wall,
        "config": config.as_dict(),
        "model": model.state_dict(),
        "ema": ema.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        **({"continued_from": origin} if origin else {}),
    }


def cpu_model() -> str:
    """The CPU's model name (as lscpu reports it) and the instruction set torch's kernels use."""
    name = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    except OSError:  # not Linux: the capability alone still says which kernels ran
        pass
    return f"{name}, torch CPU capability {torch.backends.cpu.get_cpu_capability()}"


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
