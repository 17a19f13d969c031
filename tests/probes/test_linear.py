import dataclasses

import numpy as np
import pytest
import torch
from scipy.special import logsumexp
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from probekit.core.errors import ProbekitError
from probekit.probes import (
    LinearProbeConfig,
    fit_linear_grid,
    fit_linear_path,
    linear_probe_grid,
    linear_probe_path,
    predict_linear_grid,
)
from probekit.probes.lbfgs import Problem

TIGHT = LinearProbeConfig(tol=1e-7, max_iter=3000)


def overlapping_mixture(seed: int, n_train: int = 1500, n_test: int = 1000, classes: int = 5):
    """Cells of a Gaussian mixture whose classes overlap: top-1 between 40 and 90 %.

    Features are a random ReLU map of the latent, with an offset and scale per feature, plus one
    constant feature, so standardisation, correlated and zero-variance features all matter.
    """
    rng = np.random.default_rng(seed)
    centres = 1.2 * rng.standard_normal((classes, 6))
    y = rng.integers(0, classes, n_train + n_test)
    latent = centres[y] + rng.standard_normal((len(y), 6))
    cells = {}
    for t, width in [(1, 16), (2, 32), (3, 32), (4, 48)]:
        projection = rng.standard_normal((6, width)) * (0.3 + 0.4 * t)
        x = np.maximum(latent @ projection + 0.7 * rng.standard_normal((len(y), width)), 0)
        x = x * rng.uniform(0.5, 20, width) + rng.normal(0, 30, width)
        x[:, 3] = 2.5  # constant: StandardScaler leaves it unscaled (std 1)
        cells[(t, f"w{width}")] = x.astype(np.float32)
    train = {k: v[:n_train] for k, v in cells.items()}
    test = {k: v[n_train:] for k, v in cells.items()}
    return train, y[:n_train].astype(np.int64), test, y[n_train:].astype(np.int64)


def sklearn_fit(x, y, C=1.0, tol=1e-4, solver="lbfgs"):
    scaler = StandardScaler().fit(x)
    model = LogisticRegression(C=C, tol=tol, max_iter=10_000, solver=solver)
    model.fit(scaler.transform(x), y)
    return scaler, model


def sklearn_objective(z, y, weight, bias, C):
    """scikit-learn's objective in its scaled form: mean CE + ||W||^2 / (2 C N), in numpy."""
    logits = z.astype(np.float64) @ weight + bias
    ce = logsumexp(logits, axis=1) - logits[np.arange(len(y)), y]
    return ce.mean() + np.square(weight).sum() / (2 * C * len(y))


@pytest.fixture(scope="module")
def mixture():
    return overlapping_mixture(0)


@pytest.mark.slow
@pytest.mark.parametrize("precondition", [True, False, "auto"])
def test_top1_matches_sklearn_on_mid_accuracy_cells(mixture, precondition):
    train, y_train, test, y_test = mixture
    config = LinearProbeConfig(precondition=precondition)
    scores = linear_probe_grid(train, y_train, test, y_test, config)
    diffs = []
    for key in train:
        scaler, model = sklearn_fit(train[key], y_train)
        reference = np.mean(model.predict(scaler.transform(test[key])) == y_test)
        assert 0.4 <= reference <= 0.9, (key, reference)  # really a mid-accuracy cell
        assert scores[key].converged
        diffs.append(abs(scores[key].top1 - reference))
    assert np.mean(diffs) <= 0.003, diffs  # 0.3 points
    assert max(diffs) <= 0.005, diffs


@pytest.mark.slow
@pytest.mark.parametrize("C", [1.0, 0.01])
def test_tight_tolerance_reaches_sklearns_optimum(mixture, C):
    train, y_train, _, _ = mixture
    heads = fit_linear_grid(train, y_train, dataclasses.replace(TIGHT, C=C))
    for key, x in train.items():
        # Newton-Cholesky in float64 reaches the optimum more tightly than lbfgs does.
        scaler, model = sklearn_fit(x, y_train, C=C, tol=1e-10, solver="newton-cholesky")
        z = scaler.transform(x)
        head = heads[key]
        # At tol 1e-7 a float32 line search may stop on rounding noise (converged=False) at the
        # optimum: the objective and weights below are what this test is about.
        ours = sklearn_objective(
            z, y_train, head.weight.numpy().astype(np.float64), head.bias.numpy().astype(np.float64), C
        )
        theirs = sklearn_objective(z, y_train, model.coef_.T, model.intercept_, C)
        assert ours == pytest.approx(head.objective, rel=1e-5)  # reported value is the objective
        assert ours == pytest.approx(theirs, rel=1e-6), key
        np.testing.assert_allclose(head.weight.numpy(), model.coef_.T, atol=1e-2, rtol=1e-2)
        # The intercept is unpenalised: only its differences between classes are defined.
        bias = head.bias.numpy()
        np.testing.assert_allclose(bias - bias.mean(), model.intercept_ - model.intercept_.mean(), atol=1e-2, rtol=1e-2)


