import json

import numpy as np
import pandas as pd
import pytest
import torch

from probekit.analyses.finetune import FinetuneConfig, Finetuner, TruncatedClassifier, augment, cell_from_results
from probekit.core.errors import ProbekitError
from probekit.data.base import ImageDataset, ImageSplit
from probekit.evaluate.predictions import predictions_path, read_predictions
from probekit.evaluate.results import read_table
from probekit.models import load_backbone

LAYER = "down_blocks.1.resnets.0"


def _dataset(n_train=48, n_test=16, size=16):
    """Three classes that differ in brightness: learnable in a few steps."""
    rng = np.random.default_rng(0)

    def split(n, offset):
        labels = (np.arange(n) % 3).astype(np.int64)
        images = (rng.integers(0, 50, size=(n, size, size, 1)) + 90 * labels[:, None, None, None]).astype(np.uint8)
        return ImageSplit(images=images, labels=labels, index=np.arange(n, dtype=np.int64) + offset)

    return ImageDataset("toy", {"train": split(n_train, 0), "test": split(n_test, 0)}, ["a", "b", "c"], "memory")


def _config(**kw):
    base = dict(
        timestep=5,
        layer=LAYER,
        epochs=3,
        batch_size=8,
        lr_head=1e-2,
        lr_body=1e-3,
        warmup_epochs=0.5,
        val_fraction=0.25,
    )
    return FinetuneConfig(**{**base, **kw})


@pytest.mark.slow
def test_loss_goes_down_and_outputs_are_written(tiny_unet_dir, tmp_path):
    tuner = Finetuner(load_backbone(str(tiny_unet_dir)), _dataset(), tmp_path / "ft", _config(epochs=6))
    table = tuner.run(progress=False)
    curves = pd.read_csv(tmp_path / "ft" / "curves.csv")
    assert list(curves["epoch"]) == [1, 2, 3, 4, 5, 6]
    # 36 train images in batches of 8 (the last one partial): every epoch sees each image once.
    assert list(curves["images_seen"]) == [36 * epoch for epoch in range(1, 7)]
    assert curves["train_loss"].iloc[-1] < 0.7 * curves["train_loss"].iloc[0]
    top1 = table[table["metric"] == "top1"].set_index("split")
    row = top1.loc["test"]
    assert row["probe"] == "finetune" and row["t"] == 5 and row["layer"] == LAYER and row["n_eval"] == 16
    assert top1.loc["val", "value"] == pytest.approx(curves["val_top1"].max()) and top1.loc["val", "n_eval"] == 12
    assert row["n_train"] == 36  # 48 minus the 25 % validation split
    # The chosen epoch is the best validation epoch (first one on ties).
    assert tuner.chosen_epoch == int(curves["epoch"][curves["val_top1"].idxmax()])
    for name in ("best.pt", "state.pt", "curves.png", "record.json"):
        assert (tmp_path / "ft" / name).stat().st_size > 0
    record = json.loads((tmp_path / "ft" / "record.json").read_text())
    trained = sum(p.numel() for p in tuner.optimizer.param_groups[0]["params"])
    assert record["parameters"]["body_trained"] == trained < record["parameters"]["body_total"]
    assert record["steps"] == 6 * 5  # 36 train images in batches of 8
    assert len(read_table(tmp_path / "ft" / "results.csv")) == len(table)
    sidecar = read_predictions(predictions_path(tmp_path / "ft" / "results.csv"))
    np.testing.assert_array_equal(sidecar.labels, _dataset().splits["test"].labels)
    assert sidecar.correct("finetune", 5, LAYER).mean() == pytest.approx(row["value"])


def test_resume_is_exact(tiny_unet_dir, tmp_path):
    straight = Finetuner(load_backbone(str(tiny_unet_dir)), _dataset(), tmp_path / "a", _config())
    straight.run(progress=False)
    first = Finetuner(load_backbone(str(tiny_unet_dir)), _dataset(), tmp_path / "b", _config())
    assert first.run(progress=False, stop_at_epoch=1) is None
    resumed = Finetuner(load_backbone(str(tiny_unet_dir)), _dataset(), tmp_path / "b", _config())
    resumed.run(progress=False)
    a = torch.load(tmp_path / "a" / "state.pt", weights_only=True)
    b = torch.load(tmp_path / "b" / "state.pt", weights_only=True)
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    pd.testing.assert_frame_equal(
        pd.read_csv(tmp_path / "a" / "curves.csv"), pd.read_csv(tmp_path / "b" / "curves.csv")
    )
    other = Finetuner(load_backbone(str(tiny_unet_dir)), _dataset(), tmp_path / "b", _config(lr_body=5e-4))
    with pytest.raises(ProbekitError, match="another recipe"):
        other.run(progress=False)


