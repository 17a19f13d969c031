import pytest
import torch
from safetensors.torch import load_file

from probekit.core.errors import ProbekitError
from probekit.models import load_backbone
from probekit.train import export_checkpoint, train
from tests.train.test_loop import _config, tiny_npz  # noqa: F401  (fixture)


def test_export_copies_the_model_and_halves_intermediates(tiny_npz, tmp_path):  # noqa: F811
    train(_config(tiny_npz), tmp_path / "run", progress=False)
    dest = export_checkpoint(tmp_path / "run", tmp_path / "ship", intermediate_steps=[3])
    final = load_file(str(dest / "diffusion_pytorch_model.safetensors"))
    source = load_file(str(tmp_path / "run" / "model" / "diffusion_pytorch_model.safetensors"))
    assert all(torch.equal(final[k], source[k]) for k in source)
    half = load_file(str(dest / "intermediate" / "step-0000003" / "diffusion_pytorch_model.safetensors"))
    at3 = load_file(str(tmp_path / "run" / "checkpoints" / "step-0000003" / "diffusion_pytorch_model.safetensors"))
    assert all(half[k].dtype == torch.float16 and torch.equal(half[k], at3[k].half()) for k in at3)
    card = (dest / "README.md").read_text()
    assert "images seen | 48" in card and "samples.png" in card
    assert load_backbone(str(dest / "intermediate" / "step-0000003")).layers()
    with pytest.raises(ProbekitError, match="no checkpoint at step 5"):
        export_checkpoint(tmp_path / "run", tmp_path / "ship2", intermediate_steps=[5])