@pytest.mark.slow
def test_path_solves_every_C_to_sklearns_optimum(mixture):
    train, y_train, test, y_test = mixture
    Cs = [1.0, 0.01, 0.1]  # out of order: the path sorts them, the result keeps this order
    path = fit_linear_path(train, y_train, Cs, TIGHT)
    assert list(path) == Cs
    for C in Cs:
        assert list(path[C]) == list(train)
        for key, x in train.items():
            scaler, model = sklearn_fit(x, y_train, C=C, tol=1e-10, solver="newton-cholesky")
            z = scaler.transform(x)
            head = path[C][key]
            ours = sklearn_objective(
                z, y_train, head.weight.numpy().astype(np.float64), head.bias.numpy().astype(np.float64), C
            )
            theirs = sklearn_objective(z, y_train, model.coef_.T, model.intercept_, C)
            assert ours == pytest.approx(theirs, rel=1e-6), (C, key)
    # the scoring wrapper gives each C's predictions from those heads
    scores = linear_probe_path(train, y_train, test, y_test, Cs, TIGHT)
    for C in Cs:
        predicted = predict_linear_grid(path[C], test)
        for key in train:
            assert np.mean(scores[C][key].predictions != predicted[key]) <= 0.002


def test_path_rejects_non_positive_C(mixture):
    train, y_train, _, _ = mixture
    with pytest.raises(ProbekitError, match="C"):
        fit_linear_path(train, y_train, [1.0, 0.0])
    with pytest.raises(ProbekitError, match="C"):
        fit_linear_path(train, y_train, [])


@pytest.mark.slow
def test_batched_equals_each_cell_alone(mixture):
    train, y_train, _, _ = mixture
    together = fit_linear_grid(train, y_train, TIGHT)
    for key in train:
        alone = fit_linear_grid({key: train[key]}, y_train, TIGHT)[key]
        # Same optimum; float32 sums in other orders can leave flat directions a few 1e-3 apart.
        assert together[key].objective == pytest.approx(alone.objective, rel=1e-6)
        torch.testing.assert_close(together[key].weight, alone.weight, atol=1e-2, rtol=1e-2)
        torch.testing.assert_close(together[key].bias, alone.bias, atol=1e-2, rtol=1e-2)


def test_zero_variance_feature_is_handled_as_standard_scaler(mixture):
    train, y_train, test, y_test = mixture
    key = (2, "w32")
    head = fit_linear_grid({key: train[key]}, y_train, TIGHT)[key]
    scaler, model = sklearn_fit(train[key], y_train, tol=1e-10, solver="newton-cholesky")
    assert scaler.scale_[3] == 1.0 and head.std[3].item() == 1.0
    assert head.mean[3].item() == pytest.approx(2.5)
    np.testing.assert_allclose(head.weight[3].numpy(), 0.0, atol=1e-6)  # a zero column
    np.testing.assert_allclose(head.std.numpy(), scaler.scale_, rtol=1e-4)
    predicted = predict_linear_grid({key: head}, {key: test[key]})[key]
    # Same optimum up to float32: at most a near-tie or two of 1000 test images may flip.
    assert np.mean(predicted != model.predict(scaler.transform(test[key]))) <= 0.002


def test_separable_cells_reach_full_accuracy_and_noise_stays_at_chance(separable_grid):
    g = separable_grid
    scores = linear_probe_grid(g.train, g.y_train, g.test, g.y_test)
    assert list(scores) == list(g.train)  # input order kept
    for key, score in scores.items():
        assert score.predictions.shape == g.y_test.shape
        assert score.top1 == pytest.approx(np.mean(score.predictions == g.y_test))
        if key == g.noise_cell:
            assert abs(score.top1 - 1 / g.num_classes) < 0.1
        else:
            assert score.top1 >= 0.99, key


def test_heads_standardise_with_train_statistics_and_predict_like_numpy(separable_grid):
    g = separable_grid
    heads = fit_linear_grid(g.train, g.y_train)
    predicted = predict_linear_grid(heads, g.test, eval_batch_size=7)  # many ragged chunks
    for key, x_train in g.train.items():
        head = heads[key]
        x64 = x_train.astype(np.float64)
        np.testing.assert_allclose(head.mean.numpy(), x64.mean(axis=0), rtol=1e-5, atol=1e-3)
        np.testing.assert_allclose(head.std.numpy(), x64.std(axis=0), rtol=1e-4)
        z = (g.test[key] - head.mean.numpy()) / head.std.numpy()
        logits = z @ head.weight.numpy() + head.bias.numpy()
        np.testing.assert_array_equal(predicted[key], logits.argmax(axis=1))


def test_iteration_limit_is_reported_as_not_converged(mixture):
    train, y_train, test, y_test = mixture
    scores = linear_probe_grid(train, y_train, test, y_test, LinearProbeConfig(max_iter=2))
    assert not any(score.converged for score in scores.values())
    heads = fit_linear_grid(train, y_train, LinearProbeConfig(max_iter=2))
    assert all(head.n_iter <= 2 and not head.converged for head in heads.values())


