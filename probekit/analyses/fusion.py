"""Fusion probes: several (t, layer) cells combined into one classifier, chosen on val.

- ``fusion-concat``: the features of the top-k cells (ranked by a probe's val accuracy in a
  results table) concatenated and fed to the ``linear`` probe (standardise + L2 softmax
  regression, C searched on val): the problem scikit-learn's ``logreg`` solves, to the same
  tolerance, with every C of ``FusionConfig.C`` as one warm-started path (the main job's
  ``probekit fuse`` took 10 s instead of 19 s with the ``logreg`` loop on a 2-core CPU). k is
  chosen on val among ``FusionConfig.top_k``.
- ``fusion-mixture``: Diffusion-Hyperfeatures-style mixing. Each cell c's standardised features
  x_c (width D_c) are projected to a common width W by its own linear map P_c; the projections
  are summed with softmax mixture weights a = softmax(w) over every cell (layers x noise
  levels), and a linear classifier V reads the mixture::

      logits = V ( sum_c a_c P_c x_c ) + b,    a_c >= 0,  sum_c a_c = 1

  w, P_c, V, b are trained jointly with Adam (cross-entropy, weight decay on P and V, none on w,
  w initialised to 0 = uniform mixture) for ``epochs`` passes; the epoch with the best val
  accuracy is kept, and its mixture weights are reported.

Both use the same validation split as ``probekit probe`` (:func:`stratified_val_split` with the
same fraction and seed; the number of fitting images must match the results table's n_train).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from probekit.core.errors import ProbekitError
from probekit.core.types import CellInfo
from probekit.evaluate import score_predictions, stratified_val_split
from probekit.evaluate.predictions import PredictionSet
from probekit.evaluate.results import COLUMNS, read_table, scores_to_table, with_kind
from probekit.probes.protocol import ProbeTask, accuracy
from probekit.probes.registry import ProbeSettings, run_probe

Cell = tuple[int, str]  # (t, layer)
log = logging.getLogger(__name__)

CONCAT = "fusion-concat"
MIXTURE = "fusion-mixture"
WEIGHT_METRIC = "mixture_weight"


@dataclass(frozen=True)
class FusionConfig:
    """Settings of both fusion probes.

    Attributes:
        probe: the probe whose val top-1 in the results table ranks the cells.
        top_k: cell counts tried by ``fusion-concat`` (chosen on val).
        C: inverse L2 strengths tried by ``fusion-concat`` (as ``probekit probe --C``).
        mixture: train ``fusion-mixture`` too.
        mixture_top: mix only the best this many cells (None: every cell of the cache).
        width: common projection width W of the mixture.
        epochs, batch_size, lr, weight_decay: the mixture's Adam training.
        val_fraction, seed: the validation split, as given to ``probekit probe``.
        device: where the mixture trains.
    """

    probe: str = "linear"
    top_k: Sequence[int] = (2, 4, 8)
    C: Sequence[float] = (1.0,)
    mixture: bool = True
    mixture_top: int | None = None
    width: int = 32
    epochs: int = 40
    batch_size: int = 256
    lr: float = 3e-3
    weight_decay: float = 1e-4
    val_fraction: float = 0.1
    seed: int = 0
    device: str = "cpu"

    def __post_init__(self) -> None:
        if not self.top_k or any(k < 1 for k in self.top_k):
            raise ProbekitError("--top-k needs one or more cell counts >= 1, e.g. 2,4,8")
        if self.mixture_top is not None and self.mixture_top < 2:
            raise ProbekitError("--mixture-top needs at least 2 cells to mix")
        if self.width < 1 or self.epochs < 1 or self.batch_size < 1 or self.lr <= 0:
            raise ProbekitError("fusion: need --width, --epochs, --batch-size >= 1 and --lr > 0")


@dataclass
class FusionResult:
    """Results rows (both fusion probes, val and test, plus the mixture weights), the test
    predictions sidecar, and the mixture weights by cell.
    """

    table: pd.DataFrame
    predictions: PredictionSet
    weights: dict[Cell, float] = field(default_factory=dict)


def rank_cells(table: pd.DataFrame, probe: str, model: str) -> list[Cell]:
    """Cells of ``model`` ordered by ``probe``'s val top-1, best first (ties: lower t, then depth)."""
    rows = table[(table["model"] == model) & (table["probe"] == probe) & (table["metric"] == "top1")]
    if rows.empty:
        have = sorted(set(table.loc[table["model"] == model, "probe"]))
        raise ProbekitError(
            f"the results hold no {probe!r} rows for {model}: pick --probe from {', '.join(have) or '(none)'}"
        )
    val = rows[rows["split"] == "val"]
    if val.empty:
        raise ProbekitError(
            "the results have no val rows (probed with --val-fraction 0): fusion chooses on val; re-run `probekit "
            "probe` with a validation split"
        )
    ranked = val.sort_values(["value", "t", "depth"], ascending=[False, True, True], kind="mergesort")
    return [(int(t), str(layer)) for t, layer in zip(ranked["t"], ranked["layer"])]


