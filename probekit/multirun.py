"""``probekit run`` with several models: each its own run, shared baselines, then one comparison.

Each model runs the ordinary steps of :mod:`probekit.pipeline` into ``OUT/NAME`` (its tables,
figures and report; its caches and step records in ``CACHES/NAME``). The baselines are computed
once and read by every model: the raw pixels (``CACHES/pixels.h5``, ``OUT/results_pixels.csv``)
by the first model, and a random-init twin per distinct architecture
(``CACHES/random-init-NAME.h5``, ``OUT/results_random-init-NAME.csv``, named after the first
model that has it). Two models share a twin when their randomly initialised networks have the
same fingerprint (weights drawn under the seed, configs, schedule) and the twin is read on the
same grid and layers, so the shared twin is exactly the one each would have computed. Dense
probes, when turned on, stay per model.

Then two steps in ``OUT``: ``probekit leaderboard`` over every model and baseline
(``leaderboard.csv`` / ``leaderboard.txt``) and ``probekit report`` with the leaderboard, which
opens on the comparison of the models (``OUT/report.html``).

Per model, a list entry may set ``model``, ``name``, ``timesteps``, ``layers`` and
``random_init_timesteps`` (families index noise differently: pick grid points of similar log-SNR);
every other setting is shared.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from probekit.core.errors import ProbekitError
from probekit.pipeline import Command, RunConfig, Runner, RunPaths, Step, StepPlan

#: the settings a model of the list may set for itself
PER_MODEL = ("model", "name", "timesteps", "layers", "random_init_timesteps")
_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")
_RESERVED = ("pixels", "random-init", "leaderboard", "report", "caches")


@dataclass(frozen=True)
class ModelRun:
    """One model of the run: its own configuration and the baselines it shares."""

    config: RunConfig
    twin: str  # run name of its random-init twin ("random-init-NAME")
    borrowed: frozenset[str]  # baselines an earlier model computes


def _entry(item: str | Mapping[str, Any], position: int) -> dict[str, Any]:
    if isinstance(item, str):
        head, _, tail = item.partition("=")
        if tail and _NAME.match(head):  # NAME=SPEC (a spec's own "=" follows a ":" or "?")
            return {"name": head, "model": tail}
        return {"model": item}
    if not isinstance(item, Mapping):
        raise ProbekitError(f"models[{position}] is {item!r}: give SPEC, NAME=SPEC or a mapping with `model:`")
    values = {str(k).replace("-", "_"): v for k, v in item.items()}
    unknown = sorted(set(values) - set(PER_MODEL))
    if unknown:
        raise ProbekitError(
            f"models[{position}]: unknown setting(s) {', '.join(unknown)} for one model; a model may set "
            f"{', '.join(PER_MODEL)} (the rest is shared)"
        )
    if not values.get("model"):
        raise ProbekitError(f"models[{position}] has no `model:`: give the checkpoint spec")
    for key in ("timesteps", "random_init_timesteps"):
        if isinstance(values.get(key), int):
            values[key] = [values[key]]
        elif isinstance(values.get(key), str):
            values[key] = [int(v) for v in values[key].split(",") if v.strip()]
    return values


def model_configs(config: RunConfig) -> list[RunConfig]:
    """One configuration per model of ``config.models``, each writing to ``OUT/NAME`` (names checked unique)."""
    caches = Path(config.cache_dir) if config.cache_dir else Path(config.out) / "caches"
    configs = []
    for i, item in enumerate(config.models):
        values = _entry(item, i)
        single = replace(config, models=[], **values)
        name = single.label
        if not _NAME.match(name) or name in _RESERVED or name.startswith("random-init"):
            raise ProbekitError(
                f"model name {name!r} cannot name a folder of the run: use letters, digits, '.', '_' and '-', and "
                f"none of {', '.join(_RESERVED)}"
            )
        configs.append(
            replace(single, name=name, out=str(Path(config.out) / name), cache_dir=str(caches / name), title=None)
        )
    names = [c.label for c in configs]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise ProbekitError(f"model name(s) {', '.join(twice)} given twice: name each model (NAME=SPEC or `name:`)")
    if len(configs) < 2:
        raise ProbekitError("a list of models needs two or more; for one model give --model / `model:` alone")
    return configs


def twin_key(config: RunConfig) -> str:
    """What makes two random-init twins the same: the twin network's fingerprint, its grid and layers."""
    from probekit.models import load_backbone  # builds the network only (no weights are read for a twin)

    fingerprint = load_backbone(config.model, random_init=True, seed=config.seed).fingerprint()
    grid = f"{config.random_init_timesteps}|{config.layers}"
    return hashlib.sha256(f"{fingerprint}|{grid}".encode()).hexdigest()


