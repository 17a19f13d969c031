"""``probekit train --continue-from``: a new run going on from a shipped folder's step, every family."""

from __future__ import annotations

import csv
import json

import pytest
import torch

from probekit.core.errors import ProbekitError
from probekit.train import export_checkpoint, train
from probekit.train.families import get_family
from probekit.train.loop import build_network
from tests.train.families.conftest import tiny_config

FAMILIES = ["ddpm", "dit", "edm", "flow"]


def _rows(path):
    with path.open() as f:
        return list(csv.DictReader(f))


def _ship(config, tmp_path, name="first"):
    train(config, tmp_path / name, progress=False)
    return export_checkpoint(tmp_path / name, tmp_path / f"{name}-shipped", dtype=None)


@pytest.mark.slow
@pytest.mark.parametrize("family", FAMILIES)
def test_a_continued_run_takes_the_steps_an_uninterrupted_run_takes(family, blobs_npz, tmp_path):
    # With lr = 0 the weights never move, so the loss of step n depends only on the images, flips
    # and noise that step n draws: a continuation that replays them logs the straight run's losses.
    config = tiny_config(family, blobs_npz, lr=0.0, total_steps=3)
    shipped = _ship(config, tmp_path)
    longer = tiny_config(family, blobs_npz, lr=0.0, total_steps=6)
    train(longer, tmp_path / "straight", progress=False)
    train(longer, tmp_path / "continued", progress=False, continue_from=shipped)
    straight, continued = _rows(tmp_path / "straight" / "loss.csv"), _rows(tmp_path / "continued" / "loss.csv")
    assert [r["step"] for r in continued] == ["1", "2", "3", "4", "5", "6"]
    assert [r["loss"] for r in continued] == [r["loss"] for r in straight]


@pytest.mark.slow
@pytest.mark.parametrize("family", FAMILIES)
def test_continued_weights_start_from_the_shipped_ema_and_the_schedule_goes_on(family, blobs_npz, tmp_path):
    config = tiny_config(family, blobs_npz, lr=1e-3, warmup_steps=8, total_steps=3)
    shipped = _ship(config, tmp_path)
    out = tmp_path / "continued"
    longer = tiny_config(family, blobs_npz, lr=1e-3, warmup_steps=8, total_steps=6)
    train(longer, out, progress=False, stop_at=3, continue_from=shipped)
    # nothing trained yet: the state holds the shipped EMA weights, read here from the shipped file
    # through the network's own state dict
    state = torch.load(out / "state.pt", weights_only=True)
    reference = build_network(get_family(family), config)
    get_family(family).load_weights(reference, shipped)
    for key, tensor in reference.state_dict().items():
        assert torch.equal(state["model"][key], tensor), key
        assert torch.equal(state["ema"][key], tensor), key
    assert state["step"] == 3 and state["continued_from"]["step"] == 3
    train(longer, out, progress=False, continue_from=shipped)  # resumes: the seed is not redone
    lrs = {int(r["step"]): float(r["lr"]) for r in _rows(out / "loss.csv")}
    for step in (4, 5, 6):  # linear warm-up over 8 steps, hand-derived: lr (step + 1) / 8
        assert lrs[step] == pytest.approx(1e-3 * (step + 1) / 8, rel=1e-3)
    record = json.loads((out / "record.json").read_text())
    assert record["steps"] == 6 and record["continued_from"]["folder"] == str(shipped)
    card = (export_checkpoint(out, tmp_path / "again", intermediate_steps=[3]) / "README.md").read_text()
    assert "Continued at step 3" in card and (tmp_path / "again" / "intermediate" / "step-0000003").is_dir()


def test_another_recipe_or_too_few_steps_are_refused(blobs_npz, tmp_path):
    shipped = _ship(tiny_config("dit", blobs_npz, total_steps=3), tmp_path)
    with pytest.raises(ProbekitError, match=r"another recipe \(lr differ\)"):
        train(tiny_config("dit", blobs_npz, lr=1e-2, total_steps=6), tmp_path / "a", continue_from=shipped)
    with pytest.raises(ProbekitError, match="already has 3 steps"):
        train(tiny_config("dit", blobs_npz, total_steps=3), tmp_path / "b", continue_from=shipped)
    with pytest.raises(ProbekitError, match="not a folder shipped by probekit train"):
        train(tiny_config("dit", blobs_npz, total_steps=6), tmp_path / "c", continue_from=tmp_path)
