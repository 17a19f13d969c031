import math

import numpy as np

from probekit.analyses.noisy_classifier import PIXELS, NoisyClassifierConfig, noisy_pixels, run_noisy_classifier
from probekit.cli import main
from probekit.core.noise import sample_noise, split_seed
from probekit.data.base import ImageDataset, ImageSplit
from probekit.evaluate.results import read_table
from probekit.models import load_backbone
from probekit.probes.noise_conditional import NoiseConditionalConfig


def _dataset(n_train=24, n_test=12, size=12):
    rng = np.random.default_rng(0)

    def split(n, offset):
        labels = (np.arange(n) % 3).astype(np.int64)
        images = (rng.integers(0, 60, size=(n, size, size, 1)) + 60 * labels[:, None, None, None]).astype(np.uint8)
        return ImageSplit(images=images, labels=labels, index=np.arange(n, dtype=np.int64) + offset)

    return ImageDataset("toy", {"train": split(n_train, 100), "test": split(n_test, 0)}, ["a", "b", "c"], "memory")


def test_every_grid_level_is_scored_for_features_and_pixels(tiny_unet_dir, tmp_path):
    backbone = load_backbone(str(tiny_unet_dir))
    grid = [0, 10, 60, 150]
    config = NoisyClassifierConfig(
        layer="mid_block", timesteps=grid, draws=2, head=NoiseConditionalConfig(epochs=3, batch_size=8)
    )
    table = run_noisy_classifier(backbone, _dataset(), tmp_path / "run", config, progress=False)
    top1 = table[table["metric"] == "top1"]
    for model in (backbone.model_id, PIXELS):
        rows = top1[top1["model"] == model]
        assert sorted(rows["t"]) == grid and rows["value"].between(0, 1).all()
        assert (rows["n_eval"] == 12).all() and (rows["probe"] == "noise-conditional").all()
    assert set(top1[top1["model"] == PIXELS]["layer"]) == {"pixels"}
    assert (tmp_path / "run" / "accuracy_vs_sigma.png").stat().st_size > 0
    assert len(read_table(tmp_path / "run" / "results.csv")) == len(table)
    # A second run reuses the finished cache rather than refusing or recomputing it.
    again = run_noisy_classifier(backbone, _dataset(), tmp_path / "run", config, progress=False)
    np.testing.assert_allclose(again["value"], table["value"])


def test_noisy_pixels_are_the_variance_preserving_mix(tiny_unet_dir):
    backbone = load_backbone(str(tiny_unet_dir))
    data = _dataset().splits["test"]
    ids = data.index
    got = noisy_pixels(
        backbone, data.images, ids, [0, 60], draws=2, seed=split_seed(0, "test"), fit="pad", batch_size=5
    )
    assert got.shape == (2, 2, len(ids), 16 * 16)
    # Independent: pad 12 -> 16 with the low value -1, scale 0..255 to -1..1, then mix.
    x0 = np.full((len(ids), 16, 16), -1.0)
    x0[:, 2:14, 2:14] = data.images[..., 0] / 255.0 * 2 - 1
    ab = backbone.schedule.point(60).alpha_bar
    noise = sample_noise((1, 16, 16), ids, seed=split_seed(0, "test"), t=60, draw=1).numpy().reshape(len(ids), -1)
    expected = math.sqrt(ab) * x0.reshape(len(ids), -1) + math.sqrt(1 - ab) * noise
    np.testing.assert_allclose(got[1, 1], expected, atol=1e-5)


def test_cli_refuses_two_layers(tiny_unet_dir, tmp_path, capsys):
    code = main(
        [
            "noisy-classifier",
            "--model",
            str(tiny_unet_dir),
            "--data",
            "digits",
            "--layer",
            "mid_block,0",
            "--out",
            str(tmp_path / "x"),
            "--train-limit",
            "30",
            "--test-limit",
            "20",
        ]
    )
    assert code == 2 and "exactly one" in capsys.readouterr().err
