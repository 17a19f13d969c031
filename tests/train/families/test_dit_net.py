import numpy as np
import torch

from probekit.core.types import GridPoint
from probekit.models import load_backbone
from probekit.models.dit import infer_original_shape, original_keys
from probekit.train.families.dit_net import DiTNet, sincos_2d, timestep_features


def _randomised(seed: int = 0) -> DiTNet:
    torch.manual_seed(seed)
    net = DiTNet(input_size=16, in_channels=1, patch_size=4, hidden_size=32, depth=2, num_heads=2)
    with torch.no_grad():  # DiT zero-initialises its output and gates: give every weight a value
        for p in net.parameters():
            if p.requires_grad:
                p.normal_(0, 0.1)
    return net


def test_the_state_dict_is_an_original_dit_one():
    net = _randomised()
    state = net.state_dict()
    assert set(state) == set(original_keys(2))
    shape = infer_original_shape(state)
    assert (shape.depth, shape.hidden, shape.patch, shape.in_channels, shape.out_channels) == (2, 32, 4, 1, 1)
    assert (shape.num_classes, shape.latent_size) == (1, 16)


def test_sincos_positions_match_dits_formula():
    hidden, side = 16, 3
    table = sincos_2d(hidden, side)[0].numpy()
    omega = 1.0 / 10000 ** (np.arange(4) / 4.0)
    for row in range(side):
        for col in range(side):
            token = table[row * side + col]
            # first half: the column coordinate, [sin, cos]; second half: the row
            np.testing.assert_allclose(token[:4], np.sin(col * omega), atol=1e-6)
            np.testing.assert_allclose(token[4:8], np.cos(col * omega), atol=1e-6)
            np.testing.assert_allclose(token[8:12], np.sin(row * omega), atol=1e-6)
            np.testing.assert_allclose(token[12:], np.cos(row * omega), atol=1e-6)


def test_timestep_features_are_cos_then_sin_of_dits_frequencies():
    t = torch.tensor([0.0, 3.0, 999.0])
    features = timestep_features(t, dim=8).numpy()
    freqs = np.exp(-np.log(10_000) * np.arange(4) / 4)
    expected = np.concatenate([np.cos(t.numpy()[:, None] * freqs), np.sin(t.numpy()[:, None] * freqs)], axis=1)
    np.testing.assert_allclose(features, expected, rtol=1e-5, atol=1e-5)


def test_dit_and_sit_loaders_run_exactly_the_trained_network(tmp_path):
    net = _randomised().eval()
    torch.save(net.state_dict(), tmp_path / "net.pt")
    x = torch.randn(3, 1, 16, 16)
    dit = load_backbone(f"dit:{tmp_path / 'net.pt'}?heads=2&vae=none")
    assert dit.input_size == (16, 16) and dit.input_channels == 1 and dit.vae is None
    for t in (0, 37, 999):
        point = dit.schedule.point(t)
        with torch.no_grad():
            torch.testing.assert_close(dit.forward(x, point), net(x, torch.full((3,), float(t))), rtol=1e-5, atol=1e-5)
    sit = load_backbone(f"sit:{tmp_path / 'net.pt'}?heads=2&vae=none")
    point = sit.schedule.point(250)  # noise fraction 0.25: SiT's time 0.75
    assert point.model_input == 0.75
    with torch.no_grad():
        torch.testing.assert_close(sit.forward(x, point), net(x, torch.full((3,), 0.75)), rtol=1e-5, atol=1e-5)
    # the network's output does depend on t (a loader that dropped it would pass the lines above only by luck)
    assert not torch.allclose(dit.forward(x, GridPoint(0, 0.0, 1.0, 0.0, 0.0)), dit.forward(x, dit.schedule.point(999)))
