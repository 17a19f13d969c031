"""--prompt: class-name templates, their refusals, and an extraction whose every image is
conditioned on its own class name (checked against per-sample forwards with the labels by hand).
"""

import json

import numpy as np
import pytest
import torch

from probekit.cli import main
from probekit.core.errors import ProbekitError
from probekit.core.noise import sample_noise, split_seed
from probekit.core.pooling import Pooling
from probekit.features.cache import FeatureCache
from probekit.models import load_backbone
from probekit.models.sd import class_prompts


def test_class_names_fill_the_template():
    assert class_prompts("a photo of a {class}", ["cat", "dog"]) == ["a photo of a cat", "a photo of a dog"]
    assert class_prompts("{class} in {{braces}}", ["cat"]) == ["cat in {braces}"]


@pytest.mark.parametrize(
    "template, names, message",
    [
        ("a photo", ["cat"], "has no {class} placeholder"),
        ("a {class} by {artist}", ["cat"], r"unknown placeholder\(s\) {artist}"),
        ("a {} {class}", ["cat"], r"unknown placeholder\(s\) {}"),
        ("a {class", ["cat"], "is not a template"),
        ("a {class}", ["0", "1", "2"], "classes have no names"),
        ("a {class}", [], "classes have no names"),
    ],
)
def test_bad_templates_and_nameless_classes_are_refused(template, names, message):
    with pytest.raises(ProbekitError, match=message):
        class_prompts(template, names)


@pytest.fixture(scope="module")
def named_npz(tmp_path_factory):
    rng = np.random.default_rng(0)
    path = tmp_path_factory.mktemp("data") / "pets.npz"
    np.savez(
        path,
        x=rng.integers(0, 256, size=(9, 16, 16, 3), dtype=np.uint8),
        y=np.arange(9) % 3,
        x_test=rng.integers(0, 256, size=(6, 16, 16, 3), dtype=np.uint8),
        y_test=np.array([2, 0, 1, 1, 0, 2]),
        class_names=np.array(["cat", "dog", "bird"]),
    )
    return str(path)


@pytest.mark.slow
def test_extract_conditions_each_image_on_its_class_name(sd_pipe, named_npz, tmp_path):
    root, _ = sd_pipe
    out, plain = tmp_path / "prompt.h5", tmp_path / "plain.h5"
    common = [
        "--model",
        f"sd:{root}",
        "--data",
        named_npz,
        "--timesteps",
        "0,300",
        "--layers",
        "mid_block.resnets.1",
        "--batch-size",
        "4",
        "--quiet",
    ]
    assert main(["extract", *common, "--prompt", "a photo of a {class}", "--out", str(out)]) == 0
    assert main(["extract", *common, "--out", str(plain)]) == 0
    with FeatureCache(out) as cache, FeatureCache(plain) as other:
        assert cache.attrs["prompt"] == "a photo of a {class}" and other.attrs["prompt"] == ""
        assert json.loads(cache.file.attrs["plan"])["prompt"] == "a photo of a {class}"
        stored = cache.file["test/feats/mid_block.resnets.1"][1, 0]
        labels = cache.labels("test")
        assert not np.allclose(stored, other.file["test/feats/mid_block.resnets.1"][1, 0])

    backbone = load_backbone(f"sd:{root}")
    backbone.set_prompt("a photo of a {class}", ["cat", "dog", "bird"])
    images = torch.from_numpy(np.load(named_npz)["x_test"]).permute(0, 3, 1, 2).float() / 127.5 - 1
    x0 = backbone.encode(images)
    point = backbone.schedule.point(300)
    noise = sample_noise(x0.shape[1:], np.arange(6), seed=split_seed(0, "test"), t=300, draw=0)
    x_t = np.sqrt(point.alpha_bar) * x0 + np.sqrt(1 - point.alpha_bar) * noise
    for i in range(6):  # one image at a time, its label given by hand
        feats = backbone.features(
            x_t[i : i + 1], point, ["mid_block.resnets.1"], Pooling(), labels=torch.tensor([labels[i]])
        )
        np.testing.assert_allclose(stored[i], feats["mid_block.resnets.1"][0].numpy(), rtol=1e-4, atol=1e-5)


def test_prompt_refusals_are_one_line(sd_pipe, tiny_unet_dir, tmp_path, capsys):
    root, _ = sd_pipe
    nameless = tmp_path / "nameless.npz"
    np.savez(nameless, x=np.zeros((6, 16, 16, 3), dtype=np.uint8), y=np.arange(6) % 2)
    assert (
        main(
            [
                "extract",
                "--model",
                f"sd:{root}",
                "--data",
                str(nameless),
                "--prompt",
                "a {class}",
                "--out",
                str(tmp_path / "a.h5"),
                "--quiet",
            ]
        )
        == 2
    )
    assert "classes have no names" in capsys.readouterr().err
    assert (
        main(
            [
                "extract",
                "--model",
                str(tiny_unet_dir),
                "--data",
                str(nameless),
                "--prompt",
                "a {class}",
                "--out",
                str(tmp_path / "b.h5"),
                "--quiet",
            ]
        )
        == 2
    )
    assert "--prompt applies to text-conditioned models (sd:) only" in capsys.readouterr().err
