"""End to end through the command line, on a tiny .npz dataset and a tiny saved UNet."""

import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from probekit.cli import main
from probekit.features.cache import FeatureCache


@pytest.fixture(scope="module")
def npz_data(tmp_path_factory) -> str:
    rng = np.random.default_rng(0)
    path = tmp_path_factory.mktemp("data") / "toy.npz"
    y = np.arange(60) % 3
    # class-dependent brightness so there is something to find
    x = (rng.integers(0, 120, size=(60, 12, 12)) + 60 * y[:, None, None]).astype(np.uint8)
    y_test = np.arange(30) % 3
    x_test = (rng.integers(0, 120, size=(30, 12, 12)) + 60 * y_test[:, None, None]).astype(np.uint8)
    np.savez(path, x=x, y=y, x_test=x_test, y_test=y_test, class_names=np.array(["dark", "mid", "bright"]))
    return str(path)


def test_layers_lists_the_registry(tiny_unet_dir, capsys):
    assert main(["layers", "--model", str(tiny_unet_dir)]) == 0
    out = capsys.readouterr().out
    assert "mid_block.resnets.1" in out and "down_blocks.0.resnets.0" in out and "t = diffusers index 0..199" in out


@pytest.mark.slow
def test_extract_probe_plot_tsne_info(tiny_unet_dir, npz_data, tmp_path, capsys):
    cache = tmp_path / "f.h5"
    assert (
        main(
            [
                "extract",
                "--model",
                str(tiny_unet_dir),
                "--data",
                npz_data,
                "--timesteps",
                "2,20,120",
                "--layers",
                "down_blocks.*,mid_block",
                "--train-limit",
                "45",
                "--out",
                str(cache),
                "--quiet",
            ]
        )
        == 0
    )
    with FeatureCache(cache) as c:
        assert c.complete and c.timesteps == [2, 20, 120] and len(c.labels("train")) == 45
        assert np.bincount(c.labels("train")).tolist() == [15, 15, 15]
        assert c.class_names == ["dark", "mid", "bright"]
        assert c.attrs["command"].startswith("probekit extract --model")
        n_layers = len(c.layers)
    assert main(["info", str(cache)]) == 0
    assert "complete" in capsys.readouterr().out

    results = tmp_path / "r.csv"
    assert (
        main(
            [
                "probe",
                "--cache",
                str(cache),
                "--probes",
                "linear,logreg,knn",
                "--epochs",
                "5",
                "--out",
                str(results),
                "--quiet",
            ]
        )
        == 0
    )
    table = pd.read_csv(results)
    assert len(table) == 3 * n_layers * 3 * 2 * 2  # t x layers x probes x splits x metrics
    assert set(table["probe"]) == {"linear", "logreg", "knn"}

    figures = tmp_path / "figs"
    assert main(["plot", "--results", str(results), "--out", str(figures)]) == 0
    pngs = sorted(p.name for p in figures.glob("*.png"))
    assert any(name.startswith("heatmap") for name in pngs) and any(name.startswith("acc_vs_t_") for name in pngs)
    assert main(["tsne", "--cache", str(cache), "--results", str(results), "--out", str(tmp_path / "t.png")]) == 0
    assert (tmp_path / "t.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert main(["summary", "--results", str(results)]) == 0


def test_pixels_baseline(npz_data, tmp_path):
    assert main(["extract", "--model", "pixels", "--data", npz_data, "--out", str(tmp_path / "p.h5"), "--quiet"]) == 0
    assert (
        main(
            [
                "probe",
                "--cache",
                str(tmp_path / "p.h5"),
                "--probes",
                "logreg",
                "--out",
                str(tmp_path / "p.csv"),
                "--quiet",
            ]
        )
        == 0
    )
    table = pd.read_csv(tmp_path / "p.csv")
    top1 = table[(table.metric == "top1") & (table.split == "test")]["value"].item()
    assert top1 > 0.9  # the classes differ in brightness


def test_compare_pairs_two_runs_on_the_same_images_and_refuses_others(npz_data, tmp_path, capsys):
    from scipy.stats import binomtest

    from probekit.evaluate.predictions import predictions_path, read_predictions

    assert main(["extract", "--model", "pixels", "--data", npz_data, "--out", str(tmp_path / "p.h5"), "--quiet"]) == 0
    for probe in ("logreg", "knn"):
        assert (
            main(
                [
                    "probe",
                    "--cache",
                    str(tmp_path / "p.h5"),
                    "--probes",
                    probe,
                    "--k",
                    "1,3",
                    "--out",
                    str(tmp_path / f"{probe}.csv"),
                    "--quiet",
                ]
            )
            == 0
        )
    capsys.readouterr()
    assert (
        main(
            [
                "compare",
                "--results",
                str(tmp_path / "logreg.csv"),
                str(tmp_path / "knn.csv"),
                "--probe",
                "logreg",
                "--probe-b",
                "knn",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    # independent recount from the sidecars and the tables' chosen cells
    a = read_predictions(predictions_path(tmp_path / "logreg.csv"))
    b = read_predictions(predictions_path(tmp_path / "knn.csv"))
    knn_table = pd.read_csv(tmp_path / "knn.csv", keep_default_na=False)
    val = knn_table[(knn_table.metric == "top1") & (knn_table.split == "val")]
    ok_a = a.predictions[0] == a.labels
    ok_b = b.predictions[int(np.argmax(val["value"].to_numpy()))] == b.labels
    only_a, only_b = int(np.sum(ok_a & ~ok_b)), int(np.sum(~ok_a & ok_b))
    expected_p = binomtest(only_a, only_a + only_b, 0.5).pvalue if only_a + only_b else 1.0
    assert f"{only_a} images right only for A, {only_b} only for B, p = {expected_p:.3g}" in out
    assert f"A - B = {100 * (ok_a.mean() - ok_b.mean()):+.1f} points" in out

    assert (
        main(
            [
                "extract",
                "--model",
                "pixels",
                "--data",
                npz_data,
                "--test-limit",
                "20",
                "--out",
                str(tmp_path / "q.h5"),
                "--quiet",
            ]
        )
        == 0
    )
    assert (
        main(
            [
                "probe",
                "--cache",
                str(tmp_path / "q.h5"),
                "--probes",
                "logreg",
                "--out",
                str(tmp_path / "q.csv"),
                "--quiet",
            ]
        )
        == 0
    )
    assert (
        main(["compare", "--results", str(tmp_path / "logreg.csv"), str(tmp_path / "q.csv"), "--probe", "logreg"]) == 2
    )
    assert "test images" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv, message",
    [
        (["layers", "--model", "/nope/model"], "not found"),
        (["extract", "--model", "pixels", "--data", "/nope/data.npz", "--out", "x.h5"], "no such path"),
        (
            ["extract", "--model", "pixels", "--data", "digits", "--timesteps", "5", "--out", "{tmp}/x.h5"],
            "clean inputs only",
        ),
        (["probe", "--cache", "/nope/f.h5", "--out", "r.csv"], "not found"),
        (["info", "/nope/f.h5"], "not found"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(argv, message, tmp_path, capsys):
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("probekit: error:") and message in err and "\n" not in err
    assert not (tmp_path / "x.h5").exists()


def test_timesteps_must_be_integers(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["extract", "--model", "pixels", "--data", "digits", "--timesteps", "1,a", "--out", "x.h5"])
    assert exit_info.value.code == 2
    assert "comma-separated list of integers" in capsys.readouterr().err


@pytest.mark.slow
def test_train_then_probe_the_checkpoint(npz_data, tmp_path, capsys):
    import yaml

    recipe = {
        "unet": {
            "sample_size": 16,
            "in_channels": 1,
            "out_channels": 1,
            "block_out_channels": [8, 16],
            "down_block_types": ["DownBlock2D", "AttnDownBlock2D"],
            "up_block_types": ["AttnUpBlock2D", "UpBlock2D"],
            "layers_per_block": 1,
            "norm_num_groups": 4,
            "attention_head_dim": 8,
        },
        "batch_size": 8,
        "warmup_steps": 1,
        "sample_count": 4,
        "sample_steps": 2,
        "num_train_timesteps": 100,
    }
    (tmp_path / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    run = tmp_path / "run"
    assert (
        main(
            [
                "train",
                "--config",
                str(tmp_path / "recipe.yaml"),
                "--data",
                npz_data,
                "--total-steps",
                "2",
                "--checkpoint-every",
                "1",
                "--out",
                str(run),
                "--quiet",
            ]
        )
        == 0
    )
    assert "probekit extract --model" in capsys.readouterr().out
    assert (
        main(
            [
                "extract",
                "--model",
                str(run / "model"),
                "--data",
                npz_data,
                "--timesteps",
                "5,50",
                "--out",
                str(tmp_path / "f.h5"),
                "--quiet",
            ]
        )
        == 0
    )
    assert main(["train", "--config", str(tmp_path / "missing.yaml"), "--out", str(run)]) == 2


@pytest.mark.subprocess
def test_a_closed_stdout_pipe_ends_quietly():
    # `probekit layers ... | head -1`: the reader has gone; no BrokenPipeError traceback.
    read_end, write_end = os.pipe()
    os.close(read_end)
    done = subprocess.run(
        [sys.executable, "-m", "probekit", "layers", "--model", "pixels"],
        stdout=write_end,
        stderr=subprocess.PIPE,
        text=True,
        timeout=300,
    )
    os.close(write_end)
    assert (done.returncode, done.stderr) == (141, "")


def test_extract_from_a_saved_hf_dataset_with_named_columns(tmp_path):
    datasets = pytest.importorskip("datasets")
    import io

    from PIL import Image

    rng = np.random.default_rng(3)

    def table(n):
        pixels = rng.integers(0, 256, size=(n, 6, 6, 3), dtype=np.uint8)
        fine, coarse = np.arange(n) % 4, np.arange(n) % 2
        encoded = []
        for image in pixels:
            buffer = io.BytesIO()
            Image.fromarray(image).save(buffer, format="PNG")
            encoded.append({"bytes": buffer.getvalue(), "path": None})
        features = datasets.Features(
            {
                "img": datasets.Image(),
                "fine": datasets.ClassLabel(names=list("wxyz")),
                "coarse": datasets.ClassLabel(names=["even", "odd"]),
            }
        )
        data = {"img": encoded, "fine": fine.tolist(), "coarse": coarse.tolist()}
        return datasets.Dataset.from_dict(data, features=features), pixels, coarse

    (train, train_px, _), (test, test_px, test_y) = table(9), table(5)
    datasets.DatasetDict(train=train, test=test).save_to_disk(str(tmp_path / "hfds"))
    out = tmp_path / "p.h5"
    assert (
        main(
            [
                "extract",
                "--model",
                "pixels",
                "--data",
                f"hf-disk:{tmp_path / 'hfds'}",
                "--image-column",
                "img",
                "--label-column",
                "coarse",
                "--batch-size",
                "2",
                "--out",
                str(out),
                "--quiet",
            ]
        )
        == 0
    )
    with FeatureCache(out) as cache:
        assert cache.class_names == ["even", "odd"]
        np.testing.assert_array_equal(cache.labels("test"), test_y)
        for split, pixels in (("train", train_px), ("test", test_px)):  # pixel features are (C, H, W) flattened
            expected = pixels.transpose(0, 3, 1, 2).reshape(len(pixels), -1) / 255
            np.testing.assert_allclose(cache.features(split, "pixels", 0), expected, rtol=1e-6)


def test_zero_terminal_snr_point_is_recorded_as_infinite(tiny_unet_dir, npz_data, tmp_path, capsys):
    """A UNet folder whose scheduler rescales to zero terminal SNR: the cache and `info` carry sigma = inf there."""
    import json
    import math
    import shutil

    from diffusers import DDPMScheduler

    from probekit.features.cache import FeatureCache

    folder = tmp_path / "zsnr"
    shutil.copytree(tiny_unet_dir, folder)
    config = {**json.loads((folder / "scheduler_config.json").read_text()), "rescale_betas_zero_snr": True}
    (folder / "scheduler_config.json").write_text(json.dumps(config))
    reference = (
        DDPMScheduler(**{k: v for k, v in config.items() if not k.startswith("_")}).alphas_cumprod.double().numpy()
    )
    out = tmp_path / "z.h5"
    assert (
        main(
            [
                "extract",
                "--model",
                str(folder),
                "--data",
                npz_data,
                "--timesteps",
                "20,199",
                "--train-limit",
                "6",
                "--test-limit",
                "3",
                "--layers",
                "0",
                "--quiet",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    with FeatureCache(out) as cache:
        low, last = cache.grid
        assert low.alpha_bar == pytest.approx(reference[20], rel=1e-5)
        assert last.alpha_bar == reference[199] == 0.0 and last.sigma == math.inf and last.logsnr == -math.inf
        assert "zero terminal SNR" in cache.attrs["schedule"]
    capsys.readouterr()
    assert main(["info", str(out)]) == 0
    assert any(
        line.split()[:3] == ["t=199", "sigma=inf", "logsnr=-inf"] for line in capsys.readouterr().out.splitlines()
    )
