"""``probekit train --ship``: a trained family packed into a folder that ``layers`` and ``extract`` read."""

import json

import h5py
import pytest
import torch
import yaml

from probekit.cli import main
from tests.train.families.conftest import NETWORKS, blobs_npz  # noqa: F401  (fixture)


@pytest.mark.parametrize("family", ["dit", "edm", "flow"])
def test_a_shipped_family_lists_its_layers_and_extracts(family, blobs_npz, tmp_path, capsys):  # noqa: F811
    recipe = {"family": family, "batch_size": 16, "warmup_steps": 1, "sample_count": 4, "sample_steps": 2,
              **NETWORKS[family]}  # fmt: skip
    (tmp_path / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    run, ship = tmp_path / "run", tmp_path / "ship"
    args = ["train", "--config", str(tmp_path / "recipe.yaml"), "--data", blobs_npz, "--total-steps", "2"]
    assert main([*args, "--checkpoint-every", "1", "--out", str(run), "--quiet", "--ship", str(ship)]) == 0
    record = json.loads((ship / "record.json").read_text())
    spec = record["model_spec"].replace(str(run / "model"), str(ship))
    card = (ship / "README.md").read_text()
    assert f"`probekit extract --model {spec} ...`" in card and "| steps | 2 (recipe: 2) |" in card
    weights = [p for p in ship.iterdir() if p.suffix in (".pt", ".pth")]
    state = torch.load(weights[0], weights_only=True)
    tensors = state["EMA"] if family == "edm" else state
    assert {t.dtype for t in tensors.values() if t.is_floating_point()} == {torch.float16}
    capsys.readouterr()
    assert main(["layers", "--model", spec]) == 0
    assert ("transformer_blocks.1" if family != "edm" else "mid_attn") in capsys.readouterr().out
    out = tmp_path / "f.h5"
    assert (
        main(
            [
                "extract",
                "--model",
                spec,
                "--data",
                blobs_npz,
                "--train-limit",
                "8",
                "--test-limit",
                "4",
                "--out",
                str(out),
                "--quiet",
            ]
        )
        == 0
    )
    with h5py.File(out, "r") as f:
        assert f["grid/sigma"].shape[0] >= 2 and f["train/labels"].shape == (8,)
