import numpy as np
import pytest

from probekit.core.errors import ProbekitError
from probekit.probes import KnnConfig, knn_probe
from probekit.probes.knn import knn_sweep


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
        expected = brute_force_knn(
            small[key].astype(np.float64), y_train[:12], test[key].astype(np.float64), 12, 0.07, num_classes
        )
        np.testing.assert_array_equal(scores[key].predictions, expected)


def test_separable_cells_are_easy_for_knn(separable_grid):
    g = separable_grid
    scores = knn_probe(g.train, g.y_train, g.test, g.y_test)
    for key, score in scores.items():
        if key != g.noise_cell:
            assert score.top1 >= 0.95, key


# --- the sweep: ties, zero rows, centring, low precision, k sweep == separate runs -------------


def brute_force_sweep(train, y_train, query, k, temperature, num_classes, centre=False):
    """float64 reference of the documented rule: zero rows have cosine 0 with everything,
    neighbour ties go to the lower train index, vote ties to the lower class.
    """
    train, query = train.astype(np.float64), query.astype(np.float64)
    if centre:
        mean = train.mean(axis=0)
        train, query = train - mean, query - mean

    def unit(x):
        norm = np.linalg.norm(x, axis=1, keepdims=True)
        return np.divide(x, norm, out=np.zeros_like(x), where=norm > 0)

    train, query = unit(train), unit(query)
    predictions = []
    for row in query:
        similarity = train @ row
        order = np.lexsort((np.arange(len(train)), -similarity))[:k]  # similarity desc, index asc
        votes = np.zeros(num_classes)
        for j in order:
            votes[y_train[j]] += np.exp(similarity[j] / temperature)
        predictions.append(int(np.argmax(votes)))  # first maximum = lowest class
    return np.array(predictions)


@pytest.fixture(scope="module")
def tied_cells():
    """Duplicated train rows (ties at every k), zero train and query rows. Distinct rows are
    continuous random, so ties come only from duplicates (whose products are bit-identical).
    """
    rng = np.random.default_rng(11)
    n_train, num_classes = 120, 4
    base = rng.standard_normal((30, 6)).astype(np.float32)
    train = base[rng.integers(0, 30, n_train)]  # every row has duplicates elsewhere
    train[[5, 40, 77]] = 0.0
    y_train = rng.integers(0, num_classes, n_train)
    query = np.concatenate([base[:20], rng.standard_normal((25, 6)), np.zeros((3, 6))]).astype(np.float32)
    wide_train = rng.standard_normal((n_train, 9)).astype(np.float32)
    wide_query = rng.standard_normal((len(query), 9)).astype(np.float32)
    wide_query[-1] = 0.0
    return {("t", 6): train, ("u", 9): wide_train}, y_train, {("t", 6): query, ("u", 9): wide_query}, num_classes


@pytest.mark.parametrize("centre", [False, True])
@pytest.mark.parametrize("similarity", ["fp32", "bf16"])
def test_sweep_matches_brute_force_with_ties_and_zero_rows(tied_cells, centre, similarity):
    train, y_train, query, num_classes = tied_cells
    ks, temperatures = [1, 3, 7, 25, 500], [0.07, 0.5]
    # chunk_size=7 leaves a ragged last block; two query sets share the pass.
    half = {key: x[:17] for key, x in query.items()}
    sweep = knn_sweep(
        train,
        y_train,
        {"test": query, "val": half},
        ks,
        temperatures,
        centre=centre,
        num_classes=num_classes,
        chunk_size=7,
        similarity=similarity,
    )
    assert set(sweep) == {(k, t) for k in ks for t in temperatures}
    for (k, t), cells in sweep.items():
        for key in train:
            expected = brute_force_sweep(train[key], y_train, query[key], min(k, len(y_train)), t, num_classes, centre)
            np.testing.assert_array_equal(cells[key]["test"], expected, err_msg=f"{key} k={k} T={t}")
            np.testing.assert_array_equal(cells[key]["val"], expected[:17])
            assert cells[key]["test"].dtype == np.int64


