"""``probekit run``: the whole DDAE question for one model as an ordered list of steps.

Each step is a list of ordinary ``probekit`` commands (the ones a user could type by hand, printed
as they run) and the files they produce. The runner executes the steps in order and records a
stamp per finished step under ``CACHES/.steps/``; a stamp holds a fingerprint of the step's
commands chained with every earlier step's, so a re-run skips exactly the steps whose commands and
inputs are unchanged and redoes the rest. An extraction stopped part-way is resumed, not restarted
(the cache format's own resume); any other interrupted step is redone from its start, which gives
the same files because every command is deterministic for a given seed.

To add a step, append a :class:`Step` to :data:`STEPS` (its ``plan`` returns the commands, or
``None`` when the configuration turns it off).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import re
import shlex
import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from probekit.core import interrupt
from probekit.core.atomic import publish
from probekit.core.errors import ProbekitError

Command = list[str]  # argv of one probekit command, without the leading "probekit"
_PRINT = print  # the runner's own messages (kept apart from a captured command's stdout)


@dataclass
class RunConfig:
    """Everything ``probekit run`` needs; YAML keys and flags have these names (``-`` for ``_`` on flags)."""

    model: str = ""
    # several models in one run (see probekit.multirun): "SPEC", "NAME=SPEC" or a mapping of model, name
    # and any of timesteps, layers, random_init_timesteps; they share the data and the baselines
    models: list[str | dict[str, Any]] = field(default_factory=list)
    data: str = ""
    out: str = ""
    name: str | None = None  # label of the model in file names (default: from --model)
    cache_dir: str | None = None  # where the feature caches go (default OUT/caches)
    timesteps: list[int] | None = None  # the model's grid (default: its schedule's default grid)
    layers: str | None = None  # layer selection as in extract (default: every layer)
    train_limit: int | None = None
    test_limit: int | None = None
    seed: int = 0
    batch_size: int = 64
    precision: str = "auto"
    device: str = "auto"
    probes: list[str] = field(default_factory=lambda: ["linear", "knn"])
    k: list[int] = field(default_factory=lambda: [20])
    C: list[float] = field(default_factory=lambda: [1.0])
    pixels: bool = True
    pixels_probes: list[str] = field(default_factory=lambda: ["linear", "logreg", "knn"])
    random_init: bool = True
    random_init_timesteps: list[int] = field(default_factory=lambda: [0])
    random_init_probes: list[str] = field(default_factory=lambda: ["linear", "knn"])
    baseline_k: list[int] = field(default_factory=lambda: [20])
    similarity: bool = True
    fusion: bool = True
    tsne: bool = True
    dense: bool = False  # segmentation on mosaics and correspondence on warp pairs of `data` (grayscale)
    dense_timesteps: list[int] | None = None  # the model's grid points for dense features (default: timesteps)
    dense_layers: str | None = None  # layer selection for dense features (default: layers)
    dense_side: int = 8  # feature maps kept at dense_side x dense_side
    mosaics: list[int] = field(default_factory=lambda: [120, 40, 80])  # train, val, test mosaics
    warp_pairs: list[int] = field(default_factory=lambda: [30, 80])  # val, test warp pairs
    label_efficiency: bool = False  # linear probes on a few labels per class, from the same caches
    labels_per_class: str = "1,5,10,50,all"
    budget_draws: int = 3
    label_timesteps: list[int] | None = None  # the model's grid points probed for it (default: every one)
    images: list[str] = field(default_factory=list)  # extra PNGs embedded in the report
    x: str = "sigma"
    n_boot: int = 10_000
    max_memory: str = "auto"
    no_download: bool = False
    title: str | None = None
    quiet: bool = False  # no progress bars in the steps (not part of what a step computes)

    @classmethod
    def from_sources(cls, yaml_path: str | None, overrides: Mapping[str, Any]) -> RunConfig:
        """Defaults, then the YAML file, then every override that is not None (the flags given)."""
        values: dict[str, Any] = {}
        if yaml_path:
            values.update(_read_yaml(yaml_path))
        values.update({k: v for k, v in overrides.items() if v is not None})
        config = cls(**values)
        config.check()
        return config

    def check(self) -> None:
        if self.models and self.model:
            raise ProbekitError("give the models either as one --model / `model:` or as a list, not both")
        for key in ("data", "out") if self.models else ("model", "data", "out"):
            if not getattr(self, key):
                raise ProbekitError(f"probekit run needs --{key} (or `{key}:` in the --config file)")
        if not self.probes:
            raise ProbekitError("--probes is empty: give at least one probe, e.g. linear,knn")
        for key in ("train_limit", "test_limit"):
            value = getattr(self, key)
            if value is not None and value < 1:
                raise ProbekitError(f"--{key.replace('_', '-')} must be a positive number of images, got {value}")
        if self.x not in ("t", "sigma", "logsnr"):
            raise ProbekitError(f"x: {self.x!r} is not a noise axis: use t, sigma or logsnr")
        if len(self.mosaics) != 3 or min(self.mosaics) < 1:
            raise ProbekitError(f"mosaics: {self.mosaics} must be three positive counts: train, val, test")
        if len(self.warp_pairs) != 2 or min(self.warp_pairs) < 1:
            raise ProbekitError(f"warp_pairs: {self.warp_pairs} must be two positive counts: val, test")
        if self.dense_side < 1 or self.budget_draws < 1:
            raise ProbekitError("dense_side and budget_draws must be positive")
        if self.label_efficiency:  # refused before anything runs, not after the global steps
            from probekit.probes.label_budget import parse_budgets

            parse_budgets(self.labels_per_class)

    @property
    def label(self) -> str:
        if self.name:
            return self.name
        stem = Path(self.model.rstrip("/").split(":")[-1]).name or "model"
        return re.sub(r"[^A-Za-z0-9_.-]+", "-", Path(stem).stem if "." in stem else stem)

    @property
    def primary_probe(self) -> str:
        """The probe the comparisons and fusion rank on: linear when it runs, else the first probe."""
        return "linear" if "linear" in self.probes else self.probes[0]


def _read_yaml(path: str) -> dict[str, Any]:
    import yaml

    source = Path(path)
    if not source.is_file():
        raise ProbekitError(f"--config {path} does not exist: give a YAML file of run settings")
    try:
        values = yaml.safe_load(source.read_text()) or {}
    except yaml.YAMLError as err:
        raise ProbekitError(f"--config {path} is not valid YAML ({str(err).splitlines()[0]})") from None
    if not isinstance(values, dict):
        raise ProbekitError(f"--config {path} must be a mapping of setting: value")
    known = {f.name for f in fields(RunConfig)}
    values = {str(k).replace("-", "_"): v for k, v in values.items()}
    if isinstance(values.get("model"), list):  # `model: [a, b]` is the list of models
        values["models"] = values.pop("model")
    unknown = sorted(set(values) - known)
    if unknown:
        raise ProbekitError(
            f"--config {path}: unknown setting(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}"
        )
    for key in ("probes", "pixels_probes", "random_init_probes"):  # "linear,knn" or [linear, knn]
        if isinstance(values.get(key), str):
            values[key] = [p.strip() for p in values[key].split(",") if p.strip()]
    if isinstance(values.get("labels_per_class"), list):  # [1, 5, all] or "1,5,all"
        values["labels_per_class"] = _join(values["labels_per_class"])
    for key in (
        "timesteps",
        "random_init_timesteps",
        "dense_timesteps",
        "label_timesteps",
        "k",
        "baseline_k",
        "C",
        "mosaics",
        "warp_pairs",
    ):
        if isinstance(values.get(key), (int, float)):
            values[key] = [values[key]]
        elif isinstance(values.get(key), str):
            values[key] = [float(v) if key == "C" else int(v) for v in values[key].split(",") if v.strip()]
    return values


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


def _join(values: Sequence[object]) -> str:
    return ",".join(str(v) for v in values)


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


def _cache_complete(plan: StepPlan) -> bool:
    """The step's cache is finished (stopped after closing it but before its stamp was written)."""
    from probekit.features.cache import FeatureCache

    try:
        with FeatureCache(plan.outputs[0]) as cache:
            return cache.complete
    except (OSError, ProbekitError):
        return False


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


