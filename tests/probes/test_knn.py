import numpy as np
import pytest

from probekit.probes import KnnConfig, knn_probe


def brute_force_knn(train, y_train, test, k, temperature, num_classes):
    """The InstDisc / DINO weighted vote, written out with numpy loops in float64."""
    train = train / np.linalg.norm(train, axis=1, keepdims=True)
    test = test / np.linalg.norm(test, axis=1, keepdims=True)
    predictions = []
    for query in test:
        similarity = train @ query
        neighbours = np.argsort(-similarity)[:k]
        votes = np.zeros(num_classes)
        for j in neighbours:
            votes[y_train[j]] += np.exp(similarity[j] / temperature)
        predictions.append(np.argmax(votes))
    return np.array(predictions)


@pytest.fixture(scope="module")
def random_cells():
    rng = np.random.default_rng(3)
    n_train, n_test, num_classes = 300, 57, 5
    y_train = rng.integers(0, num_classes, n_train)
    y_test = rng.integers(0, num_classes, n_test)
    # Class-dependent means so votes are informative; continuous noise so there are no ties.
    means = rng.standard_normal((num_classes, 24))
    train = {("a", 24): (means[y_train] + rng.standard_normal((n_train, 24))).astype(np.float32)}
    test = {("a", 24): (means[y_test] + rng.standard_normal((n_test, 24))).astype(np.float32)}
    train[("b", 7)] = rng.standard_normal((n_train, 7)).astype(np.float32)
    test[("b", 7)] = rng.standard_normal((n_test, 7)).astype(np.float32)
    return train, y_train, test, y_test, num_classes


@pytest.mark.parametrize(("k", "temperature"), [(20, 0.07), (5, 0.5), (1, 0.07)])
def test_matches_brute_force(random_cells, k, temperature):
    train, y_train, test, y_test, num_classes = random_cells
    # chunk_size=10 makes ragged test chunks.
    config = KnnConfig(k=k, temperature=temperature, chunk_size=10)
    scores = knn_probe(train, y_train, test, y_test, config)
    for key in train:
        x_train, x_test = train[key].astype(np.float64), test[key].astype(np.float64)
        expected = brute_force_knn(x_train, y_train, x_test, k, temperature, num_classes)
        np.testing.assert_array_equal(scores[key].predictions, expected)
        assert scores[key].top1 == pytest.approx(np.mean(expected == y_test))


def test_k_larger_than_train_set_uses_all_samples(random_cells):
    train, y_train, test, y_test, num_classes = random_cells
    small = {key: x[:12] for key, x in train.items()}
    scores = knn_probe(small, y_train[:12], test, y_test, KnnConfig(k=50))
    for key in train:
        expected = brute_force_knn(small[key].astype(np.float64), y_train[:12],
                                   test[key].astype(np.float64), 12, 0.07, num_classes)  # fmt: skip
        np.testing.assert_array_equal(scores[key].predictions, expected)


def test_separable_cells_are_easy_for_knn(separable_grid):
    g = separable_grid
    scores = knn_probe(g.train, g.y_train, g.test, g.y_test)
    for key, score in scores.items():
        if key != g.noise_cell:
            assert score.top1 >= 0.95, key
