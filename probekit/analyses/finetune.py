"""`probekit finetune`: the network cut after one layer, pooled, a linear head, trained end to end.

The body is the backbone's own network run through the same early-stopping trace as extraction
(:func:`probekit.models.backbone.capture` with ``stop_after``): the forward ends right after layer
L, so nothing past L runs and only the parameters that L depends on are trained. The body sees
images noised at one grid point ``t`` with fresh noise every step, after a random crop (4-pixel
padding with the lowest pixel value) and a horizontal flip, as DDAE's linear.py augments.

Recipe: AdamW, linear warm-up then cosine decay to 0, one learning rate for the body and a higher
one for the head. Every random choice of step s (crop offsets, flips, noise) is a pure function of
(seed, s) and the data order of an epoch a pure function of (seed, epoch), so a run resumed from
its checkpoint replays the steps an uninterrupted run takes, bit for bit on the same device.

The train split minus a class-stratified validation split is trained on; after every epoch the
model is scored on validation and the best epoch's weights are kept; test is scored once, with
those weights, at the end. Validation and test images are not augmented and carry one noise draw
keyed by (seed, split, sample id, t), as in extraction.

Output folder::

    state.pt       last checkpoint (weights, optimiser, schedule, best-so-far): resume
    best.pt        state dict of the val-chosen model (body + head)
    curves.csv     per epoch: step, epoch, images_seen, train_loss, train_top1, val_loss, val_top1, lr_body, lr_head
    curves.png     loss and accuracy against epochs
    results.csv    the results table: one cell (t, L), probe ``finetune``, val and test rows
    results.predictions.npz   its test predictions (the sidecar ``probekit compare`` reads)
    record.json    recipe, chosen epoch, parameters trained, steps, wall time, machine (CPU model, torch
                   capability), load average at the end
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from probekit.core.errors import ProbekitError
from probekit.core.noise import sample_noise, split_seed
from probekit.core.pooling import Pooling
from probekit.core.precision import machine_description
from probekit.core.schedule import GridPoint
from probekit.core.training import EpochOrder, atomic_save, load_state, lr_factor, step_generator
from probekit.core.types import CellInfo
from probekit.core.verbosity import progress_enabled
from probekit.data import ImageDataset, ImageSplit, fit_images
from probekit.evaluate import score_predictions, stratified_val_split
from probekit.evaluate.predictions import PredictionSet, predictions_path, write_predictions
from probekit.evaluate.results import scores_to_table, write_table
from probekit.models.backbone import Backbone
from probekit.models.layers import select_layers
from probekit.models.trace import StopForward, trace

log = logging.getLogger(__name__)
STATE_FILE = "state.pt"
PROBE = "finetune"
# noise_seed streams of fine-tuning's draws (pretraining has its own: -1, -2)
_ORDER_STREAM, _STEP_STREAM = -4, -3
_PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass(frozen=True)
class FinetuneConfig:
    """Recipe. ``timestep``: the schedule's own index; ``layer``: name, alias or index; learning
    rates are peak values (per parameter group), reached after ``warmup_epochs`` (may be
    fractional) and cosine-decayed to 0 at the last step; ``val_fraction`` of train is held out
    (class-stratified, seeded); ``crop_padding`` in pixels (0 = no crop); ``precision``: fp32 or a
    bf16 / fp16 autocast of the forward.
    """

    timestep: int
    layer: str
    epochs: int = 10
    batch_size: int = 64
    lr_head: float = 1e-3
    lr_body: float = 1e-4
    weight_decay: float = 0.05
    warmup_epochs: float = 1.0
    val_fraction: float = 0.1
    crop_padding: int = 4
    hflip: bool = True
    seed: int = 0
    precision: str = "fp32"

    def as_dict(self) -> dict[str, object]:
        return dataclasses.asdict(self)


def _network_call(backbone: Backbone) -> Callable[[torch.Tensor, GridPoint], object]:
    """The backbone's forward at a grid point *with* gradients (its public ``forward`` runs without)."""
    for name in ("_run", "_raw"):  # diffusers UNet and DiT adapters / DDAE adapter
        call = getattr(backbone, name, None)
        if callable(call) and isinstance(getattr(backbone, "net", None), nn.Module):
            return call
    raise ProbekitError(
        f"{backbone.model_id} ({backbone.framework}) cannot be fine-tuned: use a UNet, DDAE or DiT model"
    )