def _report(c: RunConfig, p: RunPaths) -> StepPlan:
    runs = [p.label] + ["pixels"] * c.pixels + ["random-init"] * c.random_init
    results = [str(p.results(r)) for r in runs]
    results += [str(_fusion_path(p))] * c.fusion + [str(_similarity_path(p))] * (c.similarity and c.pixels)
    if c.dense:
        results += [
            str(_dense_results(p, task, r)) for task in ("segment", "correspond") for r in _dense_runs(c, p, task)
        ]
    if c.label_efficiency:
        results += [str(_labels_path(p, r)) for r in _label_runs(c, p)]
    images = ([str(p.out / "tsne_best_linear.png")] if _tsne(c, p) else []) + list(c.images)
    caches = [str(p.cache(r)) for r in runs]
    if c.dense:
        caches += [
            str(p.cache(f"{data}_{r}"))
            for data, task in (("mosaic", "segment"), ("pairs", "correspond"))
            for r in _dense_runs(c, p, task)
        ]
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


STEPS: tuple[Step, ...] = (
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
    Step("extract mosaics model", _extract_dense("mosaic", "model"), resumable=True),
    Step("extract mosaics random-init", _extract_dense("mosaic", "random-init"), resumable=True),
    Step("extract mosaics pixels", _extract_dense("mosaic", "pixels"), resumable=True),
    Step("extract pairs model", _extract_dense("pairs", "model"), resumable=True),
    Step("extract pairs random-init", _extract_dense("pairs", "random-init"), resumable=True),
    Step("segmentation", _dense_probe("segment")),
    Step("correspondence", _dense_probe("correspond")),
    Step("dense comparisons", _dense_comparisons),
    Step("label efficiency", _label_efficiency),
    Step("report", _report),
)


