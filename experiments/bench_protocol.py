"""DDAE's whole grid search: DDAE's own online protocol against extract-once-then-probe, in one run.

Arm A, online (DDAE's linear.py loop, written out here): every epoch re-runs the network on every
train image with a fresh random crop (4-pixel zero padding) + horizontal flip and, at each grid
point t, fresh Gaussian noise; one forward per (image, t) reads every requested layer (probekit's
hooks and pooling, as in the cache). Each (t, layer) cell has its own ``nn.Linear`` head with its
own Adam (lr 1e-3, no weight decay) and CosineAnnealingLR over the epochs, stepped per epoch;
batch 128 (the last, partial batch kept), mean cross-entropy on raw features, the final epoch
reported. Val and test: one noise draw of the un-augmented image.

Arm B, probekit: ``extract`` once, then ``probe`` every cell batched. Variants:
  (i)   mean  + sgd     cache without views, one vector per train image, DDAE's recipe (``sgd``)
  (ii)  views + sgd     cache with ``--views A``, ``--train-features sample`` (a cached augmented
                        view per image per epoch), ``--test-features single``: closest to arm A
  (iii) mean  + linear  the solved L-BFGS probe on the mean cache
and, as a yardstick for per-cell differences, (ii) again with another probe seed (shuffle, head
initialisation and view choice change; the features do not).

Like for like: the same class-stratified train / test subsets; every probe holds out the same
stratified 10 % validation split (``--val-fraction``) and arm A trains on the same remaining 90 %
and scores the same val images, so per-cell test accuracies compare heads trained on the same
images. The noise and crops are keyed as in the cache: arm A's epoch e uses augmented view e + 1
and its noise key, so its first A epochs see exactly the views cached for (ii), and its val and
test inputs are the cached ones (the run checks this and records the feature difference).
Both arms run fp32 (DDAE's default) with forward batches of 128, on the same machine, in one
process, one after the other; the forward rate of each part is recorded to show the load each saw.

The CIFAR-10 extrapolation counts the forwards of DDAE's grid (t = 1, 11, 21; 50 000 train,
10 000 test, 15 epochs, no validation split) for each arm and converts them to hours at the rate of
DDAE's CIFAR-10 UNet (the 35.7 M-parameter DDPM, random weights) measured in this run.

Usage (about 30 minutes on a 2-core CPU at 20 forwards per second, an hour at 12; --quick: a smoke test):
    nice -n 10 python experiments/bench_protocol.py
    python experiments/bench_protocol.py --quick        # writes out/bench_protocol_quick*.csv
Writes experiments/results/bench_protocol.csv (measure, value, unit, machine, setup) and
bench_protocol_cells.csv (per-cell val and test top-1 of every arm), and prints a table.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from probekit.core.noise import sample_noise, split_seed  # noqa: E402
from probekit.core.precision import machine_description  # noqa: E402
from probekit.data import fit_images, load_dataset, stratified_subset  # noqa: E402
from probekit.data.augment import crop_flip_views  # noqa: E402
from probekit.evaluate import stratified_val_split  # noqa: E402
from probekit.features.cache import FeatureCache  # noqa: E402
from probekit.features.extraction import ExtractConfig, extract, noise_draw, plan_extraction  # noqa: E402
from probekit.models import load_backbone  # noqa: E402
from probekit.probes.run import ProbeRunConfig, probe_cache  # noqa: E402

Cell = tuple[int, str]
CIFAR_MODEL = "experiments/models/ddpm-cifar10"
DDAE_CIFAR = {"train": 50_000, "test": 10_000, "timesteps": 3, "epochs": 15}


@dataclass
class ArmResult:
    """One arm or variant: seconds spent on features and on probing, forwards run, per-cell top-1."""

    name: str
    extract_s: float
    probe_s: float
    forwards: int
    test: dict[Cell, float]
    val: dict[Cell, float]

    @property
    def total_s(self) -> float:
        return self.extract_s + self.probe_s


@dataclass
class _ProbeSeed(ProbeRunConfig):
    """A probe run whose ``sgd`` seed differs from the validation-split seed (same split, other heads)."""

    probe_seed: int = 1

    def resolved_settings(self):
        settings = super().resolved_settings()
        return replace(settings, sgd=replace(settings.sgd, seed=self.probe_seed))


def cell_scores(table: pd.DataFrame, split: str) -> dict[Cell, float]:
    rows = table[(table["metric"] == "top1") & (table["split"] == split)]
    return {(int(r.t), str(r.layer)): float(r.value) for r in rows.itertuples()}


# ---------------------------------------------------------------------------------------------
# Arm A: DDAE's online loop


def _inputs(backbone, images: np.ndarray, fit: str) -> torch.Tensor:
    x, _ = fit_images(
        images, size=backbone.input_size, channels=backbone.input_channels, value_range=backbone.value_range, fit=fit
    )
    return backbone.encode(x.to(backbone.device))


def _noisy(backbone, x0: torch.Tensor, ids: np.ndarray, point, seed: int, draw: int) -> torch.Tensor:
    if point.alpha_bar >= 1.0:
        return x0
    noise = sample_noise(x0.shape[1:], ids, seed=seed, t=point.t, draw=draw, device=x0.device)
    return backbone.schedule.add_noise(x0, noise, point)


def online_arm(backbone, train, test, fit_pos: np.ndarray, val_pos: np.ndarray, plan, args) -> tuple[ArmResult, dict]:
    """DDAE's linear.py grid search: fresh crop + flip and fresh noise every epoch, a head per cell."""
    cells = [(point.t, layer) for point in plan.grid for layer in plan.layers]
    train_seed, test_seed = split_seed(args.seed, "train"), split_seed(args.seed, "test")
    images = train.read(slice(0, len(train.labels)))
    labels = torch.from_numpy(train.labels.astype(np.int64))
    n_classes = int(train.labels.max()) + 1
    # Widths from one forward; heads as DDAE builds them: nn.Linear's default init, seeded once.
    probe_x = _inputs(backbone, images[:1], args.fit)
    widths = {
        name: int(v.shape[1]) for name, v in backbone.features(probe_x, plan.grid[0], plan.layers, plan.pooling).items()
    }
    torch.manual_seed(args.seed)
    heads = {cell: nn.Linear(widths[cell[1]], n_classes) for cell in cells}
    optims = {cell: torch.optim.Adam(heads[cell].parameters(), lr=args.lr) for cell in cells}
    scheds = {cell: torch.optim.lr_scheduler.CosineAnnealingLR(optims[cell], args.epochs) for cell in cells}
    loss_fn = nn.CrossEntropyLoss()
    shuffle = torch.Generator().manual_seed(args.seed)
    feature_s = head_s = 0.0
    forwards = 0
    first_batch: dict = {}
    started = time.perf_counter()
    for epoch in range(args.epochs):
        view = epoch + 1  # a fresh augmentation and noise key every epoch (epoch e = cached view e + 1)
        for head in heads.values():
            head.train()
        order = fit_pos[torch.randperm(len(fit_pos), generator=shuffle).numpy()]
        for start in range(0, len(order), args.batch_size):
            pos = np.sort(order[start : start + args.batch_size])
            ids = train.index[pos]
            tick = time.perf_counter()
            x0 = _inputs(
                backbone, crop_flip_views(images[pos], ids, seed=args.seed, split="train", view=view), args.fit
            )
            feature_s += time.perf_counter() - tick
            for point in plan.grid:
                tick = time.perf_counter()
                x = _noisy(backbone, x0, ids, point, train_seed, noise_draw(view, 0))
                feats = backbone.features(x, point, plan.layers, plan.pooling)
                forwards += len(pos)
                tock = time.perf_counter()
                feature_s += tock - tick
                if epoch == 0 and not first_batch:
                    first_batch = {"pos": pos, "t": point.t, "feats": {k: v.clone() for k, v in feats.items()}}
                y = labels[pos]
                for layer in plan.layers:
                    cell = (point.t, layer)
                    loss = loss_fn(heads[cell](feats[layer].detach()), y)
                    optims[cell].zero_grad()
                    loss.backward()
                    optims[cell].step()
                head_s += time.perf_counter() - tock
        for sched in scheds.values():
            sched.step()
        print(
            f"  arm A epoch {epoch + 1}/{args.epochs}: {time.perf_counter() - started:.0f} s, "
            f"{forwards / feature_s:.1f} forwards/s",
            file=sys.stderr,
        )

    # Val (held-out train images) and test: one noise draw of the clean image, as cached.
    scores: dict[str, dict[Cell, float]] = {}
    eval_feats: dict[str, dict[Cell, torch.Tensor]] = {}
    for split_name, split, positions, seed in (("val", train, val_pos, train_seed), ("test", test, None, test_seed)):
        positions = np.arange(len(split.labels)) if positions is None else positions
        preds: dict[Cell, list[torch.Tensor]] = {cell: [] for cell in cells}
        keep: dict[Cell, list[torch.Tensor]] = {cell: [] for cell in cells}
        for head in heads.values():
            head.eval()
        for start in range(0, len(positions), args.batch_size):
            pos = positions[start : start + args.batch_size]
            ids = split.index[pos]
            tick = time.perf_counter()
            x0 = _inputs(backbone, split.read(pos), args.fit)
            for point in plan.grid:
                feats = backbone.features(
                    _noisy(backbone, x0, ids, point, seed, noise_draw(0, 0)), point, plan.layers, plan.pooling
                )
                forwards += len(pos)
                tock = time.perf_counter()
                feature_s += tock - tick
                with torch.no_grad():
                    for layer in plan.layers:
                        preds[(point.t, layer)].append(heads[(point.t, layer)](feats[layer]).argmax(dim=1))
                        keep[(point.t, layer)].append(feats[layer])
                tick = time.perf_counter()
                head_s += tick - tock
        y = torch.from_numpy(split.labels[positions].astype(np.int64))
        scores[split_name] = {cell: float((torch.cat(p) == y).float().mean()) for cell, p in preds.items()}
        eval_feats[split_name] = {cell: torch.cat(v) for cell, v in keep.items()}
    result = ArmResult("A: online (DDAE's loop)", feature_s, head_s, forwards, scores["test"], scores["val"])
    return result, {"first_batch": first_batch, "eval": eval_feats}


