"""The settings of ``probekit run``: :class:`RunConfig`, whose fields generate the command's flags,
its YAML loading and the settings table of the CLI reference (:mod:`probekit.core.settings`).
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from probekit.core.errors import ProbekitError
from probekit.core.settings import load_yaml_mapping, setting, values_from_args, values_from_mapping


@dataclass
class RunConfig:
    """Everything ``probekit run`` needs; YAML keys and flags have these names (``-`` for ``_`` on flags)."""

    model: str = setting(
        "",
        help="the model, as for extract; repeat the flag, optionally as NAME=SPEC, to compare several models "
        "on the same data and baselines (a leaderboard and one report)",
        default_text="required here or in --config",
        repeatable=True,
    )
    # several models in one run (probekit.multirun): "SPEC", "NAME=SPEC" or a mapping of model, name and
    # any of timesteps, layers, random_init_timesteps; they share the data and the baselines
    models: list[str | dict[str, Any]] = setting(
        help="several models compared in one run: each SPEC, NAME=SPEC or a mapping of model, name and any of "
        "timesteps, layers, random_init_timesteps (`model: [a, b]` is read as this list)",
        cli=False,
        yaml_as_is="list of models",
        default_factory=list,
    )
    data: str = setting("", help="the dataset, as for extract", default_text="required here or in --config")
    out: str = setting(
        "",
        help="folder of the results tables, figures, comparisons.txt and report.html",
        default_text="required here or in --config",
    )
    name: str | None = setting(None, help="the model's label in file names", default_text="from --model")
    cache_dir: str | None = setting(
        None, help="folder of the feature caches and step records", default_text="OUT/caches"
    )
    timesteps: list[int] | None = setting(None, help="the model's grid", default_text="its schedule's default grid")
    layers: str | None = setting(None, help="layer selection as in extract", default_text="every layer")
    train_limit: int | None = setting(None, help="class-stratified subset of the train split", default_text="all")
    test_limit: int | None = setting(None, help="class-stratified subset of the test split", default_text="all")
    seed: int = setting(0, help="seed of the noise, subsets, validation split and probes")
    batch_size: int = setting(64, help="extraction batch size")
    precision: Literal["auto", "fp32", "bf16", "fp16"] = setting("auto", help="extraction compute precision")
    device: Literal["auto", "cpu", "cuda"] = setting("auto", help="auto: cuda when a GPU is visible, else cpu")
    probes: list[str] = setting(help="probes of the model", default_factory=lambda: ["linear", "knn"])
    k: list[int] = setting(help="kNN neighbours of the model's probe, chosen on val", default_factory=lambda: [20])
    C: list[float] = setting(
        help="inverse L2 strength(s) of linear / logreg, chosen on val", default_factory=lambda: [1.0]
    )
    pixels: bool = setting(True, help="the raw-pixel baseline")
    pixels_probes: list[str] = setting(
        help="probes of the pixel baseline", default_factory=lambda: ["linear", "logreg", "knn"]
    )
    random_init: bool = setting(True, help="the random-init twin (same architecture, fresh weights)")
    random_init_timesteps: list[int] = setting(help="grid of the random-init twin", default_factory=lambda: [0])
    random_init_probes: list[str] = setting(
        help="probes of the random-init twin", default_factory=lambda: ["linear", "knn"]
    )
    baseline_k: list[int] = setting(help="kNN neighbours of the baselines' probes", default_factory=lambda: [20])
    similarity: bool = setting(True, help="CKA / CKNNA / mutual k-NN to the pixels")
    fusion: bool = setting(True, help="the fusion probes")
    tsne: bool = setting(True, help="the t-SNE of the best cell")
    dense: bool = setting(
        False,
        help="segmentation on mosaics and correspondence on warp pairs of --data (grayscale), over "
        "dense_timesteps x dense_layers (sizes: see the guide's run page)",
    )
    dense_timesteps: list[int] | None = setting(
        None, help="the model's grid points for dense features", default_text="timesteps"
    )
    dense_layers: str | None = setting(None, help="layer selection for dense features", default_text="layers")
    dense_side: int = setting(8, help="feature maps kept at dense_side x dense_side")
    mosaics: list[int] = setting(help="train, val, test mosaics", default_factory=lambda: [120, 40, 80])
    warp_pairs: list[int] = setting(help="val, test warp pairs", default_factory=lambda: [30, 80])
    label_efficiency: bool = setting(
        False, help="linear probes on labels_per_class labelled images per class, from the same caches"
    )
    labels_per_class: str = setting("1,5,10,50,all", help="label budgets of the label-efficiency curve")
    budget_draws: int = setting(3, help="draws of the labelled images per budget")
    label_timesteps: list[int] | None = setting(
        None, help="the model's grid points probed for label efficiency", default_text="every one"
    )
    images: list[str] = setting(
        help="extra PNGs to embed in the report (e.g. the model's samples)", nargs="*", default_factory=list
    )
    x: Literal["t", "sigma", "logsnr"] = setting("sigma", help="noise axis of the report's curves")
    n_boot: int = setting(10_000, help="bootstrap resamples of the paired comparisons")
    max_memory: str = setting("auto", help="probing memory budget, as for probe")
    no_download: bool = setting(False, help="never download missing datasets", negate="")
    title: str | None = setting(None, help="title of the report", default_text="model and data")
    # not part of what a step computes
    quiet: bool = setting(False, help="no progress bars in the steps", negate="")

    @classmethod
    def from_sources(cls, yaml_path: str | None, overrides: Mapping[str, Any]) -> RunConfig:
        """Defaults, then the YAML file, then every override that is not None (the flags given)."""
        values: dict[str, Any] = {}
        if yaml_path:
            raw = load_yaml_mapping(yaml_path)
            if isinstance(raw.get("model"), list):  # `model: [a, b]` is the list of models
                raw["models"] = raw.pop("model")
            values.update(values_from_mapping(raw, cls, f"--config {yaml_path}"))
        values.update({k: v for k, v in overrides.items() if v is not None})
        config = cls(**values)
        config.check()
        return config

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> RunConfig:
        """The configuration that ``probekit run``'s parsed flags (and their ``--config`` file) give."""
        settings = values_from_args(args, cls)
        given = settings.pop("model", None)
        if given:  # --model once or repeated: it replaces the config file's model or list of models
            several = len(given) > 1
            settings.update(model="" if several else given[0], models=given if several else [])
        return cls.from_sources(getattr(args, "config", None), settings)

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


def _join(values: Sequence[object]) -> str:
    return ",".join(str(v) for v in values)
