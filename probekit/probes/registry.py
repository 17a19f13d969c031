"""The probes by name (``--probes linear,logreg,sgd,mlp,knn``), each called on a ProbeTask.

A loader registry keyed by name, not an if-chain (:data:`probekit.core.specs.PROBE_SPECS`, which
other packages extend by entry points): each entry adapts one probe implementation to the
protocol (:mod:`probekit.probes.protocol`): it predicts every split of the task and, where it
searches a setting, chooses it per cell on the task's selection split.

- ``linear``: multinomial logistic regression on standardised features, all cells batched
  (:mod:`probekit.probes.linear`); C searched over ``ProbeSettings.linear_C`` on val.
- ``logreg``: the scikit-learn reference of the same problem, one cell at a time.
- ``sgd``: a linear head trained by minibatch Adam, DDAE's linear.py recipe by default.
- ``mlp``: DDAE's classifier head (C -> 2C, SiLU, 2C -> classes), epoch chosen on val.
- ``knn``: weighted cosine kNN; k and temperature searched on val.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Hashable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from probekit.core.errors import ConfigError, ProbekitError
from probekit.core.registry import resolve
from probekit.core.specs import PROBE_SPECS
from probekit.probes.knn import knn_sweep
from probekit.probes.linear import LinearProbeConfig, linear_probe_path
from probekit.probes.logreg import LogRegConfig, logreg_probe
from probekit.probes.minibatch import MinibatchConfig, train_minibatch_heads
from probekit.probes.protocol import ProbeOutcome, ProbeTask, choose_per_cell


@dataclass(frozen=True)
class ProbeSettings:
    """Settings of every probe; lists are searched per cell on the selection split.

    Attributes:
        linear_C: inverse L2 strengths of ``linear`` and ``logreg`` (scikit-learn's C: the
            penalty is ||W||^2 / (2 C) against the summed cross-entropy); several values are
            searched on val, the first winning ties.
        knn_k: neighbour counts searched by ``knn``.
        knn_temperature: vote temperatures searched by ``knn``.
        knn_centre: subtract the train mean before the cosine (see :func:`knn_sweep`).
        sgd: recipe of ``sgd`` (default: DDAE's linear.py).
        mlp: recipe of ``mlp`` (default: DDAE's classifier head, epoch chosen on val).
        linear: base config of ``linear`` (its C is replaced by each value of ``linear_C``).
        logreg: base config of ``logreg``.
    """

    linear_C: Sequence[float] = (1.0,)
    knn_k: Sequence[int] = (20,)
    knn_temperature: Sequence[float] = (0.07,)
    knn_centre: bool = False
    sgd: MinibatchConfig = field(default_factory=MinibatchConfig.ddae_linear)
    mlp: MinibatchConfig = field(default_factory=MinibatchConfig.ddae_mlp)
    linear: LinearProbeConfig = field(default_factory=LinearProbeConfig)
    logreg: LogRegConfig = field(default_factory=LogRegConfig)

    def __post_init__(self) -> None:
        if not self.linear_C or any(c <= 0 for c in self.linear_C):
            raise ConfigError("linear_C", "{field} needs one or more positive values, e.g. 0.1,1")
        if not self.knn_k or any(k < 1 for k in self.knn_k):
            raise ConfigError("knn_k", "{field} needs one or more neighbour counts >= 1, e.g. 10,20,200")
        if not self.knn_temperature or any(t <= 0 for t in self.knn_temperature):
            raise ConfigError("knn_temperature", "{field} needs one or more positive values, e.g. 0.07")


Adapter = Callable[[ProbeTask, ProbeSettings, torch.device, bool], dict[Hashable, ProbeOutcome]]


def _joint_eval(task: ProbeTask) -> tuple[dict, np.ndarray, Callable[[dict], dict]]:
    """Every eval split of ``task`` concatenated as one "test" split, and the function that cuts
    a probe's {key: score} on it back into {key: {split: predictions}}: one fit serves val and
    test alike.
    """
    splits = list(task.evals)
    joint = {key: np.concatenate([task.evals[s][key] for s in splits]) for key in task.train}
    y_joint = np.concatenate([task.y_evals[s] for s in splits])
    bounds = np.cumsum([0] + [len(task.y_evals[s]) for s in splits])

    def cut(scores: dict) -> dict[Hashable, dict[str, np.ndarray]]:
        return {
            key: {s: score.predictions[bounds[i] : bounds[i + 1]] for i, s in enumerate(splits)}
            for key, score in scores.items()
        }

    return joint, y_joint, cut


def _joint_predictions(
    run: Callable[..., dict], task: ProbeTask, config: Any, **kwargs: Any
) -> dict[Hashable, dict[str, np.ndarray]]:
    """Call a (train, y_train, test, y_test) probe once on every eval split (see _joint_eval)."""
    train, y_train = task.stacked()
    joint, y_joint, cut = _joint_eval(task)
    return cut(run(train, y_train, joint, y_joint, config, **kwargs))


def _with_C(config: Any, c: float) -> Any:
    if "C" in {f.name for f in dataclasses.fields(config)}:
        return dataclasses.replace(config, C=c)
    return config


def linear_adapter(task: ProbeTask, s: ProbeSettings, device: torch.device, progress: bool) -> dict:
    # One regularisation path over every C: features standardised once, each C warm-started.
    config = dataclasses.replace(s.linear, num_classes=task.num_classes)
    train, y_train = task.stacked()
    joint, y_joint, cut = _joint_eval(task)
    path = linear_probe_path(train, y_train, joint, y_joint, list(s.linear_C), config, device=device, progress=progress)
    return choose_per_cell(task, [(f"C={c:g}", cut(path[float(c)])) for c in s.linear_C])


def logreg_adapter(task: ProbeTask, s: ProbeSettings, device: torch.device, progress: bool) -> dict:
    candidates = [
        (f"C={c:g}", _joint_predictions(logreg_probe, task, _with_C(s.logreg, c), progress=progress))
        for c in s.linear_C
    ]
    return choose_per_cell(task, candidates)


def knn_adapter(task: ProbeTask, s: ProbeSettings, device: torch.device, progress: bool) -> dict:
    # One top-max(k) pass per cell serves every (k, T) and both splits.
    train, y_train = task.stacked()
    sweep = knn_sweep(
        train,
        y_train,
        task.evals,
        list(s.knn_k),
        list(s.knn_temperature),
        centre=s.knn_centre,
        num_classes=task.num_classes,
        device=device,
        progress=progress,
    )
    centred = ",centred" if s.knn_centre else ""
    candidates = [(f"k={k},T={t:g}{centred}", sweep[(k, t)]) for k in s.knn_k for t in s.knn_temperature]
    return choose_per_cell(task, candidates)


def sgd_adapter(task: ProbeTask, s: ProbeSettings, device: torch.device, progress: bool) -> dict:
    return train_minibatch_heads(task, s.sgd, device=device, progress=progress, desc="sgd probe")


def mlp_adapter(task: ProbeTask, s: ProbeSettings, device: torch.device, progress: bool) -> dict:
    return train_minibatch_heads(task, s.mlp, device=device, progress=progress, desc="mlp probe")


class _Adapters(Mapping[str, Adapter]):
    """Every registered probe's adapter by name (:data:`probekit.core.specs.PROBE_SPECS`, entry points
    included), imported when first called for.
    """

    def __getitem__(self, name: str) -> Adapter:
        return resolve(PROBE_SPECS[name].adapter)

    def __iter__(self) -> Iterator[str]:
        return iter(PROBE_SPECS)

    def __len__(self) -> int:
        return len(PROBE_SPECS)


PROBES: Mapping[str, Adapter] = _Adapters()


def run_probe(
    name: str,
    task: ProbeTask,
    settings: ProbeSettings = ProbeSettings(),
    *,
    device: str | torch.device = "cpu",
    progress: bool = False,
) -> dict[Hashable, ProbeOutcome]:
    """Run the probe registered as ``name`` on ``task``."""
    if name not in PROBES:
        raise ProbekitError(f"unknown probe {name!r}; choose from {', '.join(PROBES)}")
    return PROBES[name](task, settings, torch.device(device), progress)