@pytest.mark.parametrize("similarity", ["fp32", "bf16"])
def test_sweep_equals_separate_runs(random_cells, similarity):
    train, y_train, test, y_test, num_classes = random_cells
    ks, temperatures = [1, 10, 40], [0.07, 0.2]
    sweep = knn_sweep(train, y_train, {"test": test}, ks, temperatures, chunk_size=16, similarity=similarity)
    for k in ks:
        for t in temperatures:
            alone = knn_sweep(train, y_train, {"test": test}, [k], [t], chunk_size=50, similarity="fp32")
            for key in train:
                np.testing.assert_array_equal(sweep[(k, t)][key]["test"], alone[(k, t)][key]["test"])
                expected = brute_force_sweep(train[key], y_train, test[key], k, t, num_classes)
                np.testing.assert_array_equal(alone[(k, t)][key]["test"], expected)


def test_low_precision_rerank_recovers_float32_neighbours():
    """Train rows whose cosines to a query differ by ~1e-5: bf16 cannot order them, float32 can."""
    rng = np.random.default_rng(5)
    centre_row = rng.standard_normal(64)
    train = centre_row + 1e-2 * rng.standard_normal((400, 64))
    y_train = np.arange(400) % 7
    query = (centre_row + 1e-2 * rng.standard_normal((30, 64))).astype(np.float32)
    train = train.astype(np.float32)
    low = knn_sweep({"c": train}, y_train, {"q": {"c": query}}, [1, 5], [0.01], similarity="bf16")
    exact = knn_sweep({"c": train}, y_train, {"q": {"c": query}}, [1, 5], [0.01], similarity="fp32")
    for kt in low:
        np.testing.assert_array_equal(low[kt]["c"]["q"], exact[kt]["c"]["q"])
    # The nearest neighbour itself, against a float64 computation.
    unit = lambda x: x / np.linalg.norm(x, axis=1, keepdims=True)  # noqa: E731
    nearest = np.argmax(unit(query.astype(np.float64)) @ unit(train.astype(np.float64)).T, axis=1)
    np.testing.assert_array_equal(low[(1, 0.01)]["c"]["q"], y_train[nearest])


def test_centring_changes_the_neighbours_of_offset_features():
    """A large shared offset makes raw cosines all ~1; centring removes it (checked by hand)."""
    rng = np.random.default_rng(2)
    y_train = np.repeat([0, 1], 50)
    signal = np.where(y_train[:, None] == 0, 1.0, -1.0) * np.array([1.0, 0.0])
    train = (signal + 0.3 * rng.standard_normal((100, 2)) + [0.0, 1000.0]).astype(np.float32)
    query = np.array([[2.0, 1000.0], [-2.0, 1000.0]], dtype=np.float32)
    centred = knn_sweep({"c": train}, y_train, {"q": {"c": query}}, [5], [0.07], centre=True)
    np.testing.assert_array_equal(centred[(5, 0.07)]["c"]["q"], [0, 1])
    for centre in (False, True):
        got = knn_sweep({"c": train}, y_train, {"q": {"c": query}}, [5], [0.07], centre=centre)
        expected = brute_force_sweep(train, y_train, query, 5, 0.07, 2, centre)
        np.testing.assert_array_equal(got[(5, 0.07)]["c"]["q"], expected)


@pytest.mark.parametrize(
    ("ks", "temperatures", "message"),
    [([0], [0.1], "k must be"), ([5], [0.0], "temperature must be"), ([], [0.1], "k must be")],
)
def test_sweep_rejects_bad_settings(random_cells, ks, temperatures, message):
    train, y_train, test, _, _ = random_cells
    with pytest.raises(ProbekitError, match=message):
        knn_sweep(train, y_train, {"test": test}, ks, temperatures)


def test_sweep_rejects_mismatched_query_cells(random_cells):
    train, y_train, test, _, _ = random_cells
    with pytest.raises(ProbekitError, match="same cells"):
        knn_sweep(train, y_train, {"val": {("a", 24): test[("a", 24)]}}, [5], [0.1])
    bad = {key: x[:, :3] for key, x in test.items()}
    with pytest.raises(ProbekitError, match="columns"):
        knn_sweep(train, y_train, {"val": bad}, [5], [0.1])
