"""A probe and a dense task added from outside the package, through entry points, run through the
CLI and the pipeline like probekit's own.

Both live in this test module (as they would in another package): a nearest-class-mean probe,
and a dense task that classifies each test image by the nearest class mean of its features and
scores (correct, 1) per image. The entry points are the ones importlib.metadata would list for an
installed package declaring them.
"""

from __future__ import annotations

import argparse
import shlex
from importlib import metadata
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from probekit.cli import build_parser, main
from probekit.core.errors import ProbekitError
from probekit.core.specs import DENSE_TASKS, PROBE_SPECS, DenseTaskSpec, ProbeSpec, probe_order
from probekit.pipeline import RunConfig, RunPaths, all_steps, format_command

# ---- the other package -------------------------------------------------------------------------


def _nearest_mean(train: np.ndarray, y: np.ndarray, queries: np.ndarray, classes: int) -> np.ndarray:
    means = np.stack([train[y == k].mean(axis=0) for k in range(classes)])
    return ((queries[:, None, :] - means[None]) ** 2).sum(-1).argmin(1)


def centroid_adapter(task, settings, device, progress):
    from probekit.probes.protocol import ProbeOutcome

    train, y = task.stacked()
    return {
        key: ProbeOutcome(
            {split: _nearest_mean(train[key], y, task.evals[split][key], task.num_classes) for split in task.evals}
        )
        for key in task.cells
    }


CENTROID = ProbeSpec("centroid", f"{__name__}:centroid_adapter", order=-1)


def cmd_nearest_mean(args: argparse.Namespace) -> None:
    from probekit.analyses.dense.table import dense_rows
    from probekit.evaluate.dense_sidecar import write_dense_sidecar
    from probekit.evaluate.results import with_kind, write_table
    from probekit.features.cache import FeatureCache

    with FeatureCache(args.cache) as cache:
        y_train, y_test = cache.labels("train"), cache.labels("test")
        classes = int(max(y_train.max(), y_test.max())) + 1
        scores, units, cells = {}, {}, {}
        for point in cache.grid:
            for layer in cache.layers:
                cell = (point.t, layer.name)
                correct = _nearest_mean(
                    cache.features("train", layer.name, point.t), y_train,
                    cache.features("test", layer.name, point.t), classes,
                ) == y_test  # fmt: skip
                units[cell] = np.stack([correct, np.ones_like(correct)], axis=1).astype(np.int64)
                value = float(correct.mean())
                scores[cell] = {"test": {"nearest_acc": value, "nearest_err": 1 - value, "n_eval": len(y_test)}}
                cells[cell] = _cell_info(point, layer)
        index = cache.index("test")
        model, dataset = str(cache.attrs.get("model_id")), str(cache.attrs.get("dataset"))
    table = dense_rows(
        scores, cells, probe="nearest-mean", metrics=("nearest_acc", "nearest_err"), model=model, dataset=dataset,
        n_train=len(y_train),
    )  # fmt: skip
    write_table(with_kind(table, "nearest-mean"), args.out)
    write_dense_sidecar(args.out, table, "pck", units, index)


def _cell_info(point, layer):
    from probekit.core.types import CellInfo

    return CellInfo(
        t=point.t, sigma=point.sigma, logsnr=point.logsnr, alpha_bar=point.alpha_bar,
        layer=layer.name, stage=layer.stage, depth=layer.depth,
    )  # fmt: skip