# ---------------------------------------------------------------------------------------------
# Arm B: extract once, probe every cell


def timed_extract(backbone, dataset, out: Path, config: ExtractConfig) -> tuple[float, int]:
    start = time.perf_counter()
    extract(backbone, dataset, out, config, progress=False, overwrite=True)
    elapsed = time.perf_counter() - start
    n = len(dataset.splits["train"].labels) * (1 + config.views) + len(dataset.splits["test"].labels)
    return elapsed, n * len(config.timesteps)


def timed_probe(cache: Path, config: ProbeRunConfig) -> tuple[float, pd.DataFrame]:
    start = time.perf_counter()
    table = probe_cache(cache, config, progress=False).table
    return time.perf_counter() - start, table


def cifar_rate(args) -> tuple[float, float]:
    """Forwards per second of DDAE's CIFAR-10 UNet (random weights, every layer hooked, fp32), and its GFLOP."""
    from torch.utils.flop_counter import FlopCounterMode

    backbone = load_backbone(CIFAR_MODEL, random_init=True)
    layers = [layer.name for layer in backbone.layers()]
    config = ExtractConfig(timesteps=[10], precision="fp32")
    plan = plan_extraction(backbone, config)
    x = torch.randn(args.cifar_batch, backbone.input_channels, *backbone.input_size)
    with FlopCounterMode(display=False) as counter:
        backbone.features(x[:1], plan.grid[0], layers, plan.pooling)
    gflop = counter.get_total_flops() / 1e9
    backbone.features(x[:4], plan.grid[0], layers, plan.pooling)  # warm-up
    start = time.perf_counter()
    for _ in range(args.cifar_batches):
        backbone.features(x, plan.grid[0], layers, plan.pooling)
    return args.cifar_batch * args.cifar_batches / (time.perf_counter() - start), gflop


