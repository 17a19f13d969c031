"""The settings of ``probekit run``: :class:`RunConfig` and its YAML file."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from probekit.core.errors import ProbekitError


@dataclass
class RunConfig:
    """Everything ``probekit run`` needs; YAML keys and flags have these names (``-`` for ``_`` on flags)."""

    model: str = ""
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
        for key in ("model", "data", "out"):
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


def _join(values: Sequence[object]) -> str:
    return ",".join(str(v) for v in values)
