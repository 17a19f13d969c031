import numpy as np
import pytest

from probekit.core.errors import ProbekitError
from probekit.plots import plot_tsne
from probekit.plots.tsne import stratified_subsample


@pytest.mark.slow
def test_tsne_three_classes(tmp_path, check_png):
    rng = np.random.default_rng(0)
    labels = np.repeat([0, 1, 2], 40)
    # 64 features: wider than 50, so the PCA step runs too.
    features = rng.standard_normal((120, 64)) + 3.0 * np.eye(3, 64)[labels]
    path = plot_tsne(
        features, labels, ["cat", "dog", "ship"], tmp_path / "tsne.png", title="t=100, up_blocks.1", max_points=90
    )
    check_png(path)


def test_stratified_subsample_keeps_class_shares():
    labels = np.repeat([0, 1, 2], [600, 300, 100])
    keep = stratified_subsample(labels, 100, np.random.default_rng(0))
    assert len(np.unique(keep)) == len(keep) and np.all(np.diff(keep) > 0)
    np.testing.assert_array_equal(np.bincount(labels[keep]), [60, 30, 10])


def test_stratified_subsample_keeps_rare_class():
    labels = np.array([0] * 999 + [1])
    keep = stratified_subsample(labels, 10, np.random.default_rng(0))
    assert 1 in labels[keep]


def test_too_few_class_names_raise(tmp_path):
    with pytest.raises(ProbekitError, match="class names"):
        plot_tsne(np.zeros((10, 3)), np.arange(10) % 3, ["a", "b"], tmp_path / "x.png")