# ---------------------------------------------------------------------------------------------


def compare(a: ArmResult, b: ArmResult) -> tuple[float, float]:
    diffs = np.array([100 * abs(b.test[cell] - a.test[cell]) for cell in a.test])
    return float(diffs.mean()), float(diffs.max())


def val_chosen(arm: ArmResult) -> tuple[Cell, float]:
    cell = max(arm.val, key=lambda c: (arm.val[c], -list(arm.val).index(c)))
    return cell, arm.test[cell]


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="checkpoints/fashion-mnist-ddpm")
    parser.add_argument("--data", default="fashion-mnist")
    parser.add_argument("--train", type=int, default=1000, help="class-stratified train subset")
    parser.add_argument("--test", type=int, default=500, help="class-stratified test subset")
    parser.add_argument("--timesteps", default="0,100", help="grid points (the model's own t)")
    parser.add_argument("--layers", default=None, help="layer selection (default: every layer)")
    parser.add_argument("--views", type=int, default=4, help="augmented views cached for variant (ii)")
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--batch-size", type=int, default=128, help="head minibatch and forward batch of both arms")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--val-fraction", type=float, default=0.1)
    parser.add_argument("--fit", default="auto")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cifar-batch", type=int, default=64, help="batch of the CIFAR-10 UNet rate measurement")
    parser.add_argument("--cifar-batches", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="smoke test: tiny subset, grid and epochs")
    parser.add_argument("--work", help="folder for the caches (default: a temporary folder)")
    parser.add_argument("--out", default="experiments/results/bench_protocol.csv")
    args = parser.parse_args(argv)
    if args.quick:
        args.train, args.test, args.timesteps, args.layers = 60, 40, "25", "mid_block*,up_blocks.0*"
        args.epochs, args.views, args.cifar_batch, args.cifar_batches = 3, 2, 4, 1
        args.out = "out/bench_protocol_quick.csv"
    timesteps = [int(t) for t in args.timesteps.split(",")]
    load_start = os.getloadavg()[0]
    machine = machine_description()
    wall_start = time.perf_counter()
    print(f"machine: {machine}\nload average (1 min) at start: {load_start:.2f}", file=sys.stderr)

    backbone = load_backbone(args.model)
    dataset = load_dataset(args.data, download=False, seed=args.seed)
    dataset.splits = {
        "train": stratified_subset(dataset.splits["train"], args.train, seed=args.seed),
        "test": stratified_subset(dataset.splits["test"], args.test, seed=args.seed),
    }
    train, test = dataset.splits["train"], dataset.splits["test"]
    base = ExtractConfig(
        timesteps=timesteps,
        layers=args.layers,
        seed=args.seed,
        batch_size=args.batch_size,
        precision="fp32",
        fit=args.fit,
        splits=("train", "test"),
    )
    plan = plan_extraction(backbone, base)
    fit_pos, val_pos = stratified_val_split(train.labels, args.val_fraction, args.seed)
    cells = [(point.t, layer) for point in plan.grid for layer in plan.layers]
    setup = (
        f"{args.model} on {args.data}: {len(train.labels)} train ({len(fit_pos)} fit + {len(val_pos)} val) / "
        f"{len(test.labels)} test, t = {timesteps}, {len(plan.layers)} layers ({len(cells)} cells), "
        f"{args.epochs} epochs, batch {args.batch_size}, Adam lr {args.lr}, fp32, views A = {args.views}, "
        f"seed {args.seed}"
    )
    print(setup, file=sys.stderr)

    results: dict[str, ArmResult] = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.work or tmp)
        work.mkdir(parents=True, exist_ok=True)
        mean_cache, views_cache = work / "mean.h5", work / "views.h5"
        # Arm B: extraction (two caches) and probing (three variants + the seed yardstick).
        mean_s, mean_fwd = timed_extract(backbone, dataset, mean_cache, base)
        print(f"  extract mean cache: {mean_s:.0f} s, {mean_fwd / mean_s:.1f} forwards/s", file=sys.stderr)
        views_s, views_fwd = timed_extract(backbone, dataset, views_cache, replace(base, views=args.views))
        print(f"  extract views cache: {views_s:.0f} s, {views_fwd / views_s:.1f} forwards/s", file=sys.stderr)
        common = {
            "val_fraction": args.val_fraction,
            "seed": args.seed,
            "test_features": "single",
            "epochs": args.epochs,
            "lr": args.lr,
            "batch_size": args.batch_size,
        }
        variants = [
            (
                "(i) mean + sgd",
                mean_cache,
                mean_s,
                mean_fwd,
                ProbeRunConfig(probes=("sgd",), train_features="mean", **common),
            ),
            (
                f"(ii) views {args.views} + sgd",
                views_cache,
                views_s,
                views_fwd,
                ProbeRunConfig(probes=("sgd",), train_features="sample", use_views=args.views, **common),
            ),
            (
                "(iii) mean + linear",
                mean_cache,
                mean_s,
                mean_fwd,
                ProbeRunConfig(probes=("linear",), train_features="mean", **common),
            ),
            (
                f"(ii) views {args.views} + sgd, probe seed {args.seed + 1}",
                views_cache,
                views_s,
                views_fwd,
                _ProbeSeed(
                    probes=("sgd",), train_features="sample", use_views=args.views, probe_seed=args.seed + 1, **common
                ),
            ),
        ]
        for name, cache, extract_s, forwards, config in variants:
            probe_s, table = timed_probe(cache, config)
            results[name] = ArmResult(
                name, extract_s, probe_s, forwards, cell_scores(table, "test"), cell_scores(table, "val")
            )
            print(f"  probe {name}: {probe_s:.1f} s", file=sys.stderr)
        # Arm A.
        arm_a, seen = online_arm(backbone, train, test, fit_pos, val_pos, plan, args)
        # Check: arm A's inputs are the cached ones (epoch 1 = view 1, val / test = draw 0 of the clean image).
        with FeatureCache(views_cache) as cache:
            fb = seen["first_batch"]
            layer = plan.layers[-1]
            cached = torch.from_numpy(cache.train_slots("train", layer, fb["t"])[0][fb["pos"]])
            view_diff = float((fb["feats"][layer] - cached).abs().max() / cached.abs().max())
            eval_diff = 0.0
            for split_name in ("val", "test"):
                for (t, name), online in seen["eval"][split_name].items():
                    stored = cache.features("train" if split_name == "val" else "test", name, t, draws="single")
                    stored = torch.from_numpy(stored[val_pos] if split_name == "val" else stored)
                    eval_diff = max(eval_diff, float((online - stored).abs().max() / stored.abs().max()))
        cifar_fps, cifar_gflop = cifar_rate(args)
    load_end = os.getloadavg()[0]
    wall = time.perf_counter() - wall_start

    # ----- report
    rows: list[dict] = []

    def add(measure: str, value: object, unit: str) -> None:
        rows.append({"measure": measure, "value": value, "unit": unit, "setup": setup})

    add("load average (1 min) at start", load_start, "")
    add("load average (1 min) at end", load_end, "")
    add("benchmark wall time", wall, "s")
    add("arm A epoch-1 features vs cached view 1, max |diff| / max |cached|", view_diff, "")
    add("arm A val/test features vs cached draw 0, max |diff| / max |cached|", eval_diff, "")
    arms = [arm_a] + list(results.values())
    for arm in arms:
        cell, chosen = val_chosen(arm)
        add(f"{arm.name}: features (extraction) wall time", arm.extract_s, "s")
        add(f"{arm.name}: probing wall time", arm.probe_s, "s")
        add(f"{arm.name}: total wall time", arm.total_s, "s")
        add(f"{arm.name}: network forwards (image x t)", arm.forwards, "count")
        add(f"{arm.name}: forwards per second of feature time", arm.forwards / arm.extract_s, "1/s")
        add(f"{arm.name}: mean test top-1 over cells", 100 * np.mean(list(arm.test.values())), "%")
        add(f"{arm.name}: best test cell (chosen on test, as DDAE)", 100 * max(arm.test.values()), "%")
        add(f"{arm.name}: val-chosen cell t={cell[0]} {cell[1]}, test top-1", 100 * chosen, "%")
        if arm is not arm_a:
            mean_d, max_d = compare(arm_a, arm)
            add(f"{arm.name}: wall-time ratio A / variant", arm_a.total_s / arm.total_s, "x")
            add(f"{arm.name}: forward ratio A / variant", arm_a.forwards / arm.forwards, "x")
            add(f"{arm.name}: mean |test top-1 - A| over cells", mean_d, "points")
            add(f"{arm.name}: max |test top-1 - A| over cells", max_d, "points")
    seeds = list(results.values())
    mean_d, max_d = compare(seeds[1], seeds[3])
    add("yardstick: (ii) seed 1 vs (ii) seed 0, mean |test top-1 diff| over cells", mean_d, "points")
    add("yardstick: (ii) seed 1 vs (ii) seed 0, max |test top-1 diff| over cells", max_d, "points")

    # CIFAR-10 at DDAE's grid: forwards counted, hours at the CIFAR-10 UNet's rate measured here.
    n, n_test, n_t, epochs = DDAE_CIFAR["train"], DDAE_CIFAR["test"], DDAE_CIFAR["timesteps"], DDAE_CIFAR["epochs"]
    cifar = {
        "A: online (DDAE's loop)": (epochs * n + n_test) * n_t,
        "(i)/(iii) mean cache": (n + n_test) * n_t,
        f"(ii) views {args.views} cache": (n * (1 + args.views) + n_test) * n_t,
    }
    add("CIFAR-10 UNet (35.7 M, every layer hooked, fp32): forward", cifar_gflop, "GFLOP")
    add("CIFAR-10 UNet: forwards per second measured in this run", cifar_fps, "1/s")
    for name, forwards in cifar.items():
        add(f"CIFAR-10 extrapolation, DDAE's grid: {name} forwards", forwards, "count")
        add(f"CIFAR-10 extrapolation, DDAE's grid: {name} hours at the rate above", forwards / cifar_fps / 3600, "h")
    a_forwards = cifar["A: online (DDAE's loop)"]
    for name, forwards in list(cifar.items())[1:]:
        add(f"CIFAR-10 extrapolation: hours saved by {name}", (a_forwards - forwards) / cifar_fps / 3600, "h")
        add(f"CIFAR-10 extrapolation: forward ratio A / {name}", a_forwards / forwards, "x")

    table = pd.DataFrame(rows)
    table.insert(3, "machine", machine)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(args.out, index=False)
    depth = {layer.name: layer.depth for layer in backbone.layers()}
    per_cell = pd.DataFrame(
        [
            {
                "t": t,
                "layer": layer,
                "depth": depth[layer],
                **{
                    f"{arm.name} {split}": 100 * getattr(arm, split)[(t, layer)]
                    for arm in arms
                    for split in ("val", "test")
                },
            }
            for t, layer in cells
        ]
    )
    cells_out = args.out.replace(".csv", "_cells.csv")
    per_cell.to_csv(cells_out, index=False, float_format="%.2f")

    print(f"\nmachine: {machine}\n[{setup}]")
    for row in table.itertuples():
        value = f"{row.value:.4g}" if isinstance(row.value, float) else str(row.value)
        print(f"  {row.measure:<90s} {value:>10s}  {row.unit}")
    print(f"\nwrote {args.out} and {cells_out}")
    print_agreement(cells_out)


def print_agreement(cells_csv: str) -> None:
    """How each variant's per-cell test top-1 ranks and averages against arm A, beside the
    seed-to-seed yardstick: Spearman correlation over cells and the difference of grid means.
    """
    from scipy.stats import spearmanr

    per_cell = pd.read_csv(cells_csv)
    tests = [column for column in per_cell.columns if column.endswith(" test")]
    arm_a, *variants = tests
    print("\nper-cell test top-1 against arm A (and the yardstick against (ii)):")
    pairs = [(arm_a, v) for v in variants[:-1]] + [(variants[1], variants[-1])]
    for first, second in pairs:
        rho = spearmanr(per_cell[first], per_cell[second]).statistic
        shift = per_cell[second].mean() - per_cell[first].mean()
        print(f"  {second[:-5]:<40s} vs {first[:-5]:<28s} Spearman {rho:.2f}, grid mean {shift:+.2f} points")


if __name__ == "__main__":
    if sys.argv[1:2] == ["--agreement"]:  # re-read a finished run: --agreement CELLS_CSV
        print_agreement(sys.argv[2])
    else:
        main()