class TruncatedClassifier(nn.Module):
    """``head(pool(L(x_t)))``: the network up to and including ``layer``, global-average pooled, then linear."""

    def __init__(self, backbone: Backbone, layer: str, num_classes: int) -> None:
        super().__init__()
        self.body = backbone.net  # type: ignore[attr-defined]  # checked by _network_call
        self._call = _network_call(backbone)
        self.layer = layer
        self._module = backbone.module_of(layer)  # type: ignore[attr-defined]
        self._select = backbone._output  # type: ignore[attr-defined]  # the stream the layer's features come from
        info = next(info for info in backbone.layers() if info.name == layer)
        self.head = nn.Linear(info.channels, num_classes)
        self._pool = Pooling(1)

    def forward(self, x_noisy: torch.Tensor, point: GridPoint) -> torch.Tensor:
        with trace({self.layer: self._module}, self._pool, stop_after=self.layer, select=self._select) as captured:
            try:
                self._call(x_noisy, point)
            except StopForward:
                pass
        if self.layer not in captured:
            raise ProbekitError(f"layer {self.layer} did not run in the forward: it cannot be fine-tuned")
        return self.head(captured[self.layer].float())


def used_body_parameters(model: TruncatedClassifier, example: torch.Tensor, point: GridPoint) -> list[nn.Parameter]:
    """The body parameters that the output depends on (those past L, or unused, get no gradient)."""
    params = [p for p in model.body.parameters()]
    for p in params:
        p.requires_grad_(True)
    grads = torch.autograd.grad(model(example, point).sum(), params, allow_unused=True)
    used = [p for p, g in zip(params, grads) if g is not None]
    for p, g in zip(params, grads):
        if g is None:
            p.requires_grad_(False)
    return used


def augment(x0: torch.Tensor, offsets: torch.Tensor, flips: torch.Tensor, padding: int, low: float) -> torch.Tensor:
    """Random crop of the ``padding``-padded image at ``offsets`` (B, 2) in 0..2*padding, then flip where ``flips``."""
    if padding > 0:
        padded = F.pad(x0, (padding,) * 4, value=low)
        h, w = x0.shape[-2:]
        x0 = torch.stack(
            [padded[i, :, int(dy) : int(dy) + h, int(dx) : int(dx) + w] for i, (dy, dx) in enumerate(offsets)]
        )
    return torch.where(flips[:, None, None, None], x0.flip(-1), x0)