@pytest.mark.slow
def test_explicit_num_classes_sets_output_width(separable_grid):
    g = separable_grid
    config = LinearProbeConfig(num_classes=g.num_classes + 3)
    heads = fit_linear_grid(g.train, g.y_train, config)
    assert heads[g.noise_cell].weight.shape == (32, g.num_classes + 3)


def test_bad_inputs_raise(separable_grid):
    g = separable_grid
    test = dict(g.test)
    del test[g.noise_cell]
    with pytest.raises(ProbekitError, match="same cells"):
        linear_probe_grid(g.train, g.y_train, test, g.y_test)
    with pytest.raises(ProbekitError, match="num_classes"):
        linear_probe_grid(g.train, g.y_train, g.test, g.y_test, LinearProbeConfig(num_classes=2))
    bad = {k: v.copy() for k, v in g.train.items()}
    bad[g.noise_cell][0, 0] = np.nan
    with pytest.raises(ProbekitError, match="NaN"):
        linear_probe_grid(bad, g.y_train, g.test, g.y_test)


@pytest.mark.parametrize("field", [{"C": 0}, {"tol": 0}, {"max_iter": 0}, {"history": 0}])
def test_invalid_config_raises(field):
    with pytest.raises(ProbekitError):
        LinearProbeConfig(**field)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu(mixture):
    train, y_train, test, y_test = mixture
    cpu = linear_probe_grid(train, y_train, test, y_test)
    gpu = linear_probe_grid(train, y_train, test, y_test, device="cuda")
    for key in train:
        assert abs(cpu[key].top1 - gpu[key].top1) <= 0.003


def test_preconditioner_uses_every_rows_variance_for_a_feature_its_sample_misses():
    """M = cov / 2 + l2 I is built from 4096 sampled rows, but its diagonal must be each
    feature's variance over *all* rows (numpy, float64): a rare feature that the sample skips
    (sampled variance 0) would otherwise get M^-1 = 1 / l2 along it and stall the solver.
    """
    rng = np.random.default_rng(3)
    n, width = 8192, 6
    x = rng.standard_normal((n, width)).astype(np.float32)
    sampled = set(np.linspace(0, n - 1, 4096).astype(np.int64).tolist())
    rare = [i for i in range(n) if i not in sampled][:5]
    x[:, -1] = 0.0
    x[rare, -1] = 7.0
    labels = torch.from_numpy(rng.integers(0, 3, n))
    problem = Problem.build([0], {0: x}, labels, 3, torch.device("cpu"), True)
    problem.set_C(1.0)
    inv_factor = problem.chol_inv[0].double().numpy()
    m = np.linalg.inv(inv_factor.T @ inv_factor)  # M = (L^-T L^-1)^-1
    z = (x - x.astype(np.float64).mean(0)) / x.astype(np.float64).std(0)
    np.testing.assert_allclose(np.diag(m), z.var(0) / 2 + 1 / n, rtol=1e-4)  # a float32 factor
    assert m[-1, -1] > 0.4  # the full-data variance (1) / 2, not the sample's 0


@pytest.mark.parametrize(("n", "width", "expected"), [(400, 100, True), (399, 100, False)])
def test_auto_preconditions_only_with_four_rows_per_feature(n, width, expected):
    rng = np.random.default_rng(0)
    cells = {0: rng.standard_normal((n, width)).astype(np.float32)}
    labels = torch.from_numpy(rng.integers(0, 3, n))
    problem = Problem.build([0], cells, labels, 3, torch.device("cpu"), "auto")
    problem.set_C(1.0)
    assert (problem.chol_inv is not None) is expected


def test_precondition_setting_is_checked():
    with pytest.raises(ProbekitError, match="precondition"):
        LinearProbeConfig(precondition="yes")


def test_preconditioner_applies_the_inverse_of_the_curvature_bound():
    """H0 q = q M^-1 per class, M = cov / 2 + l2 I of the standardised features (numpy, float64,
    all rows sampled since N <= 4096); the bias part passes unchanged.
    """
    rng = np.random.default_rng(5)
    n, width, classes = 600, 8, 4
    mixing = rng.standard_normal((width, width))
    x = (rng.standard_normal((n, width)) @ mixing + 3.0).astype(np.float32)  # correlated features
    labels = torch.from_numpy(rng.integers(0, classes, n))
    problem = Problem.build([0], {0: x}, labels, classes, torch.device("cpu"), True)
    problem.set_C(0.5)
    z = (x - x.astype(np.float64).mean(0)) / x.astype(np.float64).std(0)
    m = z.T @ z / n / 2 + np.eye(width) / (0.5 * n)
    q = rng.standard_normal((1, (width + 1) * classes)).astype(np.float32)
    out = problem.precondition(torch.from_numpy(q)).numpy()[0]
    q_weight_t = q[0, : width * classes].reshape(classes, width)
    expected = np.linalg.solve(m, q_weight_t.T).T
    np.testing.assert_allclose(out[: width * classes].reshape(classes, width), expected, rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(out[width * classes :], q[0, width * classes :])
