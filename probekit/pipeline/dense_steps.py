"""The planners of the dense steps (mosaic segmentation, warp-pair correspondence) and of label efficiency."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from probekit.pipeline.config import RunConfig, _join
from probekit.pipeline.plan import Command, RunPaths, StepPlan


def _dense_paths(p: RunPaths) -> tuple[Path, Path]:
    """The mosaic segmentation folder and the warp-pair folder (beside the caches)."""
    return p.caches / "mosaic", p.caches / "pairs"


def _dense_data(c: RunConfig, p: RunPaths) -> StepPlan | None:
    if not c.dense:
        return None
    mosaic, pairs = _dense_paths(p)
    download = ["--no-download"] if c.no_download else []
    train, val, test = c.mosaics
    return StepPlan(
        [
            [
                "mosaic",
                "--data",
                c.data,
                "--out",
                str(mosaic),
                "--train",
                str(train),
                "--val",
                str(val),
                "--test",
                str(test),
                "--seed",
                str(c.seed),
                *download,
            ],
            [
                "pairs",
                "--warp",
                c.data,
                "--out",
                str(pairs),
                "--val",
                str(c.warp_pairs[0]),
                "--test",
                str(c.warp_pairs[1]),
                "--seed",
                str(c.seed),
                *download,
            ],
        ],
        [mosaic / "classes.txt", pairs / "pairs.npz"],
        fresh=(mosaic, pairs),
    )


def _extract_dense(task: str, run: str) -> Callable[[RunConfig, RunPaths], StepPlan | None]:
    """Spatial features of the mosaics or the pairs (``task``) for the model, random-init twin or pixels."""

    def plan(c: RunConfig, p: RunPaths) -> StepPlan | None:
        if not c.dense or (run == "random-init" and not c.random_init) or (run == "pixels" and not c.pixels):
            return None
        data = _dense_paths(p)[task == "pairs"]
        name = p.label if run == "model" else run
        out = p.cache(f"{task}_{name}")
        if run == "pixels":  # every pixel of the 32 x 32 mosaics (the gray value: segmentation only)
            argv = ["extract", "--model", "pixels", "--data", str(data), "--pooling", "spatial32"]
        else:
            timesteps = c.random_init_timesteps if run == "random-init" else (c.dense_timesteps or c.timesteps)
            argv = [
                "extract",
                "--model",
                c.model,
                *(["--random-init"] if run == "random-init" else []),
                "--data",
                str(data),
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


def _dense_results(p: RunPaths, task: str, run: str) -> Path:
    return p.out / f"{task}_{run}.csv"


def _dense_runs(c: RunConfig, p: RunPaths, task: str) -> list[str]:
    """The runs scored on a dense task: the model, its random-init twin, and pixels for segmentation."""
    return [p.label] + ["random-init"] * c.random_init + ["pixels"] * (c.pixels and task == "segment")


def _dense_probe(task: str) -> Callable[[RunConfig, RunPaths], StepPlan | None]:
    """``segment`` / ``correspond`` on each run's spatial cache, then the model's heatmaps over t x layer."""

    def plan(c: RunConfig, p: RunPaths) -> StepPlan | None:
        if not c.dense:
            return None
        data = _dense_paths(p)[task == "correspond"]
        cache = "mosaic" if task == "segment" else "pairs"
        commands: list[Command] = []
        for run in _dense_runs(c, p, task):
            argv = [
                task,
                "--cache",
                str(p.cache(f"{cache}_{run}")),
                "--data",
                str(data),
                "--out",
                str(_dense_results(p, task, run)),
            ]
            commands.append(argv + (["--seed", str(c.seed)] if task == "segment" else []))
        metric = "miou" if task == "segment" else "pck"
        commands.append(
            ["plot", "--results", str(_dense_results(p, task, p.label)), "--metric", metric, "--out", str(p.out / task)]
        )
        results = [_dense_results(p, task, run) for run in _dense_runs(c, p, task)]
        return StepPlan(commands, results + [r.with_suffix(".dense.npz") for r in results])

    return plan


def _dense_comparisons(c: RunConfig, p: RunPaths) -> StepPlan | None:
    """The model's val-chosen dense cell against each baseline's, paired on the same test mosaics / pairs."""
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
        for task in ("segment", "correspond")
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