class MixtureHead(torch.nn.Module):
    """``V(sum_c softmax(w)_c P_c x_c) + b``; cells of one width are projected in one batched matmul."""

    def __init__(self, widths: Sequence[int], width: int, num_classes: int, generator: torch.Generator) -> None:
        super().__init__()
        self.groups: dict[int, list[int]] = {}
        for c, d in enumerate(widths):
            self.groups.setdefault(d, []).append(c)
        self.mix_logits = torch.nn.Parameter(torch.zeros(len(widths)))
        self.projections = torch.nn.ParameterDict(
            {
                str(d): torch.nn.Parameter(torch.randn(len(members), d, width, generator=generator) / math.sqrt(d))
                for d, members in self.groups.items()
            }
        )
        self.classifier = torch.nn.Linear(width, num_classes)
        with torch.no_grad():
            bound = 1 / math.sqrt(width)
            self.classifier.weight.uniform_(-bound, bound, generator=generator)
            self.classifier.bias.zero_()

    def weights(self) -> torch.Tensor:
        return torch.softmax(self.mix_logits, dim=0)

    def forward(self, x: Mapping[int, torch.Tensor]) -> torch.Tensor:
        """``x[d]``: (G_d, B, d) features of the cells of width d, in ``self.groups[d]`` order."""
        a = self.weights()
        mixed = 0.0
        for d, members in self.groups.items():
            projected = torch.bmm(x[d], self.projections[str(d)])  # (G_d, B, W)
            mixed = mixed + torch.einsum("g,gbw->bw", a[members], projected)
        return self.classifier(mixed)


def _standardise(fit: np.ndarray, *others: np.ndarray) -> list[np.ndarray]:
    """Scale by the fit split's mean and std (constant features left unscaled, as StandardScaler)."""
    mean = fit.mean(axis=0)
    std = fit.std(axis=0)
    std = np.where(std < 1e-6, 1.0, std)
    return [((x - mean) / std).astype(np.float32) for x in (fit, *others)]


