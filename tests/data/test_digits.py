import numpy as np
from sklearn.datasets import load_digits as sklearn_digits

from probekit.data import load_dataset


def test_digits_match_sklearn_and_are_stratified():
    reference = sklearn_digits()
    dataset = load_dataset("digits", test_fraction=0.2, seed=0)
    assert dataset.class_names == [str(d) for d in range(10)]
    assert dataset.info == {
        "format": "digits",
        "test_split": "holdout",
        "test_fraction": 0.2,
        "holdout_seed": 0,
    }
    train, test = dataset.splits["train"], dataset.splits["test"]
    assert len(test) == round(1797 * 0.2) and len(train) + len(test) == 1797
    np.testing.assert_array_equal(np.sort(np.concatenate([train.index, test.index])), np.arange(1797))
    for split in (train, test):
        assert split.images.shape[1:] == (8, 8, 1) and split.images.dtype == np.uint8
        expected = np.floor(reference.images[split.index] * 255 / 16 + 0.5)
        np.testing.assert_array_equal(split.images[..., 0], expected)
        np.testing.assert_array_equal(split.labels, reference.target[split.index])
    class_counts = np.bincount(reference.target)
    assert np.all(np.abs(np.bincount(test.labels, minlength=10) - class_counts * 0.2) < 1)
    assert train.images.max() == 255 and train.images.min() == 0
