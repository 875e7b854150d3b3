"""softplus and sigmoid: values against the definition, first/second-order gradients, the
extremes (finite at +-1000), errors."""
import numpy as np
import pytest

import nanostyle as ns
from nanostyle.ops import softplus
from helpers import check_both_orders, randn


def test_softplus_values_gradients_and_extremes():
    rng = np.random.default_rng(0)
    x = randn(rng, 4, 5) * 3
    np.testing.assert_allclose(softplus(ns.Tensor(x)).data, np.log1p(np.exp(x)), rtol=1e-12)
    check_both_orders(softplus, [x])
    big = ns.Tensor(np.array([-1000.0, -50.0, 50.0, 1000.0]), requires_grad=True)
    y = softplus(big)
    assert np.all(np.isfinite(y.data))
    np.testing.assert_allclose(y.data, [0.0, np.exp(-50.0), 50.0, 1000.0], rtol=1e-12, atol=0)
    (g,) = ns.grad(y.sum(), [big], create_graph=True)
    np.testing.assert_allclose(g.data, [0.0, np.exp(-50.0), 1.0, 1.0], rtol=1e-12, atol=0)
    (gg,) = ns.grad(g.sum(), [big])
    assert np.all(np.isfinite(gg.data))


def test_bad_arguments():
    with pytest.raises(ValueError, match="dtype"):
        softplus(ns.Tensor(np.ones(3, np.int16)))
    with pytest.raises(ValueError, match="Tensor"):
        softplus(np.ones(3))
