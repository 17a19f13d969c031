"""The planners of the dense steps and of label efficiency. The dense steps follow the registered
dense tasks (:data:`probekit.core.specs.DENSE_TASKS`: mosaic segmentation, warp-pair
correspondence, and any task added by an entry point): the dense data they read is built once,
extracted once per run, and each task is scored in a step of its own.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from probekit.core.errors import ProbekitError
from probekit.core.specs import DENSE_TASKS
from probekit.pipeline.config import RunConfig, _join
from probekit.pipeline.plan import Command, RunPaths, Step, StepPlan


@dataclass(frozen=True)
class DenseData:
    """Dense data that a run builds once from ``data`` for the dense tasks that read it."""

    label: str  # its name in the step names ("extract mosaics model")
    output: str  # the file that its command writes last (the folder is complete when it exists)
    command: Callable[[RunConfig, Path], Command]  # the command that builds it in the folder given


def _mosaic_command(c: RunConfig, folder: Path) -> Command:
    train, val, test = c.mosaics
    argv = ["mosaic", "--data", c.data, "--out", str(folder), "--train", str(train), "--val", str(val)]
    return argv + ["--test", str(test), "--seed", str(c.seed)] + (["--no-download"] if c.no_download else [])


def _pairs_command(c: RunConfig, folder: Path) -> Command:
    val, test = c.warp_pairs
    argv = ["pairs", "--warp", c.data, "--out", str(folder), "--val", str(val), "--test", str(test)]
    return argv + ["--seed", str(c.seed)] + (["--no-download"] if c.no_download else [])


#: the dense data a dense task may read (its spec's ``data``), each in a folder of that name beside the caches
DENSE_DATA = {
    "mosaic": DenseData("mosaics", "classes.txt", _mosaic_command),
    "pairs": DenseData("pairs", "pairs.npz", _pairs_command),
}


def dense_data_used() -> list[str]:
    """The dense data the registered dense tasks read, in their order."""
    used = list(dict.fromkeys(spec.data for spec in DENSE_TASKS.values()))
    unknown = [name for name in used if name not in DENSE_DATA]
    if unknown:
        raise ProbekitError(
            f"a registered dense task reads dense data {', '.join(unknown)}: `probekit run` builds "
            f"{' or '.join(DENSE_DATA)}; name one of them in its spec's data"
        )
    return used


def _dense_folder(p: RunPaths, data: str) -> Path:
    return p.caches / data


def _dense_data(c: RunConfig, p: RunPaths) -> StepPlan | None:
    if not c.dense:
        return None
    used = dense_data_used()
    folders = [_dense_folder(p, data) for data in used]
    return StepPlan(
        [DENSE_DATA[data].command(c, folder) for data, folder in zip(used, folders)],
        [folder / DENSE_DATA[data].output for data, folder in zip(used, folders)],
        fresh=tuple(folders),
    )


def _extract_dense(data: str, run: str) -> Callable[[RunConfig, RunPaths], StepPlan | None]:
    """Spatial features of the dense data ``data`` for the model, random-init twin or pixels."""

    def plan(c: RunConfig, p: RunPaths) -> StepPlan | None:
        if not c.dense or (run == "random-init" and not c.random_init) or (run == "pixels" and not c.pixels):
            return None
        folder = _dense_folder(p, data)
        name = p.label if run == "model" else run
        out = p.cache(f"{data}_{name}")
        if run == "pixels":  # every pixel of the 32 x 32 mosaics (the gray value: segmentation only)
            argv = ["extract", "--model", "pixels", "--data", str(folder), "--pooling", "spatial32"]
        else:
            timesteps = c.random_init_timesteps if run == "random-init" else (c.dense_timesteps or c.timesteps)
            argv = [
                "extract",
                "--model",
                c.model,
                *(["--random-init"] if run == "random-init" else []),
                "--data",
                str(folder),
                "--pooling",
                f"spatial{c.dense_side}",
                "--precision",
                c.precision,
                "--device",
                c.device,
            ]
            argv += ["--timesteps", _join(timesteps)] if timesteps else []
            layers = c.dense_layers or c.layers
            argv += ["--layers", layers] if layers else []
        argv += ["--seed", str(c.seed), "--batch-size", str(c.batch_size), "--out", str(out)]
        return StepPlan([argv], [out])

    return plan


def dense_extract_steps() -> list[Step]:
    """One extraction per dense data and run: the model, its twin, and pixels where a task scores them."""
    steps = []
    for data in dense_data_used():
        runs = ["model", "random-init"] + ["pixels"] * any(
            spec.pixels for spec in DENSE_TASKS.values() if spec.data == data
        )
        steps += [
            Step(f"extract {DENSE_DATA[data].label} {run}", _extract_dense(data, run), resumable=True) for run in runs
        ]
    return steps


def _dense_results(p: RunPaths, task: str, run: str) -> Path:
    return p.out / f"{task}_{run}.csv"


def _dense_runs(c: RunConfig, p: RunPaths, task: str) -> list[str]:
    """The runs scored on a dense task: the model, its random-init twin, and pixels where the task scores them."""
    return [p.label] + ["random-init"] * c.random_init + ["pixels"] * (c.pixels and DENSE_TASKS[task].pixels)


def _dense_probe(task: str) -> Callable[[RunConfig, RunPaths], StepPlan | None]:
    """The dense task's command on each run's spatial cache, then the model's heatmaps over t x layer."""

    def plan(c: RunConfig, p: RunPaths) -> StepPlan | None:
        if not c.dense:
            return None
        spec = DENSE_TASKS[task]
        folder = _dense_folder(p, spec.data)
        commands: list[Command] = []
        for run in _dense_runs(c, p, task):
            argv = [
                task,
                "--cache",
                str(p.cache(f"{spec.data}_{run}")),
                "--data",
                str(folder),
                "--out",
                str(_dense_results(p, task, run)),
            ]
            commands.append(argv + (["--seed", str(c.seed)] if spec.seeded else []))
        commands.append(
            [
                "plot",
                "--results",
                str(_dense_results(p, task, p.label)),
                "--metric",
                spec.metric,
                "--out",
                str(p.out / task),
            ]
        )
        results = [_dense_results(p, task, run) for run in _dense_runs(c, p, task)]
        return StepPlan(commands, results + [r.with_suffix(".dense.npz") for r in results])

    return plan


