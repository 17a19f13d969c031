"""The training core shared by pretraining and fine-tuning: order, step randomness, schedule, saves."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from probekit.core.errors import ProbekitError
from probekit.core.training import EpochOrder, atomic_save, load_state, lr_factor, step_generator


def test_an_epoch_visits_every_image_once_and_epochs_differ():
    order = EpochOrder(10, 4, seed=3, stream=-4, drop_last=False)
    assert order.steps_per_epoch == 3
    epoch0 = np.concatenate([order.batch(s).numpy() for s in range(3)])
    epoch1 = np.concatenate([order.batch(s).numpy() for s in range(3, 6)])
    assert sorted(epoch0) == list(range(10)) == sorted(epoch1) and not np.array_equal(epoch0, epoch1)
    again = EpochOrder(10, 4, seed=3, stream=-4, drop_last=False)
    assert np.array_equal(again.batch(4).numpy(), order.batch(4).numpy())  # a pure function of (seed, step)
    assert not np.array_equal(EpochOrder(10, 4, seed=3, stream=-1, drop_last=False).batch(0), order.batch(0))


def test_drop_last_keeps_whole_batches_and_refuses_fewer_images_than_one():
    order = EpochOrder(10, 4, seed=0, stream=-1, drop_last=True)
    assert order.steps_per_epoch == 2 and all(len(order.batch(s)) == 4 for s in range(6))
    with pytest.raises(ProbekitError, match="fewer than one batch of 4"):
        EpochOrder(3, 4, seed=0, stream=-1, drop_last=True)


def test_step_generators_depend_on_seed_step_and_stream_only():
    draw = lambda *a: torch.rand(3, generator=step_generator(*a))
    assert torch.equal(draw(1, 5, -2), draw(1, 5, -2))
    assert not torch.equal(draw(1, 5, -2), draw(1, 6, -2)) and not torch.equal(draw(1, 5, -2), draw(1, 5, -3))


def test_learning_rate_warms_up_then_holds_or_decays_as_a_cosine():
    assert [lr_factor(s, 4) for s in range(6)] == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
    assert lr_factor(0, 0) == 1.0
    assert lr_factor(2, 2, 10) == 1.0 and lr_factor(10, 2, 10) == pytest.approx(0.0, abs=1e-12)
    assert lr_factor(6, 2, 10) == pytest.approx(0.5 * (1 + math.cos(math.pi * 4 / 8)))


def test_states_save_atomically_and_a_broken_one_is_a_one_line_error(tmp_path):
    path = tmp_path / "state.pt"
    atomic_save({"w": torch.arange(3)}, path)
    assert torch.equal(load_state(path, "cpu")["w"], torch.arange(3)) and not (tmp_path / "state.pt.tmp").exists()
    path.write_bytes(path.read_bytes()[:20])
    with pytest.raises(ProbekitError, match=r"cannot resume from .*state\.pt .*delete it to start the run over") as err:
        load_state(path, "cpu")
    assert "\n" not in str(err.value)
