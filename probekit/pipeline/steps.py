"""The planners of the global steps (extract, probe, plots, t-SNE, similarity, fusion, comparisons,
report) and :func:`all_steps`, every step in the order the runner takes them.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from probekit.core.specs import DENSE_TASKS
from probekit.pipeline.config import RunConfig, _join
from probekit.pipeline.dense_steps import (
    _dense_comparisons,
    _dense_data,
    _dense_results,
    _dense_runs,
    _label_efficiency,
    _label_runs,
    _labels_path,
    dense_extract_steps,
    dense_task_steps,
)
from probekit.pipeline.plan import Command, RunPaths, Step, StepPlan, _sidecar


def _data_args(c: RunConfig) -> Command:
    args = ["--data", c.data, "--seed", str(c.seed), "--batch-size", str(c.batch_size)]
    for flag, value in (("--train-limit", c.train_limit), ("--test-limit", c.test_limit)):
        if value is not None:
            args += [flag, str(value)]
    return args + (["--no-download"] if c.no_download else [])


def _extract_model(c: RunConfig, p: RunPaths) -> StepPlan:
    argv = ["extract", "--model", c.model, *_data_args(c), "--precision", c.precision, "--device", c.device]
    argv += ["--timesteps", _join(c.timesteps)] if c.timesteps else []
    argv += ["--layers", c.layers] if c.layers else []
    return StepPlan([argv + ["--out", str(p.cache(p.label))]], [p.cache(p.label)])


def _extract_pixels(c: RunConfig, p: RunPaths) -> StepPlan | None:
    if not c.pixels or "pixels" in p.borrowed:
        return None
    return StepPlan(
        [["extract", "--model", "pixels", *_data_args(c), "--out", str(p.cache("pixels"))]], [p.cache("pixels")]
    )


def _extract_random_init(c: RunConfig, p: RunPaths) -> StepPlan | None:
    if not c.random_init or "random-init" in p.borrowed:
        return None
    argv = [
        "extract",
        "--model",
        c.model,
        "--random-init",
        *_data_args(c),
        "--timesteps",
        _join(c.random_init_timesteps),
        "--precision",
        c.precision,
        "--device",
        c.device,
    ]
    argv += ["--layers", c.layers] if c.layers else []
    return StepPlan([argv + ["--out", str(p.cache("random-init"))]], [p.cache("random-init")])


def _probe(
    run: str,
    probes: Callable[[RunConfig], list[str]],
    k: Callable[[RunConfig], list[int]],
    enabled: Callable[[RunConfig], bool],
) -> Callable[[RunConfig, RunPaths], StepPlan | None]:
    def plan(c: RunConfig, p: RunPaths) -> StepPlan | None:
        if not enabled(c) or run in p.borrowed:
            return None
        name = p.label if run == "model" else run
        out = p.results(name)
        argv = [
            "probe",
            "--cache",
            str(p.cache(name)),
            "--probes",
            _join(probes(c)),
            "--k",
            _join(k(c)),
            "--C",
            _join(c.C),
            "--seed",
            str(c.seed),
            "--device",
            c.device,
            "--max-memory",
            c.max_memory,
            "--out",
            str(out),
        ]
        return StepPlan([argv], [out, _sidecar(out)])

    return plan


def _plot(c: RunConfig, p: RunPaths) -> StepPlan:
    commands = [["plot", "--results", str(p.results(p.label)), "--out", str(p.out)]]
    if c.random_init:  # the control's own heatmaps, beside the model's
        commands.append(["plot", "--results", str(p.results("random-init")), "--out", str(p.out / "random-init")])
    return StepPlan(commands, [p.out / f"heatmap_{c.probes[0]}.png"])


def _tsne(c: RunConfig, p: RunPaths) -> StepPlan | None:
    if not c.tsne or "linear" not in c.probes:
        return None
    out = p.out / "tsne_best_linear.png"
    return StepPlan(
        [
            [
                "tsne",
                "--cache",
                str(p.cache(p.label)),
                "--results",
                str(p.results(p.label)),
                "--seed",
                str(c.seed),
                "--out",
                str(out),
            ]
        ],
        [out],
    )


def _similarity_path(p: RunPaths) -> Path:
    return p.out / f"similarity_{p.label}_pixels.csv"


def _similarity(c: RunConfig, p: RunPaths) -> StepPlan | None:
    if not (c.similarity and c.pixels):
        return None
    out = _similarity_path(p)
    return StepPlan(
        [
            [
                "similarity",
                "--cache",
                str(p.cache(p.label)),
                "--reference",
                str(p.cache("pixels")),
                "--seed",
                str(c.seed),
                "--out",
                str(out),
                "--figures",
                str(p.out),
            ]
        ],
        [out],
    )


def _fusion_path(p: RunPaths) -> Path:
    return p.out / f"fusion_{p.label}.csv"


def _fusion(c: RunConfig, p: RunPaths) -> StepPlan | None:
    if not c.fusion:
        return None
    out = _fusion_path(p)
    return StepPlan(
        [
            [
                "fuse",
                "--cache",
                str(p.cache(p.label)),
                "--results",
                str(p.results(p.label)),
                "--probe",
                c.primary_probe,
                "--seed",
                str(c.seed),
                "--device",
                c.device,
                "--out",
                str(out),
                "--figures",
                str(p.out),
            ]
        ],
        [out, _sidecar(out)],
    )


def _comparisons(c: RunConfig, p: RunPaths) -> StepPlan | None:
    """The model's val-chosen cell against each baseline's (same probe; and pixels' logreg), then fusion."""
    a, probe = str(p.results(p.label)), c.primary_probe
    commands: list[Command] = []
    baselines = [("pixels", c.pixels_probes)] * c.pixels + [("random-init", c.random_init_probes)] * c.random_init
    for run, probes in baselines:
        b = str(p.results(run))
        if probe in probes:
            commands.append(
                ["compare", "--results", a, b, "--probe", probe, "--n-boot", str(c.n_boot), "--seed", str(c.seed)]
            )
        if run == "pixels" and "logreg" in probes and probe != "logreg":
            commands.append(
                [
                    "compare",
                    "--results",
                    a,
                    b,
                    "--probe",
                    probe,
                    "--probe-b",
                    "logreg",
                    "--n-boot",
                    str(c.n_boot),
                    "--seed",
                    str(c.seed),
                ]
            )
    if c.fusion:
        for fused in ("fusion-concat", "fusion-mixture"):
            commands.append(
                [
                    "compare",
                    "--results",
                    str(_fusion_path(p)),
                    a,
                    "--probe",
                    fused,
                    "--probe-b",
                    probe,
                    "--n-boot",
                    str(c.n_boot),
                    "--seed",
                    str(c.seed),
                ]
            )
    if not commands:
        return None
    out = p.out / "comparisons.txt"
    return StepPlan(commands, [out], capture=out)


def _report(c: RunConfig, p: RunPaths) -> StepPlan:
    runs = [p.label] + ["pixels"] * c.pixels + ["random-init"] * c.random_init
    results = [str(p.results(r)) for r in runs]
    results += [str(_fusion_path(p))] * c.fusion + [str(_similarity_path(p))] * (c.similarity and c.pixels)
    if c.dense:
        results += [str(_dense_results(p, task, r)) for task in DENSE_TASKS for r in _dense_runs(c, p, task)]
    if c.label_efficiency:
        results += [str(_labels_path(p, r)) for r in _label_runs(c, p)]
    images = ([str(p.out / "tsne_best_linear.png")] if _tsne(c, p) else []) + list(c.images)
    caches = [str(p.cache(r)) for r in runs]
    if c.dense:
        # each dense data's caches once, whichever tasks read them
        caches += dict.fromkeys(
            str(p.cache(f"{spec.data}_{r}")) for task, spec in DENSE_TASKS.items() for r in _dense_runs(c, p, task)
        )
    argv = ["report", "--results", *results, "--cache", *caches]
    argv += ["--images", *images] if images else []
    argv += [
        "--x",
        c.x,
        "--n-boot",
        str(c.n_boot),
        "--title",
        c.title or f"probekit run: {p.label} on {c.data}",
        "--out",
        str(p.report),
    ]
    return StepPlan([argv], [p.report])


def all_steps() -> tuple[Step, ...]:
    """Every step in the order the runner takes them; the dense ones follow the registered dense tasks."""
    return (
        Step("extract pixels", _extract_pixels, resumable=True),
        Step("extract random-init", _extract_random_init, resumable=True),
        Step("extract model", _extract_model, resumable=True),
        Step("probe pixels", _probe("pixels", lambda c: c.pixels_probes, lambda c: c.baseline_k, lambda c: c.pixels)),
        Step(
            "probe random-init",
            _probe("random-init", lambda c: c.random_init_probes, lambda c: c.baseline_k, lambda c: c.random_init),
        ),
        Step("probe model", _probe("model", lambda c: c.probes, lambda c: c.k, lambda c: True)),
        Step("plots", _plot),
        Step("t-SNE", _tsne),
        Step("similarity to pixels", _similarity),
        Step("fusion", _fusion),
        Step("paired comparisons", _comparisons),
        # Dense probing and label efficiency come after the global question, so that turning them on
        # leaves the steps above (and their records) as they were.
        Step("dense data", _dense_data),
        *dense_extract_steps(),
        *dense_task_steps(),
        Step("dense comparisons", _dense_comparisons),
        Step("label efficiency", _label_efficiency),
        Step("report", _report),
    )


#: the steps with the dense tasks registered when probekit.pipeline was imported (the runner reads
#: :func:`all_steps` anew)
STEPS: tuple[Step, ...] = all_steps()