def _step_randomness(
    seed: int, step: int, shape: tuple[int, ...], padding: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(crop offsets, flips, noise) of one step: a pure function of (seed, step)."""
    generator = step_generator(seed, step, _STEP_STREAM)
    offsets = torch.randint(0, 2 * padding + 1, (shape[0], 2), generator=generator)
    flips = torch.rand(shape[0], generator=generator) < 0.5
    noise = torch.randn(shape, generator=generator)
    return offsets, flips, noise


def _take(split: ImageSplit, positions: np.ndarray) -> ImageSplit:
    return ImageSplit(split.images[positions], split.labels[positions], split.index[positions])


class Finetuner:
    """Everything one run needs; :meth:`run` trains (or resumes) and returns the results table."""

    def __init__(
        self,
        backbone: Backbone,
        dataset: ImageDataset,
        out: str | Path,
        config: FinetuneConfig,
        *,
        device: torch.device | str = "cpu",
        random_init: bool = False,
    ) -> None:
        if config.precision not in _PRECISIONS:
            raise ProbekitError(f"unknown --precision {config.precision!r}: use {', '.join(_PRECISIONS)}")
        if config.epochs < 1 or config.batch_size < 1:
            raise ProbekitError("--epochs and --batch-size must be at least 1")
        if config.crop_padding < 0:
            raise ProbekitError(f"--crop-padding must be >= 0, got {config.crop_padding}")
        for split in ("train", "test"):
            if split not in dataset.splits or len(dataset.splits[split]) == 0:
                raise ProbekitError(f"{dataset.name} has no {split} images: fine-tuning needs a train and a test split")
        self.backbone, self.dataset, self.config = backbone, dataset, config
        self.out, self.device = Path(out), torch.device(device)
        self.random_init = random_init
        self.model_sha256 = backbone.weights_sha256()  # of the starting weights: training changes them in place
        layers = select_layers(backbone.layers(), config.layer)
        if len(layers) != 1:
            raise ProbekitError(f"--layer {config.layer!r} selects {len(layers)} layers: give exactly one")
        self.layer = layers[0]
        self.point = backbone.schedule.point(config.timestep)
        train = dataset.splits["train"]
        if not 0.0 < config.val_fraction < 1.0:
            raise ProbekitError(
                "--val-fraction must be strictly between 0 and 1 (the epoch is chosen on val), got "
                f"{config.val_fraction}"
            )
        # The same split `probekit probe` holds out of the same train images with the same seed.
        keep, held = stratified_val_split(train.labels, config.val_fraction, config.seed)
        self.splits = {"train": _take(train, keep), "val": _take(train, held), "test": dataset.splits["test"]}
        self.num_classes = len(dataset.class_names)
        backbone.to(self.device)
        self.model = TruncatedClassifier(backbone, self.layer, self.num_classes).to(self.device)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(config.seed)
            self.model.head.reset_parameters()
        example = self._inputs(self.splits["train"].images[:2])
        body = used_body_parameters(self.model, example, self.point)
        self.parameter_counts = {
            "body_trained": sum(p.numel() for p in body),
            "body_total": sum(p.numel() for p in self.model.body.parameters()),
            "head": sum(p.numel() for p in self.model.head.parameters()),
        }
        self.optimizer = torch.optim.AdamW(
            [
                {"params": body, "lr": config.lr_body},
                {"params": list(self.model.head.parameters()), "lr": config.lr_head},
            ],
            weight_decay=config.weight_decay,
        )
        # The last partial batch is kept: every image is seen once per epoch.
        self.order = EpochOrder(
            len(self.splits["train"]), config.batch_size, config.seed, stream=_ORDER_STREAM, drop_last=False
        )
        self.total_steps = config.epochs * self.order.steps_per_epoch
        warmup = int(round(config.warmup_epochs * self.order.steps_per_epoch))
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda s: lr_factor(s, warmup, self.total_steps)
        )
        fp16 = config.precision == "fp16"
        if fp16 and self.device.type != "cuda":
            raise ProbekitError("--precision fp16 needs a CUDA GPU: use bf16 or fp32 on the CPU")
        self.scaler = torch.amp.GradScaler("cuda", enabled=fp16)

    def _inputs(self, images: np.ndarray) -> torch.Tensor:
        x, _ = fit_images(
            images,
            size=self.backbone.input_size,
            channels=self.backbone.input_channels,
            value_range=self.backbone.value_range,
        )
        return self.backbone.encode(x.to(self.device))

    def _autocast(self) -> contextlib.AbstractContextManager:
        dtype = _PRECISIONS[self.config.precision]
        return torch.autocast(self.device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()

    def _noisy(self, x0: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        return x0 if self.point.alpha_bar >= 1.0 else self.backbone.schedule.add_noise(x0, noise, self.point)

    @torch.no_grad()
    def evaluate(self, split: str, batch_size: int = 256) -> tuple[float, np.ndarray]:
        """(mean loss, predictions) on un-augmented images with one keyed noise draw per sample."""
        self.model.eval()
        data, seed = self.splits[split], split_seed(self.config.seed, "train" if split == "val" else split)
        losses, predictions = [], []
        for start in range(0, len(data), batch_size):
            x0 = self._inputs(data.images[start : start + batch_size])
            ids = data.index[start : start + batch_size]
            noise = sample_noise(x0.shape[1:], ids, seed=seed, t=self.point.t, draw=0, device=self.device)
            with self._autocast():
                logits = self.model(self._noisy(x0, noise), self.point).float()
            y = torch.as_tensor(data.labels[start : start + batch_size], device=self.device)
            losses.append(F.cross_entropy(logits, y, reduction="sum").item())
            predictions.append(logits.argmax(1).cpu().numpy())
        return sum(losses) / len(data), np.concatenate(predictions)

    def _train_step(self, step: int) -> tuple[float, int, int]:
        """One optimiser step; returns (summed loss, correct, images) over its batch."""
        self.model.train()
        data, cfg = self.splits["train"], self.config
        rows = self.order.batch(step).numpy()
        x0 = self._inputs(data.images[rows])
        offsets, flips, noise = _step_randomness(cfg.seed, step, tuple(x0.shape), cfg.crop_padding)
        x0 = augment(
            x0,
            offsets,
            flips.to(self.device) if cfg.hflip else torch.zeros_like(flips, device=self.device),
            cfg.crop_padding,
            self.backbone.value_range[0],
        )
        y = torch.as_tensor(data.labels[rows], device=self.device)
        with self._autocast():
            logits = self.model(self._noisy(x0, noise.to(self.device)), self.point).float()
        loss = F.cross_entropy(logits, y)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        return loss.item() * len(rows), int((logits.argmax(1) == y).sum()), len(rows)

    def _data_identity(self) -> dict[str, str]:
        """Dataset name and a digest of each split's sample ids and labels: a resume must see the same images."""
        identity = {"dataset": self.dataset.name}
        for split, data in self.splits.items():
            digest = hashlib.sha256(np.ascontiguousarray(data.index, dtype=np.int64).tobytes())
            digest.update(np.ascontiguousarray(data.labels, dtype=np.int64).tobytes())
            identity[split] = digest.hexdigest()
        return identity

    def _state(self, step: int, wall: float, best: dict, curves: list[dict]) -> dict:
        return {
            "step": step,
            "wall_seconds": wall,
            "config": self.config.as_dict(),
            "random_init": self.random_init,
            "model_sha256": self.model_sha256,
            "data": self._data_identity(),
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "best": best,
            "curves": curves,
        }

    def run(self, *, progress: bool = True, stop_at_epoch: int | None = None) -> pd.DataFrame | None:
        """Train or resume; returns the results table, or None when stopped early by ``stop_at_epoch`` (tests)."""
        self.out.mkdir(parents=True, exist_ok=True)
        step, wall_before, curves = 0, 0.0, []
        best: dict = {"val_top1": -1.0, "epoch": 0, "model": None}
        state_path = self.out / STATE_FILE
        if state_path.exists():
            step, wall_before, best, curves = self._resume(state_path)
        per_epoch = self.order.steps_per_epoch
        started = time.perf_counter()
        sums = [0.0, 0, 0]
        with tqdm(
            total=self.total_steps, initial=step, unit="step", desc="finetune", disable=not progress_enabled(progress)
        ) as bar:
            while step < self.total_steps:
                loss, correct, count = self._train_step(step)
                sums = [sums[0] + loss, sums[1] + correct, sums[2] + count]
                step += 1
                bar.update(1)
                if step % per_epoch == 0:
                    epoch = step // per_epoch
                    val_loss, val_pred = self.evaluate("val")
                    val_top1 = float(np.mean(val_pred == self.splits["val"].labels))
                    lrs = self.scheduler.get_last_lr()
                    curves.append(
                        {
                            "step": step,
                            "epoch": epoch,
                            "images_seen": epoch * len(self.splits["train"]),
                            "train_loss": sums[0] / sums[2],
                            "train_top1": sums[1] / sums[2],
                            "val_loss": val_loss,
                            "val_top1": val_top1,
                            "lr_body": lrs[0],
                            "lr_head": lrs[1],
                        }
                    )
                    sums = [0.0, 0, 0]
                    bar.set_postfix(loss=f"{curves[-1]['train_loss']:.3f}", val=f"{100 * val_top1:.1f}%")
                    if val_top1 > best["val_top1"]:  # ties keep the earlier epoch
                        best = {
                            "val_top1": val_top1,
                            "epoch": epoch,
                            "val_predictions": torch.as_tensor(val_pred),
                            "model": {k: v.detach().cpu().clone() for k, v in self.model.state_dict().items()},
                        }
                    wall = wall_before + time.perf_counter() - started
                    atomic_save(self._state(step, wall, best, curves), state_path)
                    _write_curves(curves, self.out)
                    if stop_at_epoch is not None and epoch >= stop_at_epoch and step < self.total_steps:
                        return None
        wall = wall_before + time.perf_counter() - started
        return self._finish(best, curves, wall)

    def _resume(self, path: Path) -> tuple[int, float, dict, list[dict]]:
        state = load_state(path, self.device)
        if (
            state["config"] != self.config.as_dict()
            or state["model_sha256"] != self.model_sha256
            or state["random_init"] != self.random_init
        ):
            raise ProbekitError(
                f"{self.out} holds a fine-tuning run with another recipe or model: use its command or another --out"
            )
        if "data" not in state:
            log.warning("%s was written without a record of its images: resuming without checking them", path)
        elif state["data"] != self._data_identity():
            raise ProbekitError(
                f"{self.out} holds a fine-tuning run on other images (--data, --train-limit, --test-limit or "
                "--seed differ): use its command or another --out"
            )
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        log.info("resuming %s from step %d", self.out, state["step"])
        return int(state["step"]), float(state["wall_seconds"]), state["best"], list(state["curves"])

    def _finish(self, best: dict, curves: list[dict], wall: float) -> pd.DataFrame:
        self.model.load_state_dict(best["model"])
        self.chosen_epoch = int(best["epoch"])
        atomic_save(best["model"], self.out / "best.pt")
        _, test_pred = self.evaluate("test")
        self.test_predictions = test_pred
        y_test = self.splits["test"].labels
        info = next(l for l in self.backbone.layers() if l.name == self.layer)
        p = self.point
        cells = {(p.t, self.layer): CellInfo(p.t, p.sigma, p.logsnr, p.alpha_bar, self.layer, info.stage, info.depth)}
        scores = {
            "val": score_predictions(self.splits["val"].labels, best["val_predictions"].numpy()),
            "test": score_predictions(y_test, test_pred),
        }
        table = scores_to_table(
            {PROBE: {(p.t, self.layer): scores}},
            cells,
            model=self.backbone.model_id,
            dataset=self.dataset.name,
            n_train=len(self.splits["train"]),
            params={PROBE: {(p.t, self.layer): f"epoch={best['epoch']}"}},
        )
        write_table(table, self.out / "results.csv")
        write_predictions(
            predictions_path(self.out / "results.csv"),
            PredictionSet(
                model=self.backbone.model_id,
                dataset=self.dataset.name,
                index=self.splits["test"].index,
                labels=y_test,
                probe=[PROBE],
                t=[p.t],
                layer=[self.layer],
                predictions=test_pred[None].astype(np.int32),
            ),
        )
        record = {
            "recipe": self.config.as_dict(),
            "model": self.backbone.model_id,
            "random_init": self.random_init,
            "layer": self.layer,
            "point": p.as_dict(),
            "chosen_epoch": best["epoch"],
            "val_top1": best["val_top1"],
            "test_top1": float(np.mean(test_pred == y_test)),
            "images": {k: len(v) for k, v in self.splits.items()},
            "parameters": self.parameter_counts,
            "steps": self.total_steps,
            "wall_seconds": round(wall, 1),
            "machine": machine_description(self.device),
            "device": str(self.device),
            "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
        }
        _atomic_text(json.dumps(record, indent=2, default=float), self.out / "record.json")
        from probekit.plots.training import plot_training_curves  # figures last: training needs no plotting

        plot_training_curves(
            pd.DataFrame(curves), self.out / "curves.png", title=f"{self.backbone.model_id} · t={p.t} · {self.layer}"
        )
        return table


def _atomic_text(text: str, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _write_curves(curves: list[dict], out: Path) -> None:
    _atomic_text(pd.DataFrame(curves).to_csv(index=False), out / "curves.csv")


def cell_from_results(path: str | Path, probe: str = "linear") -> tuple[int, str]:
    """(t, layer) of the val-chosen best ``probe`` cell of a results table
    (:func:`~probekit.evaluate.results.best_cell`).
    """
    from probekit.evaluate.results import best_cell, read_table

    return best_cell(read_table(path), probe=probe, source=str(path))