@pytest.mark.parametrize("changed", [dict(n_train=60), dict(n_test=20)])
def test_resume_refuses_other_images(tiny_unet_dir, tmp_path, changed):
    first = Finetuner(load_backbone(str(tiny_unet_dir)), _dataset(), tmp_path / "r", _config())
    assert first.run(progress=False, stop_at_epoch=1) is None
    other = Finetuner(load_backbone(str(tiny_unet_dir)), _dataset(**changed), tmp_path / "r", _config())
    with pytest.raises(ProbekitError, match="other images"):
        other.run(progress=False)


def test_nothing_past_the_layer_runs(tiny_unet_dir):
    backbone = load_backbone(str(tiny_unet_dir))
    depth = {layer.name: layer.depth for layer in backbone.layers()}
    model = TruncatedClassifier(backbone, LAYER, num_classes=3)
    calls: dict[str, int] = {}
    handles = [
        module.register_forward_hook(lambda *_a, name=name: calls.__setitem__(name, calls.get(name, 0) + 1))
        for name, module in backbone.net.named_modules()
        if name
    ]
    try:
        logits = model(torch.zeros(2, 1, 16, 16), backbone.schedule.point(5))
    finally:
        for handle in handles:
            handle.remove()
    assert logits.shape == (2, 3)
    later = [name for name, d in depth.items() if d > depth[LAYER]] + ["conv_out", "conv_norm_out"]
    assert later and all(calls.get(name, 0) == 0 for name in later), {n: calls.get(n) for n in later}
    assert all(calls.get(name, 0) == 1 for name, d in depth.items() if d <= depth[LAYER])


def test_only_parameters_before_the_cut_are_trained(tiny_unet_dir, tmp_path):
    tuner = Finetuner(load_backbone(str(tiny_unet_dir)), _dataset(), tmp_path / "p", _config())
    body = {id(p) for p in tuner.optimizer.param_groups[0]["params"]}
    names = {name for name, p in tuner.model.body.named_parameters() if id(p) in body}
    assert any(name.startswith("down_blocks.0") for name in names)
    assert not any(name.startswith(("up_blocks", "mid_block", "conv_out")) for name in names)
    assert [g["lr"] for g in tuner.optimizer.param_groups] != [0, 0]


def test_augment_is_a_padded_crop_and_flip():
    x = torch.arange(2 * 1 * 4 * 4, dtype=torch.float32).reshape(2, 1, 4, 4)
    out = augment(x, torch.tensor([[0, 0], [2, 2]]), torch.tensor([False, True]), padding=2, low=-1.0)
    padded = np.pad(x.numpy(), ((0, 0), (0, 0), (2, 2), (2, 2)), constant_values=-1.0)
    np.testing.assert_array_equal(out[0].numpy(), padded[0, :, 0:4, 0:4])
    np.testing.assert_array_equal(out[1].numpy(), padded[1, :, 2:6, 2:6][..., ::-1])


def test_from_results_needs_validation_rows(tmp_path):
    from probekit.evaluate.results import COLUMNS

    row = dict(
        model="m",
        dataset="d",
        t=5,
        sigma=0.1,
        logsnr=4.0,
        alpha_bar=0.9,
        layer="L",
        stage="up",
        depth=3,
        probe="linear",
        params="",
        metric="top1",
        split="test",
        value=0.8,
        ci_low=0.7,
        ci_high=0.9,
        n_train=10,
        n_eval=10,
    )
    pd.DataFrame([row], columns=list(COLUMNS)).to_csv(tmp_path / "r.csv", index=False)
    with pytest.raises(ProbekitError, match="validation"):
        cell_from_results(tmp_path / "r.csv")
    rows = [
        dict(row, split="val", value=0.6),
        dict(row, split="test", t=9, value=0.9),
        dict(row, split="val", t=7, layer="K", value=0.7),
        dict(row, split="test", t=7, layer="K", value=0.5),
    ]
    pd.DataFrame(rows).to_csv(tmp_path / "r.csv", index=False)
    assert cell_from_results(tmp_path / "r.csv") == (7, "K")
