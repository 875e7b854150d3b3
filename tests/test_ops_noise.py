"""noise_injection: values against the definition, first/second-order gradients, errors."""
import numpy as np
import pytest

import nanostyle as ns
from nanostyle.ops import noise_injection
from helpers import check_both_orders, randn


def test_noise_injection():
    rng = np.random.default_rng(1)
    x, noise, strength = randn(rng, 2, 3, 4, 5), randn(rng, 2, 1, 4, 5), randn(rng, 1)
    y = noise_injection(ns.Tensor(x), ns.Tensor(noise), ns.Tensor(strength)).data
    np.testing.assert_allclose(y, x + noise * strength[0], rtol=1e-14)
    check_both_orders(lambda x, n, s: noise_injection(x, n, s), [x, noise, strength])
    check_both_orders(lambda x, n, s: noise_injection(x, n, s) ** 2, [x, noise, randn(rng)])


@pytest.mark.parametrize("bad, match", [
    (lambda: noise_injection(ns.Tensor(np.ones((2, 3, 4, 4))), ns.Tensor(np.ones((2, 3, 4, 4))), 1.0), "noise"),
    (lambda: noise_injection(ns.Tensor(np.ones((2, 3, 4, 4))), ns.Tensor(np.ones((2, 1, 4, 4))),
                             ns.Tensor(np.ones(2))), "scalar"),
])
def test_bad_arguments(bad, match):
    with pytest.raises(ValueError, match=match):
        bad()