def register_nearest_mean(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("nearest-mean", help="each test image's class by the nearest class mean of its features")
    p.add_argument("--cache", required=True)
    p.add_argument("--data", required=True)
    p.add_argument("--out", required=True)
    p.set_defaults(run=cmd_nearest_mean)


NEAREST_MEAN = DenseTaskSpec(
    "nearest-mean",
    "nearest class mean",
    metric="nearest_acc",
    second="nearest_err",
    count_unit="images",
    fits=True,
    test_unit="images",
    sidecar_kind="pck",
    data="mosaic",
    cli=f"{__name__}:register_nearest_mean",
)

# ---- the tests ---------------------------------------------------------------------------------


@pytest.fixture
def installed(monkeypatch):
    """The entry points of a package that declares the toy probe and the toy dense task."""
    points = {
        "probekit.probes": [metadata.EntryPoint("centroid", f"{__name__}:CENTROID", "probekit.probes")],
        "probekit.dense_tasks": [
            metadata.EntryPoint("nearest-mean", f"{__name__}:NEAREST_MEAN", "probekit.dense_tasks")
        ],
    }
    monkeypatch.setattr(metadata, "entry_points", lambda group: points.get(group, []))
    PROBE_SPECS.reload()
    DENSE_TASKS.reload()
    yield
    monkeypatch.undo()
    PROBE_SPECS.reload()
    DENSE_TASKS.reload()


def _write_cache(path: Path, seed: int) -> tuple[dict, dict, np.ndarray, np.ndarray]:
    """A cache with one grid point and two layers: 'a' holds the class, 'b' only noise."""
    from probekit.core.schedule import GridPoint
    from probekit.features.cache import CacheLayout, CacheWriter, SplitLabels
    from probekit.models.backbone import LayerInfo

    rng = np.random.default_rng(seed)
    y_train, y_test = np.arange(90) % 3, np.arange(45) % 3

    def feats(y):
        noise = rng.standard_normal((len(y), 4)).astype(np.float32)
        return {"a": noise + 3 * np.eye(3, 4, dtype=np.float32)[y], "b": noise}

    train, test = feats(y_train), feats(y_test)
    layout = CacheLayout(
        attrs={"model_id": f"toy{seed}", "model_sha256": "0", "dataset": "toy", "seed": 0, "pooling": "gap"},
        grid=[GridPoint(t=0, model_input=0.0, alpha_bar=1.0, sigma=0.0, logsnr=float("inf"))],
        layers=[LayerInfo("a", "down", 0, 4, "1x1"), LayerInfo("b", "up", 1, 4, "1x1")],
        widths={"a": 4, "b": 4},
        splits={"train": SplitLabels(y_train, np.arange(90)), "test": SplitLabels(y_test, np.arange(45))},
        class_names=["0", "1", "2"],
        draws=1,
    )
    writer = CacheWriter(path, layout)
    writer.write_batch("train", 0, {name: x[None, None] for name, x in train.items()})
    writer.write_batch("test", 0, {name: x[None, None] for name, x in test.items()})
    writer.close(complete=True)
    return train, test, y_train, y_test


def test_an_outside_probe_runs_through_probekit_probe(installed, tmp_path, capsys):
    train, test, y_train, y_test = _write_cache(tmp_path / "c.h5", seed=0)
    out = tmp_path / "r.csv"
    argv = ["probe", "--cache", str(tmp_path / "c.h5"), "--probes", "centroid,linear", "--val-fraction", "0"]
    assert main([*argv, "--out", str(out), "--quiet"]) == 0
    table = pd.read_csv(out)
    assert set(table["probe"]) == {"centroid", "linear"}
    for layer in ("a", "b"):  # fitted on all of train (no val split), scored on test, against scikit-learn
        from sklearn.neighbors import NearestCentroid

        expected = (NearestCentroid().fit(train[layer], y_train).predict(test[layer]) == y_test).mean()
        row = table[(table.probe == "centroid") & (table.layer == layer) & (table.metric == "top1")]
        assert row["value"].item() == pytest.approx(expected)
    assert "centroid" in _probe_help()
    assert probe_order(["knn", "linear", "centroid"]) == ["centroid", "linear", "knn"]


def _probe_help() -> str:
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices["probe"].format_help()


def test_an_unknown_probe_names_the_registered_ones(installed, tmp_path, capsys):
    _write_cache(tmp_path / "c.h5", seed=0)
    assert main(["probe", "--cache", str(tmp_path / "c.h5"), "--probes", "ridge", "--out", str(tmp_path / "r")]) == 2
    assert "choose from linear, logreg, sgd, mlp, knn, centroid" in capsys.readouterr().err


def test_an_outside_dense_task_runs_through_the_cli_compare_and_report(installed, tmp_path, capsys):
    _, _, _, y_test = _write_cache(tmp_path / "m.h5", seed=0)
    _write_cache(tmp_path / "r.h5", seed=1)
    for run in ("m", "r"):
        argv = ["nearest-mean", "--cache", str(tmp_path / f"{run}.h5"), "--data", "unused"]
        assert main([*argv, "--out", str(tmp_path / f"nearest-mean_{run}.csv")]) == 0
    table = pd.read_csv(tmp_path / "nearest-mean_m.csv")
    assert set(table["kind"]) == {"nearest-mean"}
    acc = table[(table.layer == "a") & (table.metric == "nearest_acc")]["value"].item()
    assert acc > 0.9  # the class is in layer a by construction
    results = [str(tmp_path / f"nearest-mean_{run}.csv") for run in ("m", "r")]
    assert main(["dense-compare", "--results", *results, "--n-boot", "50"]) == 0
    compared = capsys.readouterr().out
    assert f"on {len(y_test)} test units" in compared and f"{100 * acc:.1f} %" in compared
    probe_out = tmp_path / "results_m.csv"
    assert main(["probe", "--cache", str(tmp_path / "m.h5"), "--out", str(probe_out), "--quiet"]) == 0
    report = tmp_path / "report.html"
    assert main(["report", "--results", str(probe_out), *results, "--out", str(report)]) == 0
    page = report.read_text()
    assert "nearest-mean" in page and "nearest_acc" in page


def test_the_pipeline_plans_an_outside_dense_task_as_lines_the_cli_parses(installed):
    config = RunConfig(model="M", data="d", out="o", name="m", cache_dir="c", dense=True)
    paths = RunPaths(out=Path("o"), caches=Path("c"), label="m")
    plans = {step.name: plan for step in all_steps() if (plan := step.plan(config, paths)) is not None}
    names = list(plans)
    assert names.index("correspondence") < names.index("nearest class mean") < names.index("dense comparisons")
    lines = [shlex.split(format_command(argv))[1:] for argv in plans["nearest class mean"].commands]
    assert lines[0] == [
        "nearest-mean",
        "--cache",
        "c/mosaic_m.h5",
        "--data",
        "c/mosaic",
        "--out",
        "o/nearest-mean_m.csv",
    ]
    parser = build_parser()
    for argv in lines:
        assert parser.parse_args(argv).command == argv[0]
    report = plans["report"].commands[0]
    assert "o/nearest-mean_m.csv" in report and report.count("c/mosaic_m.h5") == 1
    compare = plans["dense comparisons"].commands
    assert ["o/nearest-mean_m.csv", "o/nearest-mean_random-init.csv"] in [argv[2:4] for argv in compare]
    # the built-in steps keep their names and order: a run recorded before keeps its stamps
    builtin = [s.name for s in all_steps() if s.name != "nearest class mean"]
    assert builtin == [
        *["extract pixels", "extract random-init", "extract model", "probe pixels", "probe random-init"],
        *["probe model", "plots", "t-SNE", "similarity to pixels", "fusion", "paired comparisons", "dense data"],
        *["extract mosaics model", "extract mosaics random-init", "extract mosaics pixels", "extract pairs model"],
        *["extract pairs random-init", "segmentation", "correspondence", "dense comparisons", "label efficiency"],
        "report",
    ]


def test_entry_points_that_take_a_built_in_name_or_are_no_spec_are_refused(monkeypatch):
    for value, message in (
        (f"{__name__}:CENTROID", "takes a built-in name"),
        (f"{__name__}:_nearest_mean", "is not a ProbeSpec"),
    ):
        name = "linear" if "built-in" in message else "odd"
        point = metadata.EntryPoint(name, value, "probekit.probes")
        monkeypatch.setattr(metadata, "entry_points", lambda group, p=point: [p] if group == "probekit.probes" else [])
        PROBE_SPECS.reload()
        with pytest.raises(ProbekitError, match=message):
            list(PROBE_SPECS)
    monkeypatch.undo()
    PROBE_SPECS.reload()
    assert list(PROBE_SPECS) == ["linear", "logreg", "sgd", "mlp", "knn"]


def test_references_resolve_lazily_with_one_line_errors():
    from probekit.core.registry import resolve
    from probekit.core.specs import epoch_based_probes, streamable_probes

    assert resolve("probekit.core.specs:PROBE_SPECS") is PROBE_SPECS
    assert resolve("probekit.core.specs:ProbeSpec.__name__") == "ProbeSpec"
    for target, message in (
        ("probekit.nowhere:x", "cannot import probekit.nowhere"),
        ("probekit.core.specs:nothing", "has no 'nothing'"),
        ("probekit.core.specs", "is not a 'module:attr' reference"),
    ):
        with pytest.raises(ProbekitError, match=message):
            resolve(target)
    assert streamable_probes() == {"linear", "knn"} and epoch_based_probes() == {"sgd", "mlp"}
