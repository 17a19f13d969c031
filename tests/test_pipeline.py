"""`probekit run` end to end: the shipped checkpoint's family (a tiny diffusers UNet) and a tiny
random DiT pipeline, re-runs that skip finished steps, and a run killed mid-way (SIGKILL) whose
re-run gives the same files as an uninterrupted run.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from probekit.cli import main
from probekit.evaluate.predictions import read_predictions
from tests.budgets import PROCESS_BUDGET_S

ROOT = Path(__file__).resolve().parents[1]
STEP_NAMES = [
    "extract pixels",
    "extract random-init",
    "extract model",
    "probe pixels",
    "probe random-init",
    "probe model",
    "plots",
    "t-SNE",
    "similarity to pixels",
    "fusion",
    "paired comparisons",
    "report",
]


@pytest.fixture(scope="module")
def toy_npz(tmp_path_factory: pytest.TempPathFactory) -> Path:
    rng = np.random.default_rng(0)
    path = tmp_path_factory.mktemp("data") / "toy.npz"
    y, y_test = np.arange(90) % 3, np.arange(45) % 3
    x = (rng.integers(0, 120, size=(90, 12, 12)) + 60 * y[:, None, None]).astype(np.uint8)
    x_test = (rng.integers(0, 120, size=(45, 12, 12)) + 60 * y_test[:, None, None]).astype(np.uint8)
    np.savez(path, x=x, y=y, x_test=x_test, y_test=y_test, class_names=np.array(["dark", "mid", "bright"]))
    return path


def _argv(model: Path, data: Path) -> list[str]:
    return [
        "run",
        "--model",
        str(model),
        "--data",
        str(data),
        "--out",
        "run",
        "--name",
        "m",
        "--timesteps",
        "2,60",
        "--layers",
        "0,mid_block,-1",
        "--batch-size",
        "4",
        "--n-boot",
        "200",
        "--quiet",
    ]


def _run_in(folder: Path, argv: list[str], capsys: pytest.CaptureFixture) -> str:
    folder.mkdir(parents=True, exist_ok=True)
    cwd = os.getcwd()
    os.chdir(folder)  # relative --out: two runs in two folders write byte-comparable commands
    try:
        capsys.readouterr()
        assert main(argv) == 0
        return capsys.readouterr().out
    finally:
        os.chdir(cwd)


@pytest.fixture(scope="module")
def unet_run(tiny_unet_dir: Path, toy_npz: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    folder = tmp_path_factory.mktemp("whole")
    cwd = os.getcwd()
    os.chdir(folder)
    try:
        buffer = io.StringIO()
        with contextlib.redirect_stdout(buffer):
            assert main(_argv(tiny_unet_dir, toy_npz)) == 0
    finally:
        os.chdir(cwd)
    return folder, buffer.getvalue()


def _comparisons(text: str) -> list[tuple[str, str, float, float, float]]:
    """(A line, B line, A %, B %, A - B) of each comparison printed by `probekit compare`."""
    found = re.findall(r"^A  (.*): ([\d.]+) %\nB  (.*): ([\d.]+) %\nA - B = ([-+\d.]+) points", text, flags=re.M)
    return [(a, b, float(pa), float(pb), float(d)) for a, pa, b, pb, d in found]


def _accuracy(results_csv: Path, described: str) -> float:
    """Accuracy (%) of the cell named in a compare line, computed from the predictions sidecar with numpy."""
    probe, t, layer = re.search(r" (\S+) t=(-?\d+) (\S+)", described).groups()
    preds = read_predictions(results_csv.with_suffix(".predictions.npz"))
    rows = [
        i for i, (p, tt, l) in enumerate(zip(preds.probe, preds.t, preds.layer)) if (p, tt, l) == (probe, int(t), layer)
    ]
    assert len(rows) == 1, described
    return 100 * float(np.mean(preds.predictions[rows[0]] == preds.labels))


@pytest.mark.slow
def test_run_answers_the_question_on_the_shipped_family(unet_run):
    folder, out = unet_run
    run = folder / "run"
    assert out.strip().splitlines()[-1] == "report: run/report.html"
    for name in STEP_NAMES:
        assert f"] {name}\n" in out, name
    for name in (
        "results_m.csv",
        "results_pixels.csv",
        "results_random-init.csv",
        "fusion_m.csv",
        "similarity_m_pixels.csv",
        "comparisons.txt",
        "report.html",
        "heatmap_linear.png",
        "random-init/heatmap_linear.png",
        "tsne_best_linear.png",
        "caches/m.h5",
        "caches/pixels.h5",
        "caches/random-init.h5",
    ):
        assert (run / name).is_file(), name
    table = pd.read_csv(run / "results_m.csv")
    with h5py.File(run / "caches" / "m.h5", "r") as cache:
        layers = [n.decode() if isinstance(n, bytes) else n for n in cache["layers"]["name"][:]]
    assert sorted(set(table["t"])) == [2, 60] and sorted(set(table["layer"])) == sorted(layers) and len(layers) == 3
    assert set(table["probe"]) == {"linear", "knn"} and set(table["split"]) == {"val", "test"}
    assert set(pd.read_csv(run / "results_pixels.csv")["probe"]) == {"linear", "logreg", "knn"}
    assert set(pd.read_csv(run / "results_random-init.csv")["t"]) == {0}

    # five paired comparisons: vs pixels (linear, logreg), vs random init, and both fusion probes vs the best cell
    text = (run / "comparisons.txt").read_text()
    compared = _comparisons(text)
    assert len(compared) == 5
    sources = [
        ("results_m.csv", "results_pixels.csv"),
        ("results_m.csv", "results_pixels.csv"),
        ("results_m.csv", "results_random-init.csv"),
        ("fusion_m.csv", "results_m.csv"),
        ("fusion_m.csv", "results_m.csv"),
    ]
    for (a_line, b_line, acc_a, acc_b, diff), (a_csv, b_csv) in zip(compared, sources):
        if "fusion" not in a_line:
            assert acc_a == pytest.approx(_accuracy(run / a_csv, a_line), abs=0.051)
        assert acc_b == pytest.approx(_accuracy(run / b_csv, b_line), abs=0.051)
        assert diff == pytest.approx(acc_a - acc_b, abs=0.11)
    assert "pixels logreg" in compared[1][1] and "random init" in compared[2][1]
    assert "fusion-concat" in compared[3][0] and "fusion-mixture" in compared[4][0]
    assert all(a_line in out for a_line, *_ in compared)  # and printed as the run goes
    page = (run / "report.html").read_text()
    assert "Paired comparisons" in page and "tsne best linear" in page


def test_rerun_skips_every_finished_step_and_changes_nothing(unet_run, tiny_unet_dir, toy_npz, capsys):
    folder, _ = unet_run
    before = {p: p.stat().st_mtime_ns for p in (folder / "run").rglob("*") if p.is_file()}
    out = _run_in(folder, _argv(tiny_unet_dir, toy_npz), capsys)
    assert out.count("done already, skipped") == len(STEP_NAMES)
    assert out.strip().splitlines()[-1] == "report: run/report.html"
    assert "A - B =" in out  # the comparisons are shown again
    assert {p: p.stat().st_mtime_ns for p in (folder / "run").rglob("*") if p.is_file()} == before


def _files(root: Path) -> dict[str, Path]:
    return {str(p.relative_to(root)): p for p in sorted(root.rglob("*")) if p.is_file()}


def _assert_same_files(a: Path, b: Path) -> None:
    """Same file names; same bytes, or the same content where a file records when it was written."""
    files_a, files_b = _files(a), _files(b)
    assert files_a.keys() == files_b.keys()
    for name, pa in files_a.items():
        pb = files_b[name]
        if name.endswith(".h5"):  # attrs hold the creation time; every array must match
            with h5py.File(pa, "r") as fa, h5py.File(pb, "r") as fb:
                arrays_a, arrays_b = {}, {}
                fa.visititems(lambda k, v: arrays_a.__setitem__(k, v[()]) if isinstance(v, h5py.Dataset) else None)
                fb.visititems(lambda k, v: arrays_b.__setitem__(k, v[()]) if isinstance(v, h5py.Dataset) else None)
                assert arrays_a.keys() == arrays_b.keys(), name
                for key in arrays_a:
                    np.testing.assert_array_equal(arrays_a[key], arrays_b[key], err_msg=f"{name}:{key}")
                assert bool(fa.attrs["complete"]) and bool(fb.attrs["complete"])
        elif name.endswith(".npz"):  # zip entries carry their write time
            with np.load(pa) as za, np.load(pb) as zb:
                assert sorted(za.files) == sorted(zb.files), name
                for key in za.files:
                    np.testing.assert_array_equal(za[key], zb[key], err_msg=f"{name}:{key}")
        elif name.endswith(".png"):
            np.testing.assert_array_equal(np.asarray(Image.open(pa)), np.asarray(Image.open(pb)), err_msg=name)
        elif name.endswith(".html"):
            stamp = re.compile(r"written \d{4}-\d\d-\d\dT[\d:]+\+00:00|created[^<]*")
            assert stamp.sub("", pa.read_text()) == stamp.sub("", pb.read_text()), name
        else:
            assert pa.read_bytes() == pb.read_bytes(), name


def _written(cache: Path) -> int:
    from probekit.features.cache import FeatureCache

    try:
        with FeatureCache(cache) as c:
            return sum(c.progress(split)[0] for split in c.splits)
    except Exception:  # noqa: BLE001 -- the file may not exist yet
        return 0


@pytest.mark.subprocess
@pytest.mark.slow
def test_a_killed_run_continues_to_the_files_of_an_uninterrupted_run(
    unet_run, tiny_unet_dir, toy_npz, tmp_path, capsys
):
    whole, _ = unet_run
    argv = _argv(tiny_unet_dir, toy_npz)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "probekit", *argv],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    cache, deadline = tmp_path / "run" / "caches" / "m.h5", time.monotonic() + 300
    # Kill in the middle of the model's extraction: some of its samples are on disk, not all.
    while _written(cache) < 8 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=PROCESS_BUDGET_S)
    assert proc.returncode == -signal.SIGKILL
    assert 0 < _written(cache) < 90 + 45, "the run must be stopped part-way through the model's extraction"
    assert not (tmp_path / "run" / "report.html").exists()
    stamp = json.loads((tmp_path / "run" / "caches" / ".steps" / "extract-model.json").read_text())
    assert stamp["state"] == "started"

    out = _run_in(tmp_path, argv, capsys)
    assert "extract pixels: done already, skipped" in out and "extract model: resuming" in out
    assert out.strip().splitlines()[-1] == "report: run/report.html"
    _assert_same_files(whole / "run", tmp_path / "run")


def test_a_changed_setting_redoes_only_the_steps_it_reaches(unet_run, tiny_unet_dir, toy_npz, tmp_path, capsys):
    import shutil

    shutil.copytree(unet_run[0] / "run", tmp_path / "run")
    out = _run_in(tmp_path, _argv(tiny_unet_dir, toy_npz) + ["--no-fusion", "--no-tsne", "--no-similarity"], capsys)
    for name in ("extract pixels", "extract model", "probe model", "plots"):
        assert f"{name}: done already, skipped" in out, name
    assert "] paired comparisons\n" in out and "] report\n" in out  # their commands changed: redone
    assert len(_comparisons((tmp_path / "run" / "comparisons.txt").read_text())) == 3


def _tiny_dit_pipeline(root: Path) -> Path:
    """A random DiT (diffusers DiTPipeline folder: transformer, VAE, scheduler), made here."""
    from diffusers import AutoencoderKL, DiTTransformer2DModel

    torch.manual_seed(0)
    DiTTransformer2DModel(
        num_attention_heads=2,
        attention_head_dim=16,
        in_channels=4,
        out_channels=8,
        num_layers=2,
        sample_size=8,
        patch_size=2,
        num_embeds_ada_norm=10,
        norm_eps=1e-6,
    ).save_pretrained(root / "transformer")
    AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2,
        block_out_channels=(8, 16),
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=4,
        sample_size=16,
        scaling_factor=0.5,
    ).save_pretrained(root / "vae")
    (root / "scheduler").mkdir()
    (root / "scheduler" / "scheduler_config.json").write_text(
        json.dumps(
            {
                "_class_name": "DDIMScheduler",
                "num_train_timesteps": 500,
                "beta_schedule": "linear",
                "beta_start": 1e-4,
                "beta_end": 0.02,
            }
        )
    )
    (root / "model_index.json").write_text(json.dumps({"_class_name": "DiTPipeline"}))
    return root


@pytest.mark.slow
def test_run_on_a_tiny_random_dit_from_a_config_file(toy_npz, tmp_path, capsys):
    dit = _tiny_dit_pipeline(tmp_path / "dit")
    config = tmp_path / "run.yaml"
    config.write_text(
        f"model: {dit}\ndata: {toy_npz}\nout: wrong\ntimesteps: [10, 200]\nprobes: linear\n"
        "n_boot: 200\nquiet: true\nrandom_init_probes: [linear]\n"
    )
    out = _run_in(tmp_path, ["run", "--config", str(config), "--out", "run"], capsys)  # the flag overrides the file
    run = tmp_path / "run"
    assert out.strip().splitlines()[-1] == "report: run/report.html" and not (tmp_path / "wrong").exists()
    table = pd.read_csv(run / "results_dit.csv")
    assert set(table["t"]) == {10, 200} and set(table["probe"]) == {"linear"}
    assert set(table["layer"]) == {"transformer_blocks.0", "transformer_blocks.1"}
    assert "random init" in pd.read_csv(run / "results_random-init.csv")["model"].iloc[0]
    compared = _comparisons((run / "comparisons.txt").read_text())
    assert len(compared) == 5
    assert compared[0][2] == pytest.approx(_accuracy(run / "results_dit.csv", compared[0][0]), abs=0.051)
    assert "Paired comparisons" in (run / "report.html").read_text()


@pytest.mark.parametrize(
    "argv, message",
    [
        (["run", "--data", "x.npz", "--out", "o"], "needs --model"),
        (["run", "--model", "pixels", "--data", "x.npz", "--out", "o", "--config", "missing.yaml"], "does not exist"),
        (["run", "--model", "pixels", "--data", "x.npz", "--out", "o", "--train-limit", "0"], "positive number"),
    ],
)
def test_bad_settings_are_one_line_errors(argv, message, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("probekit: error:") and message in err and "\n" not in err
    assert not (tmp_path / "o").exists()


def test_unknown_config_keys_are_refused(tmp_path, capsys):
    config = tmp_path / "c.yaml"
    config.write_text("model: pixels\ndata: x.npz\nout: o\ntrain_limt: 5\n")
    assert main(["run", "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert "unknown setting(s) train_limt" in err and "train_limit" in err


def test_probe_at_some_timesteps_gives_the_full_probes_rows_there(unet_run, tmp_path, capsys):
    run = unet_run[0] / "run"
    out = tmp_path / "t60.csv"
    assert (
        main(
            [
                "probe",
                "--cache",
                str(run / "caches" / "m.h5"),
                "--probes",
                "linear",
                "--timesteps",
                "60",
                "--quiet",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    part = pd.read_csv(out)
    assert set(part["t"]) == {60} and set(part["probe"]) == {"linear"}
    full = pd.read_csv(run / "results_m.csv")
    full = full[(full["probe"] == "linear") & (full["t"] == 60)].set_index(["layer", "metric", "split"])
    part = part.set_index(["layer", "metric", "split"])
    assert sorted(part.index) == sorted(full.index)
    # the same fit, val split and C; cells solved in other batches may move by one image at most
    top1 = full.xs("top1", level="metric", drop_level=False).index
    moved = (part.loc[top1, "value"] - full.loc[top1, "value"]).abs() * full.loc[top1, "n_eval"]
    assert moved.max() <= 1 + 1e-9
    assert (
        main(["probe", "--cache", str(run / "caches" / "m.h5"), "--timesteps", "7", "--out", str(tmp_path / "x.csv")])
        == 2
    )
    err = capsys.readouterr().err
    assert "--timesteps 7: the cache's grid is 2,60" in err and len(err.strip().splitlines()) == 1


# Dense probing and label efficiency: steps after the global question, off unless asked for.

DENSE_STEPS = [
    "dense data",
    "extract mosaics model",
    "extract mosaics random-init",
    "extract mosaics pixels",
    "extract pairs model",
    "extract pairs random-init",
    "segmentation",
    "correspondence",
    "dense comparisons",
    "label efficiency",
]


def _plans(**settings) -> dict[str, list[list[str]]]:
    from probekit.pipeline import STEPS, RunConfig, RunPaths

    config = RunConfig(model="M", data="fashion-mnist", out="o", name="m", cache_dir="c", **settings)
    config.check()
    paths = RunPaths(out=Path("o"), caches=Path("c"), label="m")
    return {step.name: plan.commands for step in STEPS if (plan := step.plan(config, paths)) is not None}


def test_dense_and_label_steps_are_off_by_default_and_plan_nothing():
    plans = _plans()
    assert not set(DENSE_STEPS) & set(plans)
    assert list(plans) == STEP_NAMES
    report = plans["report"][0]
    assert not any(("segment" in a or "labels" in a or "mosaic" in a) for a in report)


def test_dense_and_label_steps_plan_the_commands_a_user_would_type():
    plans = _plans(
        dense=True,
        dense_timesteps=[0, 50],
        dense_layers="a,b",
        mosaics=[6, 4, 5],
        warp_pairs=[3, 7],
        label_efficiency=True,
        labels_per_class="1,5,all",
        budget_draws=2,
        label_timesteps=[0],
        timesteps=[0, 10, 50],
    )
    assert list(plans) == STEP_NAMES[:-1] + DENSE_STEPS + ["report"]
    assert plans["dense data"] == [
        [
            "mosaic",
            "--data",
            "fashion-mnist",
            "--out",
            "c/mosaic",
            "--train",
            "6",
            "--val",
            "4",
            "--test",
            "5",
            "--seed",
            "0",
        ],
        ["pairs", "--warp", "fashion-mnist", "--out", "c/pairs", "--val", "3", "--test", "7", "--seed", "0"],
    ]
    model = plans["extract mosaics model"][0]
    assert model[:3] == ["extract", "--model", "M"] and model[model.index("--data") + 1] == "c/mosaic"
    assert model[model.index("--pooling") + 1] == "spatial8" and model[model.index("--timesteps") + 1] == "0,50"
    assert model[model.index("--layers") + 1] == "a,b" and model[-2:] == ["--out", "c/mosaic_m.h5"]
    twin = plans["extract pairs random-init"][0]
    assert (
        "--random-init" in twin and twin[twin.index("--timesteps") + 1] == "0" and twin[-1] == "c/pairs_random-init.h5"
    )
    pixels = plans["extract mosaics pixels"][0]
    assert pixels[pixels.index("--pooling") + 1] == "spatial32" and "extract pairs pixels" not in plans
    assert [c[:3] for c in plans["segmentation"][:3]] == [
        ["segment", "--cache", f"c/mosaic_{r}.h5"] for r in ("m", "random-init", "pixels")
    ]
    assert plans["segmentation"][3] == [
        "plot",
        "--results",
        "o/segment_m.csv",
        "--metric",
        "miou",
        "--out",
        "o/segment",
    ]
    # pixels are no correspondence baseline (one gray channel: every foreground pixel ties)
    assert [c[:3] for c in plans["correspondence"][:2]] == [
        ["correspond", "--cache", f"c/pairs_{r}.h5"] for r in ("m", "random-init")
    ]
    assert [c[2:4] for c in plans["dense comparisons"]] == [
        ["o/segment_m.csv", "o/segment_random-init.csv"],
        ["o/segment_m.csv", "o/segment_pixels.csv"],
        ["o/correspond_m.csv", "o/correspond_random-init.csv"],
    ]
    labels = plans["label efficiency"]
    assert [c[2] for c in labels[:3]] == ["c/m.h5", "c/random-init.h5", "c/pixels.h5"]
    for argv in labels[:3]:
        assert argv[argv.index("--labels-per-class") + 1] == "1,5,all" and argv[argv.index("--budget-draws") + 1] == "2"
    assert labels[0][-2:] == ["--timesteps", "0"] and "--timesteps" not in labels[1] + labels[2]
    assert labels[3] == [
        "plot",
        "--results",
        "o/labels_m.csv",
        "o/labels_random-init.csv",
        "o/labels_pixels.csv",
        "--out",
        "o/labels",
    ]
    report = plans["report"][0]
    for name in (
        "o/segment_m.csv",
        "o/segment_pixels.csv",
        "o/correspond_random-init.csv",
        "o/labels_pixels.csv",
        "c/mosaic_m.h5",
        "c/pairs_random-init.h5",
    ):
        assert name in report, name


def test_dense_steps_follow_the_baselines_that_are_turned_off():
    plans = _plans(dense=True, label_efficiency=True, pixels=False, random_init=False)
    assert "extract mosaics pixels" not in plans and "extract mosaics random-init" not in plans
    assert "dense comparisons" not in plans  # nothing to compare the model with
    assert len(plans["segmentation"]) == 2 and len(plans["label efficiency"]) == 2  # the model's, and the plot
    plans = _plans(dense=True, dense_timesteps=None, timesteps=[5, 9], dense_layers=None, layers="x")
    model = plans["extract pairs model"][0]
    assert model[model.index("--timesteps") + 1] == "5,9" and model[model.index("--layers") + 1] == "x"


@pytest.mark.parametrize(
    "text, message",
    [
        ("mosaics: [5, 5]\n", "three positive counts"),
        ("warp_pairs: [0, 5]\n", "two positive counts"),
        ("label_efficiency: true\nlabels_per_class: [0, 5]\n", "at least 1 label per class"),
    ],
)
def test_bad_dense_sizes_are_refused(text, message, tmp_path, capsys):
    config = tmp_path / "c.yaml"
    config.write_text("model: pixels\ndata: x.npz\nout: o\n" + text)
    assert main(["run", "--config", str(config)]) == 2
    assert message in capsys.readouterr().err


@pytest.mark.slow
def test_turning_on_dense_and_label_efficiency_runs_only_the_new_steps(
    unet_run, tiny_unet_dir, toy_npz, tmp_path, capsys
):
    import shutil

    from probekit.evaluate.dense_sidecar import compare_dense
    from probekit.evaluate.results import best_cells

    shutil.copytree(unet_run[0] / "run", tmp_path / "run")
    config = tmp_path / "dense.yaml"
    config.write_text(
        "mosaics: [8, 4, 8]\nwarp_pairs: [4, 6]\ndense_layers: mid_block,-1\nlabels_per_class: [1, 5, all]\n"
        "budget_draws: 2\nlabel_timesteps: [2]\n"
    )
    out = _run_in(
        tmp_path, _argv(tiny_unet_dir, toy_npz) + ["--config", str(config), "--dense", "--label-efficiency"], capsys
    )
    for name in STEP_NAMES[:-1]:  # the global question is left as it was
        assert f"{name}: done already, skipped" in out, name
    for name in DENSE_STEPS + ["report"]:
        assert f"] {name}\n" in out, name
    run = tmp_path / "run"
    for name in (
        "segment_m.csv",
        "segment_random-init.csv",
        "segment_pixels.csv",
        "correspond_m.csv",
        "correspond_random-init.csv",
        "segment/heatmap_segment-linear.png",
        "correspond/heatmap_correspond.png",
        "labels/label_efficiency.png",
        "labels/label_efficiency.csv",
        "dense_comparisons.txt",
    ):
        assert (run / name).is_file(), name
    assert not (run / "correspond_pixels.csv").exists()
    segment = pd.read_csv(run / "segment_m.csv")
    assert set(segment["t"]) == {2, 60} and set(segment["metric"]) == {"miou", "pixel_accuracy"}
    assert len(set(segment["layer"])) == 2

    # the printed dense comparisons are the model's val-chosen cell against each baseline's
    text = (run / "dense_comparisons.txt").read_text()
    assert text.count("difference") == 3
    c = compare_dense(run / "segment_m.csv", run / "segment_pixels.csv", n_boot=10_000)
    chosen = best_cells(segment, "miou").iloc[0]
    assert (c.cell_a[0], c.cell_a[1]) == (chosen["t"], chosen["layer"])
    assert c.value_a == pytest.approx(chosen["value"]) and f"difference {100 * c.diff:+.1f}" in text

    # label efficiency: the model at the asked timesteps only; its 'all' budget is the global linear probe's fit
    labels = pd.read_csv(run / "labels_m.csv")
    assert set(labels["t"]) == {2} and sorted(set(labels["labels_per_class"].astype(str))) == ["1", "5", "all"]
    full = pd.read_csv(run / "results_m.csv")
    full = full[(full["probe"] == "linear") & (full["t"] == 2) & (full["metric"] == "top1")].set_index(
        ["layer", "split"]
    )
    every = labels[(labels["labels_per_class"].astype(str) == "all") & (labels["metric"] == "top1")].set_index(
        ["layer", "split"]
    )
    # the same fit, val split and C; cells solved in other batches may move by one image at most
    moved = (every.loc[full.index, "value"] - full["value"]).abs() * full["n_eval"]
    assert moved.max() <= 1 + 1e-9
    assert (labels[labels["labels_per_class"].astype(str) == "1"]["n_train"] == 3).all()  # 1 per class, 3 classes

    page = (run / "report.html").read_text()
    for text in (
        "Dense probes",
        "Label efficiency",
        "label efficiency: val-chosen",
        "segment: heatmap segment-linear (miou)",
        "dense-compare",
        "The global linear probe&#x27;s val-chosen cell",
    ):
        assert text in page, text