def fit_mixture(
    train: Sequence[np.ndarray],
    y_train: np.ndarray,
    evals: Mapping[str, Sequence[np.ndarray]],
    y_evals: Mapping[str, np.ndarray],
    num_classes: int,
    config: FusionConfig,
    *,
    select_on: str = "val",
) -> tuple[dict[str, np.ndarray], np.ndarray, int]:
    """Train the mixture on ``train`` (one (N, D_c) array per cell) and predict every split.

    Returns ``(predictions per split, mixture weights (C,), chosen epoch (1-based))``; the epoch
    is the one with the best ``select_on`` accuracy (the earliest on ties).
    """
    torch.manual_seed(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    device = torch.device(config.device)
    scaled = [_standardise(x, *[evals[s][c] for s in evals]) for c, x in enumerate(train)]
    widths = [x.shape[1] for x in train]
    model = MixtureHead(widths, config.width, num_classes, generator).to(device)

    def stack(split_index: int) -> dict[int, torch.Tensor]:
        return {
            d: torch.from_numpy(np.stack([scaled[c][split_index] for c in members])).to(device)
            for d, members in model.groups.items()
        }

    x_fit = stack(0)
    x_eval = {s: stack(i + 1) for i, s in enumerate(evals)}
    y_fit = torch.from_numpy(np.asarray(y_train, dtype=np.int64)).to(device)
    decayed = list(model.projections.parameters()) + [model.classifier.weight]
    optimiser = torch.optim.Adam(
        [
            {"params": decayed, "weight_decay": config.weight_decay},
            {"params": [model.mix_logits, model.classifier.bias], "weight_decay": 0.0},
        ],
        lr=config.lr,
    )
    n = len(y_fit)
    best: tuple[float, int, dict[str, np.ndarray], np.ndarray] | None = None
    for epoch in range(1, config.epochs + 1):
        model.train()
        order = torch.randperm(n, generator=generator).to(device)
        for start in range(0, n, config.batch_size):
            batch = order[start : start + config.batch_size]
            logits = model({d: x[:, batch] for d, x in x_fit.items()})
            loss = torch.nn.functional.cross_entropy(logits, y_fit[batch])
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
        model.eval()
        with torch.no_grad():
            preds = {s: model(x).argmax(dim=1).cpu().numpy() for s, x in x_eval.items()}
            score = accuracy(y_evals[select_on], preds[select_on])
            if best is None or score > best[0]:
                best = (score, epoch, preds, model.weights().cpu().numpy().astype(np.float64))
    assert best is not None
    return best[2], best[3], best[1]


def fuse_cache(
    cache_paths: str | Path | Sequence[str | Path],
    results_path: str | Path,
    config: FusionConfig = FusionConfig(),
    *,
    progress: bool = False,
) -> FusionResult:
    """Both fusion probes on a cache, the cells ranked by ``config.probe``'s val accuracy in
    ``results_path`` (the results of ``probekit probe`` on the same cache).
    """
    from probekit.features.group import CacheGroup

    paths = [cache_paths] if isinstance(cache_paths, (str, Path)) else list(cache_paths)
    results = read_table(results_path)
    with CacheGroup(paths) as group:
        model_id, dataset = str(group.attrs.get("model_id")), str(group.attrs.get("dataset"))
        if model_id not in set(results["model"]):
            raise ProbekitError(
                f"{results_path} holds no rows of {model_id} (it has {', '.join(sorted(set(results['model'])))}): "
                "give the results of `probekit probe` on this cache"
            )
        ranked = [cell for cell in rank_cells(results, config.probe, model_id) if cell in group.cells]
        if len(ranked) < 2:
            raise ProbekitError(f"fusion needs at least 2 probed cells of {model_id}; the results rank {len(ranked)}")
        y_all = group.labels("train")
        if "val" in group.splits:
            fit_pos, val_pos = np.arange(len(y_all)), None
        else:
            fit_pos, val_pos = stratified_val_split(y_all, config.val_fraction, config.seed)
            if not len(val_pos):
                raise ProbekitError("fusion chooses on val: give --val-fraction > 0 (as given to `probekit probe`)")
        n_train = set(results.loc[(results["model"] == model_id) & (results["probe"] == config.probe), "n_train"])
        if n_train != {len(fit_pos)}:
            raise ProbekitError(
                f"{results_path} was fitted on {sorted(n_train)} images but --val-fraction {config.val_fraction} "
                f"--seed {config.seed} leaves {len(fit_pos)}: give the same validation split as `probekit probe`"
            )
        y_fit = y_all[fit_pos]
        y_evals = {"val": group.labels("val") if val_pos is None else y_all[val_pos], "test": group.labels("test")}
        mixed_cells = ranked if config.mixture_top is None else ranked[: config.mixture_top]
        needed = (
            ranked[: max(config.top_k)]
            if not config.mixture
            else list(dict.fromkeys(ranked[: max(config.top_k)] + mixed_cells))
        )
        feats: dict[str, dict[Cell, np.ndarray]] = {"train": {}, "val": {}, "test": {}}
        for cell in needed:
            clean = group.features("train", cell)
            feats["train"][cell] = clean[fit_pos]
            feats["val"][cell] = group.features("val", cell) if val_pos is None else clean[val_pos]
            feats["test"][cell] = group.features("test", cell)
            if not all(np.isfinite(feats[s][cell]).all() for s in feats):
                raise ProbekitError(
                    f"cell t={cell[0]} {cell[1]} holds NaN/inf features: leave it out with --mixture-top or re-extract"
                )
        infos = group.cells
        test_index = group.index("test")
        num_classes = len(group.class_names)

    outcomes: dict[str, tuple[str, str, dict[str, np.ndarray]]] = {}
    # (a) concatenation of the top-k cells, every k fitted by the linear probe, k chosen on val.
    ks = sorted({min(k, len(ranked)) for k in config.top_k})
    task = ProbeTask(
        train={k: np.concatenate([feats["train"][c] for c in ranked[:k]], axis=1) for k in ks},
        y_train=y_fit,
        evals={s: {k: np.concatenate([feats[s][c] for c in ranked[:k]], axis=1) for k in ks} for s in ("val", "test")},
        y_evals=y_evals,
        num_classes=num_classes,
    )
    per_k = run_probe("linear", task, ProbeSettings(linear_C=tuple(config.C)), progress=progress)
    best_k = max(ks, key=lambda k: (accuracy(y_evals["val"], per_k[k].predictions["val"]), -k))
    members = ";".join(f"t={t}:{layer}" for t, layer in ranked[:best_k])
    outcomes[CONCAT] = (f"k={best_k},{per_k[best_k].params}", members, per_k[best_k].predictions)
    log.info("fusion-concat: top-%d cells chosen on val (%s)", best_k, members)

    weights: dict[Cell, float] = {}
    if config.mixture:
        preds, a, epoch = fit_mixture(
            [feats["train"][c] for c in mixed_cells],
            y_fit,
            {s: [feats[s][c] for c in mixed_cells] for s in ("val", "test")},
            y_evals,
            num_classes,
            config,
        )
        weights = {cell: float(w) for cell, w in zip(mixed_cells, a)}
        outcomes[MIXTURE] = (f"W={config.width},epoch={epoch}", f"{len(mixed_cells)} cells", preds)
        log.info("fusion-mixture: %d cells, epoch %d chosen on val", len(mixed_cells), epoch)

    table = _fusion_table(outcomes, y_evals, model_id, dataset, len(y_fit))
    if weights:
        table = pd.concat(
            [table, _weight_rows(weights, infos, model_id, dataset, len(y_fit), config.width)], ignore_index=True
        )
    table = with_kind(table, "fusion")
    names = list(outcomes)
    predictions = PredictionSet(
        model=model_id,
        dataset=dataset,
        index=test_index,
        labels=y_evals["test"],
        probe=names,
        t=[-1] * len(names),
        layer=[_FUSED_LAYER] * len(names),
        predictions=np.stack([outcomes[name][2]["test"] for name in names]).astype(np.int32),
    )
    return FusionResult(table=table, predictions=predictions, weights=weights)


def format_fusion(table: pd.DataFrame) -> str:
    """One line per fusion probe: its setting and members, val and test top-1 with the interval."""
    lines = []
    top1 = table[(table["metric"] == "top1") & (table["layer"] == _FUSED_LAYER)]
    for probe, rows in top1.groupby("probe", sort=False):
        val = rows[rows["split"] == "val"].iloc[0]
        test = rows[rows["split"] == "test"].iloc[0]
        lines.append(
            f"{probe:<14}  {test['params']} ({test['cells']})  val {100 * val['value']:.1f} %  "
            f"test {100 * test['value']:.1f} % [{100 * test['ci_low']:.1f}, {100 * test['ci_high']:.1f}]"
        )
    return "\n".join(lines)


#: the fused rows' stand-in cell: no single (t, layer); the members are in the ``cells`` column
_FUSED_LAYER = "fused"
_FUSED_CELL = CellInfo(
    t=-1, sigma=math.nan, logsnr=math.nan, alpha_bar=math.nan, layer=_FUSED_LAYER, stage="fused", depth=-1
)


def _fusion_table(
    outcomes: Mapping[str, tuple[str, str, dict[str, np.ndarray]]],
    y_evals: Mapping[str, np.ndarray],
    model: str,
    dataset: str,
    n_train: int,
) -> pd.DataFrame:
    key = (-1, _FUSED_LAYER)
    scores = {
        name: {key: {s: score_predictions(y_evals[s], preds[s]) for s in ("val", "test")}}
        for name, (_, _, preds) in outcomes.items()
    }
    params = {name: {key: setting} for name, (setting, _, _) in outcomes.items()}
    table = scores_to_table(scores, {key: _FUSED_CELL}, model=model, dataset=dataset, n_train=n_train, params=params)
    table["cells"] = table["probe"].map({name: members for name, (_, members, _) in outcomes.items()})
    return table


def _weight_rows(
    weights: Mapping[Cell, float], infos: Mapping[Cell, CellInfo], model: str, dataset: str, n_train: int, width: int
) -> pd.DataFrame:
    """One row per mixed cell: metric "mixture_weight", split "train" (learned there), value a_c."""
    rows = []
    for cell, a in weights.items():
        info = infos[cell]
        rows.append(
            {
                "model": model,
                "dataset": dataset,
                **asdict(info),  # t, sigma, logsnr, alpha_bar, layer, stage, depth
                "probe": MIXTURE,
                "params": f"W={width}",
                "metric": WEIGHT_METRIC,
                "split": "train",
                "value": a,
                "ci_low": math.nan,
                "ci_high": math.nan,
                "n_train": n_train,
                "n_eval": 0,
                "cells": "",
            }
        )
    return pd.DataFrame(rows, columns=[*COLUMNS, "cells"])
