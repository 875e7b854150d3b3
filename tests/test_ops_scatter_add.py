"""scatter_add (the gradient of indexing): the reference against a loop over the sources with
repeated indices, and gradients of first and second order of a gather through it."""
import numpy as np
import pytest

from nanostyle.ops.scatter_add import scatter_add
from helpers import check_both_orders, randn


def loop_scatter_add(g, index, shape):
    """The definition: every source element added into the destination the index names."""
    out = np.zeros(shape)
    numbers = np.arange(int(np.prod(shape))).reshape(shape)[index]
    for source, destination in zip(g.reshape(-1), numbers.reshape(-1)):
        out.flat[destination] += source
    return out


@pytest.mark.parametrize("index", [
    (slice(1, 3), 0),                                                     # basic: each at most once
    np.array([0, 2, 2, 1, 2]),                                            # repeated rows
    (np.array([[0], [1]]), slice(None), np.array([[1, 1, 0]])),           # broadcast, repeated columns
])
def test_reference_adds_repeated_indices(index):
    rng = np.random.default_rng(4)
    shape = (3, 2, 4)
    g = randn(rng, *np.zeros(shape)[index].shape)
    np.testing.assert_allclose(scatter_add(g, index, shape), loop_scatter_add(g, index, shape), rtol=1e-14)


def test_gather_with_repeated_indices_gradients():
    rng = np.random.default_rng(5)
    rows, cols = rng.integers(0, 4, (2, 4)), rng.integers(0, 5, (2, 5))
    index = (np.arange(2)[:, None, None], slice(None), rows[:, :, None], cols[:, None, :])
    check_both_orders(lambda x: x[index] * x[index], [randn(rng, 2, 3, 4, 5)])
