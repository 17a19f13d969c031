import json

import pandas as pd
import pytest

from probekit.analyses.sweep import SweepConfig, best_row, find_checkpoints, run_sweep
from probekit.core.errors import ProbekitError
from probekit.evaluate.results import read_table
from tests.conftest import make_tiny_unet
from tests.features.test_extraction import _dataset


def _train_run(root, steps=(2, 4), batch_size=8):
    """A `probekit train` run folder: checkpoints/step-N (diffusers layout) and record.json."""
    for i, step in enumerate(steps):
        folder = root / "checkpoints" / f"step-{step:07d}"
        make_tiny_unet(seed=i).save_pretrained(folder)
        (folder / "scheduler_config.json").write_text(json.dumps({"num_train_timesteps": 200}))
    (root / "record.json").write_text(json.dumps({"steps": steps[-1], "recipe": {"batch_size": batch_size}}))
    return root


def test_find_checkpoints_layouts(tmp_path):
    run = _train_run(tmp_path / "run")
    found = find_checkpoints(str(run))
    assert [(c.label, c.step, c.images_seen) for c in found] == [("step-0000002", 2, 16), ("step-0000004", 4, 32)]
    ddae = tmp_path / "ddae"
    ddae.mkdir()
    for epoch in (99, 9, 1999):
        (ddae / f"model_{epoch}.pth").write_bytes(b"")
    found = find_checkpoints(f"ddae:cfg.yaml:{ddae}", images_per_epoch=100)
    assert [(c.step, c.images_seen) for c in found] == [(9, 1000), (99, 10000), (1999, 200000)]
    assert found[0].spec == f"ddae:cfg.yaml:{ddae}/model_9.pth"
    with pytest.raises(ProbekitError, match="no checkpoints"):
        find_checkpoints(str(tmp_path / "ddae"))


@pytest.mark.slow
def test_sweep_summarises_each_checkpoint_and_resumes(tmp_path, monkeypatch):
    run = _train_run(tmp_path / "run")
    config = SweepConfig(timesteps=[0, 20], layers="down_blocks.0.resnets.0,mid_block", draws=2, probe="logreg")
    summary = run_sweep(
        find_checkpoints(str(run)), lambda: _dataset(n_train=30, n_test=15), tmp_path / "out", config, progress=False
    )
    assert list(summary["images_seen"]) == [16, 32]
    for row in summary.itertuples():
        results = read_table(tmp_path / "out" / row.label / "results.csv")
        chosen = best_row(results, "logreg")
        assert row.chosen_on == "val"
        assert (row.t, row.layer) == (chosen["t"], chosen["layer"])
        align = read_table(tmp_path / "out" / row.label / "align.csv")
        at = align[(align["t"] == row.t) & (align["layer"] == row.layer)].set_index("metric")["value"]
        assert row.alignment == pytest.approx(at["alignment"]) and row.uniformity == pytest.approx(at["uniformity"])
    assert (tmp_path / "out" / "sweep.png").stat().st_size > 0
    assert (tmp_path / "out" / summary["label"][0] / "results.predictions.npz").is_file()
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "out" / "sweep.csv"), summary, check_dtype=False)

    # A second run finds every checkpoint done and neither extracts nor probes again.
    import probekit.features.extraction
    import probekit.probes.run

    def refuse(*_a, **_k):
        raise AssertionError("re-ran a finished checkpoint")

    monkeypatch.setattr(probekit.features.extraction, "extract", refuse)
    monkeypatch.setattr(probekit.probes.run, "probe_cache", refuse)
    again = run_sweep(find_checkpoints(str(run)), lambda: _dataset(), tmp_path / "out", config, progress=False)
    pd.testing.assert_frame_equal(again, summary)


def test_best_row_prefers_validation():
    base = dict(
        model="m",
        dataset="d",
        sigma=0.1,
        logsnr=1.0,
        alpha_bar=0.5,
        stage="up",
        depth=1,
        probe="linear",
        params="",
        metric="top1",
        ci_low=0.0,
        ci_high=1.0,
        n_train=1,
        n_eval=1,
    )
    rows = pd.DataFrame(
        [
            dict(base, t=1, layer="a", split="val", value=0.9),
            dict(base, t=1, layer="a", split="test", value=0.6),
            dict(base, t=2, layer="a", split="val", value=0.5),
            dict(base, t=2, layer="a", split="test", value=0.95),
        ]
    )
    row = best_row(rows, "linear")
    assert (row["t"], row["value"], row["val_value"], row["chosen_on"]) == (1, 0.6, 0.9, "val")


def test_cli_names_a_missing_run(tmp_path, capsys):
    from probekit.cli import main

    code = main(["sweep", "--run", str(tmp_path / "nothing"), "--data", "digits", "--out", str(tmp_path / "o")])
    assert code == 2 and "not a folder of checkpoints" in capsys.readouterr().err
