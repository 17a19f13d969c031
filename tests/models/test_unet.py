import numpy as np
import pytest
import torch

from probekit.core.pooling import Pooling
from probekit.core.schedule import DDPMSchedule
from probekit.models import UNetBackbone
from tests.conftest import make_tiny_unet


@pytest.fixture()
def backbone() -> UNetBackbone:
    return UNetBackbone(make_tiny_unet(), DDPMSchedule(), model_id="tiny")


def _reference_activations(net, x, t):
    """Independent read-out: plain forward hooks on every named module, full forward."""
    outputs, handles = {}, []
    for name, module in net.named_modules():

        def hook(_m, _a, out, name=name):
            out = out[0] if isinstance(out, tuple) else out
            if torch.is_tensor(out):
                outputs[name] = out.detach().clone()

        handles.append(module.register_forward_hook(hook))
    with torch.no_grad():
        net(x, torch.full((x.shape[0],), float(t)))
    for h in handles:
        h.remove()
    return outputs


def test_registry_lists_down_mid_up_blocks_in_forward_order(backbone):
    layers = backbone.layers()
    names = [layer.name for layer in layers]
    assert [layer.depth for layer in layers] == list(range(len(layers)))
    stages = [layer.stage for layer in layers]
    assert stages == sorted(stages, key=["down", "mid", "up"].index)  # down, then mid, then up
    for expected in (
        "down_blocks.0.resnets.0",
        "down_blocks.0",
        "down_blocks.1.attentions.0",
        "mid_block.attentions.0",
        "up_blocks.0.attentions.1",
        "up_blocks.1.resnets.1",
    ):
        assert expected in names
    # resnet -> attention order inside an attention block
    assert names.index("down_blocks.1.resnets.0") < names.index("down_blocks.1.attentions.0")
    aliases = {alias: layer.name for layer in layers for alias in layer.aliases}
    assert aliases["mid_block"] == "mid_block.resnets.1"
    assert aliases["down_blocks.1"] == "down_blocks.1.attentions.0"  # last down block has no downsampler


def test_channels_and_resolution_match_the_real_activations(backbone):
    x = torch.randn(2, 1, 16, 16)
    reference = _reference_activations(backbone.net, x, 5)
    for layer in backbone.layers():
        activation = reference[layer.name]
        assert layer.channels == activation.shape[1]
        assert layer.resolution == f"{activation.shape[2]}x{activation.shape[3]}"


def test_features_equal_hooked_full_forward_mean(backbone):
    x = torch.randn(3, 1, 16, 16)
    point = backbone.schedule.point(7)
    names = backbone.default_layers()
    feats = backbone.features(x, point, names, Pooling())
    reference = _reference_activations(backbone.net, x, 7)
    for name in names:
        np.testing.assert_allclose(feats[name].numpy(), reference[name].numpy().mean(axis=(2, 3)), rtol=1e-5, atol=1e-6)


def test_forward_stops_after_deepest_requested_layer(backbone):
    calls = []
    handles = [
        backbone.net.up_blocks[0].register_forward_pre_hook(lambda *_: calls.append("up entered")),
        backbone.net.conv_out.register_forward_hook(lambda *_: calls.append("conv_out")),
    ]
    try:
        backbone.features(
            torch.randn(2, 1, 16, 16), backbone.schedule.point(3), ["down_blocks.0.resnets.0", "mid_block"], Pooling()
        )
        assert calls == []
        backbone.features(torch.randn(2, 1, 16, 16), backbone.schedule.point(3), ["up_blocks.0.resnets.0"], Pooling())
        assert calls == ["up entered"]
    finally:
        for handle in handles:
            handle.remove()


def test_hooks_are_removed_after_an_exception(backbone):
    def boom(*_args, **_kwargs):
        raise RuntimeError("boom")

    backbone.net.mid_block.attentions[0].forward = boom
    with pytest.raises(RuntimeError, match="boom"):
        backbone.features(torch.randn(1, 1, 16, 16), backbone.schedule.point(0), backbone.default_layers(), Pooling())
    assert all(not module._forward_hooks for module in backbone.net.modules())


def test_features_do_not_depend_on_batch_composition(backbone):
    x = torch.randn(6, 1, 16, 16)
    point = backbone.schedule.point(50)
    whole = backbone.features(x, point, ["mid_block", "up_blocks.1.resnets.1"], Pooling())
    halves = [
        backbone.features(x[i : i + 3], point, ["mid_block.resnets.1", "up_blocks.1.resnets.1"], Pooling())
        for i in (0, 3)
    ]
    np.testing.assert_allclose(
        whole["mid_block"].numpy(), torch.cat([h["mid_block.resnets.1"] for h in halves]).numpy(), rtol=1e-5, atol=1e-6
    )
