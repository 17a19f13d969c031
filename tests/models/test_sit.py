"""SiT checkpoints (original .pt format: DiT's state-dict names) on the flow-matching schedule.

The reference network is the plain-torch DiT transcription of ``test_dit`` (SiT's forward is the
same); SiT feeds its own time, ``1 - s`` for noise fraction ``s``, to the timestep embedder.
"""

import numpy as np
import pytest
import torch

from probekit.core.errors import ProbekitError
from probekit.core.pooling import Pooling
from probekit.models import load_backbone
from probekit.models.dit import SiTBackbone
from tests.models.test_dit import CLASSES, DEPTH, HEADS, RefDiT, _latents, _names, _tiny_vae


@pytest.fixture(scope="module")
def sit(tmp_path_factory):
    root = tmp_path_factory.mktemp("sit")
    ref = RefDiT(seed=3)
    torch.save(ref.state_dict(), root / "SiT-tiny.pt")
    _tiny_vae().save_pretrained(root / "vae")
    backbone = load_backbone(f"sit:{root / 'SiT-tiny.pt'}?heads={HEADS}&vae={root / 'vae'}")
    return ref, backbone, root


def test_features_match_the_reference_at_sits_own_time(sit):
    ref, backbone, _ = sit
    assert isinstance(backbone, SiTBackbone) and backbone.framework == "sit"
    x = _latents()
    for t in (0, 300, 1000):
        point = backbone.schedule.point(t)
        feats = backbone.features(x, point, _names(), Pooling())
        reference = ref.blocks_out(x, 1.0 - t / 1000, CLASSES)  # SiT time: 1 = data, 0 = noise; null class
        for i, name in enumerate(_names()):
            np.testing.assert_allclose(feats[name].numpy(), reference[i].numpy().mean(axis=1), rtol=1e-4, atol=1e-5)


def test_latents_are_noised_on_the_linear_path(sit):
    _, backbone, _ = sit
    x0, eps = _latents(seed=1), _latents(seed=2)
    point = backbone.schedule.point(250)
    np.testing.assert_allclose(
        backbone.schedule.add_noise(x0, eps, point).numpy(), (0.75 * x0 + 0.25 * eps).numpy(), rtol=1e-6
    )
    assert point.sigma == pytest.approx(0.25 / 0.75) and point.logsnr == pytest.approx(2 * np.log(3.0))
    assert "1 - t/T" in backbone.schedule.describe()
    assert len(backbone.layers()) == DEPTH


def test_sit_spec_errors(sit, tmp_path):
    _, _, root = sit
    with pytest.raises(ProbekitError, match="not found"):
        load_backbone(f"sit:{tmp_path / 'absent.pt'}")
    with pytest.raises(ProbekitError, match="original SiT checkpoint file"):
        load_backbone(f"sit:{root / 'vae'}")
    with pytest.raises(ProbekitError, match=r"not DiT-S/2 \(12, 384, 2\)"):  # SiT names parse to the same sizes
        load_backbone(f"sit:{root / 'SiT-tiny.pt'}?config=SiT-S/2&vae={root / 'vae'}")