_QUIET = {"extract", "probe", "fuse"}  # commands with a progress bar that --quiet turns off


def format_command(argv: Command) -> str:
    return "probekit " + " ".join(shlex.quote(a) for a in argv)


def _write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    publish(tmp, path)


class Runner:
    """Runs :data:`STEPS` for one configuration; ``execute`` runs one probekit command in-process."""

    def __init__(self, config: RunConfig, execute: Callable[[Command], None], steps: Sequence[Step] = STEPS) -> None:
        self.config = config
        self.execute = execute
        out = Path(config.out)
        self.paths = RunPaths(
            out=out, caches=Path(config.cache_dir) if config.cache_dir else out / "caches", label=config.label
        )
        self.steps = steps

    def _stamp(self, step: Step) -> Path:
        return self.paths.steps / (re.sub(r"[^a-z0-9]+", "-", step.name.lower()) + ".json")

    def run(self) -> Path:
        """Run every step not already done for this configuration; return the report's path."""
        self.paths.out.mkdir(parents=True, exist_ok=True)
        self.paths.steps.mkdir(parents=True, exist_ok=True)
        chain = hashlib.sha256(b"probekit run")
        planned = [(step, step.plan(self.config, self.paths)) for step in self.steps]
        active = [(step, plan) for step, plan in planned if plan is not None]
        for number, (step, plan) in enumerate(active, 1):
            for argv in plan.commands:
                chain.update(json.dumps(argv).encode())
            fingerprint = chain.hexdigest()
            stamp = self._stamp(step)
            record = json.loads(stamp.read_text()) if stamp.is_file() else {}
            header = f"== [{number}/{len(active)}] {step.name}"
            if (
                record.get("fingerprint") == fingerprint
                and record.get("state") == "done"
                and all(o.exists() for o in plan.outputs)
            ):
                _PRINT(f"{header}: done already, skipped")
                if plan.capture is not None:
                    _PRINT(plan.capture.read_text(), end="")
                continue
            # Resume only the same unfinished work; anything else is started over.
            resume = step.resumable and record.get("fingerprint") == fingerprint
            _PRINT(header + (": resuming" if resume and any(o.exists() for o in plan.outputs) else ""))
            _write_atomic(stamp, json.dumps({"fingerprint": fingerprint, "state": "started"}))
            captured, started = [], time.perf_counter()
            for folder in plan.fresh:  # written from scratch by the commands: a left-over is removed
                if folder.exists():
                    _PRINT(f"removing the unfinished {folder}")
                    shutil.rmtree(folder)
            if resume and _cache_complete(plan):
                plan = StepPlan([], plan.outputs)
            for argv in plan.commands:
                if step.resumable and not resume:
                    argv = argv + ["--overwrite"]
                if self.config.quiet and argv[0] in _QUIET:
                    argv = argv + ["--quiet"]
                interrupt.check()  # a stop request swallowed inside the previous command stops the run here
                _PRINT(format_command(argv), flush=True)
                if plan.capture is None:
                    self.execute(argv)
                else:
                    buffer = io.StringIO()
                    with contextlib.redirect_stdout(buffer):
                        self.execute(argv)
                    _PRINT(buffer.getvalue(), end="")
                    captured.append(f"$ {format_command(argv)}\n{buffer.getvalue()}")
            if plan.capture is not None:
                _write_atomic(plan.capture, "\n".join(captured))
            _PRINT(f"   ({step.name}: {time.perf_counter() - started:.0f} s)")
            missing = [str(o) for o in plan.outputs if not o.exists()]
            if missing:
                raise ProbekitError(f"step {step.name!r} finished without writing {', '.join(missing)}")
            _write_atomic(
                stamp,
                json.dumps(
                    {
                        "fingerprint": fingerprint,
                        "state": "done",
                        "commands": [format_command(a) for a in plan.commands],
                    }
                ),
            )
        return self.paths.report


def run_all(config: RunConfig, execute: Callable[[Command], None]) -> Path:
    """Run the whole question for ``config`` (see the module docstring); return the report's path."""
    return Runner(config, execute).run()


__all__ = ["RunConfig", "RunPaths", "Step", "StepPlan", "STEPS", "Runner", "run_all", "format_command"]
