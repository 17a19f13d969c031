import dataclasses

import numpy as np
import pytest
import torch

from probekit.errors import ProbekitError
from probekit.probes.linear import predict_linear_grid
from probekit.probes.sgd import SgdProbeConfig, fit_sgd_grid, sgd_probe_grid

# Short runs for the exactness tests: what matters there is equality, not accuracy.
SHORT = SgdProbeConfig(epochs=3, min_steps=0, batch_size=64, lr=1e-2)


def test_separable_cells_reach_full_accuracy_and_noise_stays_at_chance(separable_grid):
    g = separable_grid
    scores = sgd_probe_grid(g.train, g.y_train, g.test, g.y_test)
    assert list(scores) == list(g.train)  # input order kept
    for key, score in scores.items():
        assert score.n_test == len(g.y_test)
        assert score.predictions.shape == g.y_test.shape
        # Independent recount of top-1 from the returned predictions.
        assert score.top1 == pytest.approx(np.mean(score.predictions == g.y_test))
        if key == g.noise_cell:
            assert abs(score.top1 - 1 / g.num_classes) < 0.1
        else:
            assert score.top1 >= 0.99, key


def test_batched_training_equals_training_each_cell_alone(separable_grid):
    g = separable_grid
    # Two cells share a width (one batched group), the third has its own width.
    keys = [(10, "layer16"), (20, "layer32"), (40, "layer32")]
    train = {k: g.train[k] for k in keys}
    together = fit_sgd_grid(train, g.y_train, SHORT)
    for key in keys:
        alone = fit_sgd_grid({key: train[key]}, g.y_train, SHORT)[key]
        torch.testing.assert_close(together[key].weight, alone.weight, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(together[key].bias, alone.bias, atol=1e-5, rtol=1e-5)

    scores_together = sgd_probe_grid(train, g.y_train, {k: g.test[k] for k in keys}, g.y_test,
                                        SHORT)  # fmt: skip
    for key in keys:
        alone = sgd_probe_grid({key: train[key]}, g.y_train, {key: g.test[key]}, g.y_test, SHORT)
        np.testing.assert_array_equal(scores_together[key].predictions, alone[key].predictions)


def test_same_seed_same_result_and_other_seed_differs(separable_grid):
    g = separable_grid
    a = fit_sgd_grid(g.train, g.y_train, SHORT)
    b = fit_sgd_grid(g.train, g.y_train, SHORT)
    c = fit_sgd_grid(g.train, g.y_train, dataclasses.replace(SHORT, seed=1))
    for key in g.train:
        assert torch.equal(a[key].weight, b[key].weight)
    assert not torch.equal(a[g.noise_cell].weight, c[g.noise_cell].weight)


def test_heads_standardise_with_train_statistics_and_predict_like_numpy(separable_grid):
    g = separable_grid
    heads = fit_sgd_grid(g.train, g.y_train, SHORT)
    # eval_batch_size=7 forces many ragged chunks.
    predicted = predict_linear_grid(heads, g.test, eval_batch_size=7)
    for key, x_train in g.train.items():
        head = heads[key]
        x64 = x_train.astype(np.float64)
        np.testing.assert_allclose(head.mean.numpy(), x64.mean(axis=0), rtol=1e-5, atol=1e-3)
        np.testing.assert_allclose(head.std.numpy(), x64.std(axis=0), rtol=1e-4)
        z = (g.test[key] - head.mean.numpy()) / head.std.numpy()
        logits = z @ head.weight.numpy() + head.bias.numpy()
        np.testing.assert_array_equal(predicted[key], logits.argmax(axis=1))


def test_constant_feature_is_left_unscaled():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((50, 3)).astype(np.float32)
    x[:, 1] = 7.0
    heads = fit_sgd_grid({"c": x}, rng.integers(0, 2, 50), SHORT)
    assert heads["c"].std[1].item() == 1.0
    assert np.isfinite(heads["c"].weight.numpy()).all()


def test_explicit_num_classes_sets_output_width(separable_grid):
    g = separable_grid
    config = dataclasses.replace(SHORT, num_classes=g.num_classes + 3)
    heads = fit_sgd_grid(g.train, g.y_train, config)
    assert heads[g.noise_cell].weight.shape == (32, g.num_classes + 3)


def _fresh_copy(g):
    return dataclasses.replace(
        g, train={k: v.copy() for k, v in g.train.items()}, test=dict(g.test)
    )


def _run(g):
    return sgd_probe_grid(g.train, g.y_train, g.test, g.y_test, SHORT)


def test_mismatched_cells_raise(separable_grid):
    g = _fresh_copy(separable_grid)
    del g.test[g.noise_cell]
    with pytest.raises(ProbekitError, match="same cells"):
        _run(g)


def test_width_mismatch_between_splits_raises(separable_grid):
    g = _fresh_copy(separable_grid)
    g.train[g.noise_cell] = g.train[g.noise_cell][:, :5]
    with pytest.raises(ProbekitError, match="test features"):
        _run(g)


def test_nan_features_raise(separable_grid):
    g = _fresh_copy(separable_grid)
    g.train[g.noise_cell][0, 0] = np.nan
    with pytest.raises(ProbekitError, match="NaN"):
        _run(g)


def test_label_count_mismatch_raises(separable_grid):
    g = dataclasses.replace(separable_grid, y_train=separable_grid.y_train[:-1])
    with pytest.raises(ProbekitError, match="rows"):
        _run(g)


def test_float_labels_raise(separable_grid):
    g = dataclasses.replace(separable_grid, y_test=separable_grid.y_test.astype(float))
    with pytest.raises(ProbekitError, match="integer"):
        _run(g)


def test_num_classes_below_labels_raises(separable_grid):
    g = separable_grid
    with pytest.raises(ProbekitError, match="num_classes"):
        sgd_probe_grid(g.train, g.y_train, g.test, g.y_test,
                          dataclasses.replace(SHORT, num_classes=2))  # fmt: skip


def test_min_steps_raises_epochs_on_small_data():
    config = SgdProbeConfig(epochs=5, min_steps=1000, batch_size=256)
    assert config.epochs_for(600) == 334  # 3 steps per epoch
    assert config.epochs_for(50_000) == 6  # 196 steps per epoch
    assert config.epochs_for(1_000_000) == 5


def test_ddae_preset_is_adam_1e3_batch_128_cosine_15_epochs():
    config = SgdProbeConfig.ddae(seed=3)
    assert (config.lr, config.batch_size, config.epochs, config.weight_decay) == (1e-3, 128, 15, 0.0)
    assert config.warmup_epochs == 0.0 and config.seed == 3
    assert config.epochs_for(500) == 15 and config.epochs_for(50_000) == 15  # never raised


def test_invalid_config_raises():
    with pytest.raises(ProbekitError):
        SgdProbeConfig(lr=0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu(separable_grid):
    g = separable_grid
    cpu = sgd_probe_grid(g.train, g.y_train, g.test, g.y_test, SHORT)
    gpu = sgd_probe_grid(g.train, g.y_train, g.test, g.y_test, SHORT, device="cuda")
    for key in g.train:
        assert abs(cpu[key].top1 - gpu[key].top1) <= 0.01
