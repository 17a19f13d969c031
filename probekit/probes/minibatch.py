"""Epoch-based heads trained for every cell at once: the `sgd` (linear) and `mlp` probes.

The G cells of one feature width are stacked; their heads (a linear layer, or DDAE's
noise-conditional classifier MLP C -> 2C -> classes with SiLU) are trained together with batched
matmuls on one shared minibatch stream. The loss is the sum over cells of each cell's mean
cross-entropy and Adam(W) updates element-wise, so each cell follows the trajectory it would
follow alone (up to float rounding); each head is initialised from its own cell key, so grouping
does not change it either.

With slotted train features (S (view, draw) slots per image), every epoch draws one slot per
image, the same for every cell, as DDAE's linear.py feeds every head the same freshly noised and
augmented image each epoch. The draw is a pure function of (seed, epoch).
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Hashable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from probekit.core.errors import ProbekitError
from probekit.core.verbosity import progress_enabled
from probekit.probes._inputs import as_float32_tensor
from probekit.probes.protocol import ProbeOutcome, ProbeTask, accuracy

_CONSTANT_STD = 1e-6


@dataclass(frozen=True)
class MinibatchConfig:
    """Recipe of an epoch-based head.

    Attributes:
        epochs: passes over the train images.
        batch_size: images per step (the same minibatch for every cell).
        lr: peak learning rate.
        weight_decay: decoupled (AdamW) decay of the weights; 0 gives plain Adam.
        schedule: "cosine-epoch" (torch's CosineAnnealingLR stepped once per epoch, as DDAE's
            linear.py), "cosine-step" (cosine decay to 0 over all steps) or "constant".
        hidden_factor: 0 for a linear head; h > 0 for an MLP C -> h*C -> classes with SiLU.
        standardize: scale each feature by the train mean / std first (DDAE's linear probe does
            not; probekit's `linear` and `logreg` do).
        pick_epoch_on_val: keep the epoch with the best selection-split accuracy (else the final
            epoch is reported, as DDAE does).
        seed: seed of the shuffles, the slot draws and the initialisation.
    """

    epochs: int = 15
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 0.0
    schedule: str = "cosine-epoch"
    hidden_factor: int = 0
    standardize: bool = False
    pick_epoch_on_val: bool = False
    seed: int = 0
    eval_batch_size: int = 4096

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1 or self.lr <= 0 or self.weight_decay < 0 or self.hidden_factor < 0:
            raise ProbekitError("epoch-based probe: need epochs >= 1, batch_size >= 1, lr > 0, weight_decay >= 0")
        if self.schedule not in ("cosine-epoch", "cosine-step", "constant"):
            raise ProbekitError(f"unknown schedule {self.schedule!r}: use cosine-epoch, cosine-step or constant")

    @classmethod
    def ddae_linear(cls, seed: int = 0) -> MinibatchConfig:
        """DDAE's linear.py: Adam lr 1e-3, batch 128, cosine per epoch over 15 epochs, no decay,
        raw features, final epoch reported.
        """
        return cls(seed=seed)

    @classmethod
    def ddae_mlp(cls, seed: int = 0) -> MinibatchConfig:
        """DDAE's noise-conditional classifier head (C -> 2C, SiLU, 2C -> classes) with the same
        optimiser, on standardised features, its epoch chosen on val.
        """
        return cls(hidden_factor=2, standardize=True, pick_epoch_on_val=True, seed=seed)


def slot_choice(seed: int, epoch: int, n: int, slots: int) -> np.ndarray:
    """(n,) slot index per image for one epoch: a pure function of (seed, epoch)."""
    return np.random.default_rng([seed, epoch, 0x5107]).integers(0, slots, size=n)


def train_minibatch_heads(
    task: ProbeTask,
    config: MinibatchConfig,
    *,
    device: str | torch.device = "cpu",
    progress: bool = False,
    desc: str = "probe",
) -> dict[Hashable, ProbeOutcome]:
    """Train one head per cell of ``task`` and predict every split of ``task.evals``."""
    device = torch.device(device)
    groups: dict[int, list] = {}
    for key, x in task.train.items():
        groups.setdefault(int(x.shape[-1]), []).append(key)
    out: dict[Hashable, ProbeOutcome] = {}
    for keys in groups.values():
        out.update(_train_group(task, keys, config, device, progress, desc))
    return {key: out[key] for key in task.cells}


def _train_group(
    task: ProbeTask, keys: list, config: MinibatchConfig, device: torch.device, progress: bool, desc: str
) -> dict:
    first = task.train[keys[0]]
    slotted = first.ndim == 3
    slots = first.shape[0] if slotted else 1
    n, width = first.shape[-2], first.shape[-1]
    x = torch.empty((slots, n, len(keys), width), dtype=torch.float32, device=device)
    for i, key in enumerate(keys):
        cell = task.train[key] if slotted else task.train[key][None]
        for s in range(slots):
            x[s, :, i].copy_(as_float32_tensor(cell[s]))
    if config.standardize:
        mean = x.mean(dim=(0, 1), keepdim=True)
        std = x.std(dim=(0, 1), keepdim=True, unbiased=False)
        std = torch.where(std < _CONSTANT_STD, torch.ones_like(std), std)
        x.sub_(mean).div_(std)
    else:
        mean = torch.zeros((1, 1, len(keys), width), device=device)
        std = torch.ones_like(mean)
    params = _init_heads(keys, width, task.num_classes, config, device)
    optimizer = torch.optim.AdamW(
        [
            {"params": [p for name, p in params.items() if name.startswith("w")], "weight_decay": config.weight_decay},
            {"params": [p for name, p in params.items() if name.startswith("b")], "weight_decay": 0.0},
        ],
        lr=config.lr,
    )
    steps_per_epoch = math.ceil(n / config.batch_size)
    labels = torch.from_numpy(task.y_train).to(device)
    generator = torch.Generator().manual_seed(config.seed)
    evals = {split: _stack(feats, keys, device) for split, feats in task.evals.items()}
    best_acc = np.full(len(keys), -1.0)
    best_preds: list[dict[str, np.ndarray]] = [{} for _ in keys]
    step = 0
    for epoch in tqdm(range(config.epochs), desc=desc, unit="epoch", disable=not progress_enabled(progress)):
        for group in optimizer.param_groups:
            group["lr"] = config.lr * _lr_factor(config, epoch, step, steps_per_epoch)
        order = torch.randperm(n, generator=generator).to(device)
        choice = torch.from_numpy(slot_choice(config.seed, epoch, n, slots)).to(device)
        for start in range(0, n, config.batch_size):
            if config.schedule == "cosine-step":
                for group in optimizer.param_groups:
                    group["lr"] = config.lr * _lr_factor(config, epoch, step, steps_per_epoch)
            idx = order[start : start + config.batch_size]
            batch = x[choice[idx], idx].transpose(0, 1)  # (G, B, C)
            logits = _forward(params, batch)
            targets = labels[idx].repeat(len(keys))
            loss = F.cross_entropy(logits.flatten(0, 1), targets, reduction="sum") / len(idx)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step += 1
        if config.pick_epoch_on_val or epoch == config.epochs - 1:
            preds = {
                split: _predict(params, feats, mean, std, config.eval_batch_size) for split, feats in evals.items()
            }
            for i in range(len(keys)):
                acc = (
                    accuracy(task.y_evals[task.select_on], preds[task.select_on][i])
                    if config.pick_epoch_on_val
                    else 0.0
                )
                if acc > best_acc[i] or not config.pick_epoch_on_val:
                    best_acc[i] = acc
                    best_preds[i] = {split: p[i] for split, p in preds.items()}
                    best_preds[i]["_epoch"] = np.array(epoch + 1)
    out = {}
    for i, key in enumerate(keys):
        epoch = int(best_preds[i].pop("_epoch"))
        label = f"epochs={epoch}" if config.pick_epoch_on_val else f"epochs={config.epochs}"
        out[key] = ProbeOutcome(predictions=best_preds[i], params=label)
    return out


def _lr_factor(config: MinibatchConfig, epoch: int, step: int, steps_per_epoch: int) -> float:
    if config.schedule == "constant":
        return 1.0
    if config.schedule == "cosine-epoch":
        return 0.5 * (1.0 + math.cos(math.pi * epoch / config.epochs))
    return 0.5 * (1.0 + math.cos(math.pi * step / (config.epochs * steps_per_epoch)))


def _init_heads(
    keys: list, width: int, num_classes: int, config: MinibatchConfig, device: torch.device
) -> dict[str, torch.Tensor]:
    """nn.Linear's default init (uniform in +-1/sqrt(fan_in)), drawn per cell from its own key."""
    hidden = config.hidden_factor * width
    shapes = [("w1", width, hidden or num_classes)]
    if hidden:
        shapes.append(("w2", hidden, num_classes))
    params: dict[str, list[torch.Tensor]] = {}
    for key in keys:
        generator = torch.Generator().manual_seed(config.seed * 1_000_003 + zlib.crc32(repr(key).encode()))
        for name, fan_in, fan_out in shapes:
            bound = 1.0 / math.sqrt(fan_in)
            w = (torch.rand((fan_in, fan_out), generator=generator) * 2 - 1) * bound
            b = (torch.rand((1, fan_out), generator=generator) * 2 - 1) * bound
            params.setdefault(name, []).append(w)
            params.setdefault("b" + name[1:], []).append(b)
    return {name: torch.stack(values).to(device).requires_grad_() for name, values in params.items()}


def _forward(params: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """(G, B, C) -> (G, B, classes)."""
    h = torch.baddbmm(params["b1"], x, params["w1"])
    if "w2" in params:
        h = torch.baddbmm(params["b2"], F.silu(h), params["w2"])
    return h


def _stack(features: dict, keys: list, device: torch.device) -> torch.Tensor:
    n = len(features[keys[0]])
    out = torch.empty((n, len(keys), features[keys[0]].shape[1]), dtype=torch.float32, device=device)
    for i, key in enumerate(keys):
        out[:, i].copy_(as_float32_tensor(features[key]))
    return out


@torch.no_grad()
def _predict(params: dict, feats: torch.Tensor, mean: torch.Tensor, std: torch.Tensor, chunk: int) -> np.ndarray:
    """(G, N) predicted classes of stacked (N, G, C) features."""
    parts = []
    for start in range(0, feats.shape[0], chunk):
        block = ((feats[start : start + chunk] - mean[0]) / std[0]).transpose(0, 1)
        parts.append(_forward(params, block).argmax(dim=-1).cpu().numpy())
    return np.concatenate(parts, axis=1).astype(np.int64)
