import pytest
import torch
from torch import nn

from probekit.core.pooling import Pooling
from probekit.models.trace import run_traced, trace


def _net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))


def test_early_stop_skips_later_modules_and_removes_hooks():
    net = _net()
    calls = []
    net[2].register_forward_hook(lambda *_: calls.append("last"))
    x = torch.randn(5, 4)
    got = run_traced(lambda: net(x), {"0": net[0], "1": net[1]}, Pooling(), stop_after="1")
    assert calls == []  # the forward ended after module "1"
    expected = torch.relu(x @ net[0].weight.T + net[0].bias)  # computed by hand
    torch.testing.assert_close(got["1"], expected)
    assert not net[0]._forward_hooks and not net[1]._forward_hooks


def test_hooks_are_removed_when_the_forward_fails():
    net = _net()
    with pytest.raises(RuntimeError):
        with trace({"0": net[0]}, Pooling()):
            net(torch.randn(2, 7))  # wrong width: the forward raises
    assert not net[0]._forward_hooks