def plan_models(config: RunConfig, *, key: Callable[[RunConfig], str] = twin_key) -> list[ModelRun]:
    """Each model's run and which baselines it computes (the first of each) or reads."""
    runs: list[ModelRun] = []
    owners: dict[str, str] = {}
    for i, single in enumerate(model_configs(config)):
        arch = key(single) if single.random_init else single.label
        twin = owners.setdefault(arch, f"random-init-{single.label}")
        borrowed = {"pixels"} if i > 0 else set()
        if twin != f"random-init-{single.label}":
            borrowed.add("random-init")
        runs.append(ModelRun(config=single, twin=twin, borrowed=frozenset(borrowed)))
    return runs


def _shared(config: RunConfig, twin: str) -> dict[str, tuple[Path, Path]]:
    out = Path(config.out)
    caches = Path(config.cache_dir) if config.cache_dir else out / "caches"
    return {
        "pixels": (caches / "pixels.h5", out / "results_pixels.csv"),
        "random-init": (caches / f"{twin}.h5", out / f"results_{twin}.csv"),
    }


def _entries(config: RunConfig, runs: list[ModelRun]) -> list[tuple[str, Path]]:
    """(name, results CSV) of every model and then every baseline, each once."""
    entries = [(r.config.label, Path(r.config.out) / f"results_{r.config.label}.csv") for r in runs]
    shared = [_shared(config, r.twin) for r in runs]
    if config.pixels:
        entries.append(("pixels", shared[0]["pixels"][1]))
    if config.random_init:
        for run, paths in zip(runs, shared):
            if (run.twin, paths["random-init"][1]) not in entries:
                entries.append((run.twin, paths["random-init"][1]))
    return entries


def comparison_steps(config: RunConfig, runs: list[ModelRun]) -> tuple[Step, ...]:
    """The leaderboard and the report over every model and baseline, in ``OUT``."""
    entries = _entries(config, runs)
    out = Path(config.out)
    board = out / "leaderboard.csv"

    def leaderboard(c: RunConfig, p: RunPaths) -> StepPlan:
        argv: Command = ["leaderboard", "--results", *[str(path) for _, path in entries]]
        argv += ["--names", ",".join(name for name, _ in entries), "--n-boot", str(c.n_boot), "--seed", str(c.seed)]
        return StepPlan([argv + ["--out", str(board)]], [board], capture=out / "leaderboard.txt")

    def report(c: RunConfig, p: RunPaths) -> StepPlan:
        names = ", ".join(r.config.label for r in runs)
        argv: Command = ["report", "--results", *[str(path) for _, path in entries], "--leaderboard", str(board)]
        argv += ["--images", *c.images] if c.images else []
        argv += ["--x", "logsnr", "--n-boot", str(c.n_boot)]
        argv += ["--title", c.title or f"probekit run: {names} on {c.data}", "--out", str(out / "report.html")]
        return StepPlan([argv], [out / "report.html"])

    return (Step("leaderboard", leaderboard), Step("models report", report))


def run_models(config: RunConfig, execute: Callable[[Command], None]) -> Path:
    """Run every model of ``config.models`` (see the module docstring); return the comparison report's path."""
    runs = plan_models(config)
    for number, run in enumerate(runs, 1):
        print(f"=== model {number}/{len(runs)}: {run.config.label} ({run.config.model})", flush=True)
        runner = Runner(run.config, execute)
        runner.paths = replace(runner.paths, shared=_shared(config, run.twin), borrowed=run.borrowed)
        runner.run()
    print(f"=== comparison of {len(runs)} models", flush=True)
    final = Runner(replace(config, models=[], name="models"), execute, steps=comparison_steps(config, runs))
    return final.run()


__all__ = ["PER_MODEL", "ModelRun", "comparison_steps", "model_configs", "plan_models", "run_models", "twin_key"]
