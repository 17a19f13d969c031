import numpy as np
import pytest

from probekit.probes import MinibatchConfig, ProbeTask, minibatch, train_minibatch_heads


def _task(slots=None, n=120, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    base = {key: (rng.standard_normal((n, 6)) + 2.0 * np.eye(6)[y]).astype(np.float32) for key in ("a", "b")}
    if slots:
        train = {
            key: np.stack([x + 0.1 * rng.standard_normal(x.shape).astype(np.float32) for _ in range(slots)])
            for key, x in base.items()
        }
    else:
        train = base
    yv = rng.integers(0, 3, 40)
    val = {key: (rng.standard_normal((40, 6)) + 2.0 * np.eye(6)[yv]).astype(np.float32) for key in ("a", "b")}
    return ProbeTask(
        train=train, y_train=y, evals={"val": val, "test": val}, y_evals={"val": yv, "test": yv}, num_classes=3
    )


SHORT = MinibatchConfig(epochs=4, batch_size=16, lr=5e-2)


def test_sample_protocol_draws_other_slots_in_other_epochs(monkeypatch):
    seen = []
    original = minibatch.slot_choice

    def spy(seed, epoch, n, slots):
        choice = original(seed, epoch, n, slots)
        seen.append((epoch, choice))
        return choice

    monkeypatch.setattr(minibatch, "slot_choice", spy)
    train_minibatch_heads(_task(slots=5), SHORT)
    assert [epoch for epoch, _ in seen] == [0, 1, 2, 3]
    assert all(c.min() >= 0 and c.max() < 5 for _, c in seen)
    assert not np.array_equal(seen[0][1], seen[1][1])
    assert len(np.unique(seen[0][1])) == 5  # every slot is used in one epoch over 120 images
    # a pure function of (seed, epoch)
    assert np.array_equal(original(0, 2, 120, 5), original(0, 2, 120, 5))


def test_identical_slots_train_exactly_like_one_vector_per_image():
    flat = _task()
    slotted = ProbeTask(
        train={k: np.stack([x] * 3) for k, x in flat.train.items()},
        y_train=flat.y_train,
        evals=flat.evals,
        y_evals=flat.y_evals,
        num_classes=3,
    )
    a, b = train_minibatch_heads(flat, SHORT), train_minibatch_heads(slotted, SHORT)
    for key in a:
        np.testing.assert_array_equal(a[key].predictions["test"], b[key].predictions["test"])


@pytest.mark.parametrize(
    "config",
    [
        SHORT,
        MinibatchConfig(epochs=4, batch_size=16, lr=1e-2, hidden_factor=2, standardize=True, pick_epoch_on_val=True),
    ],
)
def test_batched_cells_equal_each_cell_alone_and_learn(config):
    task = _task()
    together = train_minibatch_heads(task, config)
    for key in ("a", "b"):
        alone = train_minibatch_heads(
            ProbeTask(
                train={key: task.train[key]},
                y_train=task.y_train,
                evals={s: {key: v[key]} for s, v in task.evals.items()},
                y_evals=task.y_evals,
                num_classes=3,
            ),
            config,
        )
        np.testing.assert_array_equal(together[key].predictions["test"], alone[key].predictions["test"])
        assert np.mean(together[key].predictions["test"] == task.y_evals["test"]) > 0.6


def test_mlp_picks_the_epoch_with_the_best_val_accuracy(monkeypatch):
    config = MinibatchConfig(epochs=5, batch_size=32, lr=1e-2, hidden_factor=2, pick_epoch_on_val=True)
    out = train_minibatch_heads(_task(), config)
    for outcome in out.values():
        assert outcome.params.startswith("epochs=") and 1 <= int(outcome.params.split("=")[1]) <= 5


def test_ddae_preset_is_the_published_recipe():
    c = MinibatchConfig.ddae_linear()
    assert (
        c.epochs,
        c.batch_size,
        c.lr,
        c.weight_decay,
        c.schedule,
        c.hidden_factor,
        c.standardize,
        c.pick_epoch_on_val,
    ) == (15, 128, 1e-3, 0.0, "cosine-epoch", 0, False, False)
    # CosineAnnealingLR(T_max=15) stepped per epoch: lr at epoch e is 0.5 (1 + cos(pi e / 15)) * base
    assert minibatch._lr_factor(c, 5, 0, 1) == pytest.approx(0.5 * (1 + np.cos(np.pi * 5 / 15)))
