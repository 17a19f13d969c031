import numpy as np
import pytest

from probekit.core.errors import ProbekitError
from probekit.evaluate import stratified_val_split


def test_val_split_is_stratified_disjoint_and_seeded():
    labels = np.repeat(np.arange(4), [50, 30, 15, 5])
    fit, val = stratified_val_split(labels, 0.2, seed=3)
    assert len(val) == 20 and len(fit) == 80
    assert np.array_equal(np.sort(np.concatenate([fit, val])), np.arange(100))
    # proportional per class: 10, 6, 3, 1
    assert np.bincount(labels[val], minlength=4).tolist() == [10, 6, 3, 1]
    again = stratified_val_split(labels, 0.2, seed=3)
    other = stratified_val_split(labels, 0.2, seed=4)
    assert np.array_equal(val, again[1]) and not np.array_equal(val, other[1])


def test_zero_fraction_holds_out_nothing_and_bad_fractions_are_refused():
    labels = np.arange(10) % 2
    fit, val = stratified_val_split(labels, 0.0, seed=0)
    assert len(val) == 0 and len(fit) == 10
    with pytest.raises(ProbekitError, match="val-fraction"):
        stratified_val_split(labels, 1.0, seed=0)
    with pytest.raises(ProbekitError, match="holds out no sample"):
        stratified_val_split(labels, 0.01, seed=0)