def dense_task_steps() -> list[Step]:
    """One step per registered dense task, named by its title."""
    return [Step(spec.title, _dense_probe(name)) for name, spec in DENSE_TASKS.items()]


def _dense_comparisons(c: RunConfig, p: RunPaths) -> StepPlan | None:
    """The model's val-chosen dense cell against each baseline's, paired on the same test units."""
    if not c.dense or not (c.random_init or c.pixels):
        return None
    commands = [
        [
            "dense-compare",
            "--results",
            str(_dense_results(p, task, p.label)),
            str(_dense_results(p, task, run)),
            "--n-boot",
            str(c.n_boot),
            "--seed",
            str(c.seed),
        ]
        for task in DENSE_TASKS
        for run in _dense_runs(c, p, task)[1:]
    ]
    out = p.out / "dense_comparisons.txt"
    return StepPlan(commands, [out], capture=out)


def _labels_path(p: RunPaths, run: str) -> Path:
    return p.out / f"labels_{run}.csv"


def _label_runs(c: RunConfig, p: RunPaths) -> list[str]:
    return [p.label] + ["random-init"] * c.random_init + ["pixels"] * c.pixels


def _label_efficiency(c: RunConfig, p: RunPaths) -> StepPlan | None:
    """Linear probes on a few labels per class from the main caches, then the curve (model, pixels, random init)."""
    if not c.label_efficiency:
        return None
    commands: list[Command] = []
    for run in _label_runs(c, p):
        argv = [
            "probe",
            "--cache",
            str(p.cache(run)),
            "--probes",
            "linear",
            "--C",
            _join(c.C),
            "--labels-per-class",
            c.labels_per_class,
            "--budget-draws",
            str(c.budget_draws),
            "--seed",
            str(c.seed),
            "--device",
            c.device,
            "--max-memory",
            c.max_memory,
            "--out",
            str(_labels_path(p, run)),
        ]
        commands.append(
            argv + (["--timesteps", _join(c.label_timesteps)] if run == p.label and c.label_timesteps else [])
        )
    out = p.out / "labels"
    commands.append(["plot", "--results", *[str(_labels_path(p, r)) for r in _label_runs(c, p)], "--out", str(out)])
    return StepPlan(commands, [_labels_path(p, r) for r in _label_runs(c, p)] + [out / "label_efficiency.png"])
