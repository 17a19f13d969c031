"""What a step of ``probekit run`` is: the run's file layout, a step's commands and outputs."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from probekit.pipeline.config import RunConfig

Command = list[str]  # argv of one probekit command, without the leading "probekit"


@dataclass(frozen=True)
class RunPaths:
    """Where every file of a run goes: tables and figures in ``out``, caches in ``caches``."""

    out: Path
    caches: Path
    label: str
    # baselines ("pixels", "random-init") shared by several models: run -> (cache, results); those in
    # `borrowed` were computed by an earlier model of the run and are only read here
    shared: Mapping[str, tuple[Path, Path]] = field(default_factory=dict)
    borrowed: frozenset[str] = frozenset()

    def cache(self, run: str) -> Path:
        return self.shared[run][0] if run in self.shared else self.caches / f"{run}.h5"

    def results(self, run: str) -> Path:
        return self.shared[run][1] if run in self.shared else self.out / f"results_{run}.csv"

    @property
    def steps(self) -> Path:
        return self.caches / ".steps"

    @property
    def report(self) -> Path:
        return self.out / "report.html"


def _sidecar(csv: Path) -> Path:
    return csv.with_suffix(".predictions.npz")


@dataclass(frozen=True)
class StepPlan:
    """What one step runs and produces."""

    commands: list[Command]
    outputs: list[Path]
    capture: Path | None = None  # the commands' printed output is kept here (and shown)
    fresh: tuple[Path, ...] = ()  # folders the commands write from scratch: an unfinished one is removed first


@dataclass(frozen=True)
class Step:
    """One stage of the run: ``plan`` returns its commands and files, or None when turned off."""

    name: str
    plan: Callable[[RunConfig, RunPaths], StepPlan | None]
    resumable: bool = False  # an interrupted run continues (extraction) instead of starting over
