"""softplus, noise_injection, minibatch_std: values against definitions, first/second-order
gradients, numerical edge cases, errors."""
import numpy as np
import pytest

import nanostyle as ns
from nanostyle.ops import minibatch_std, noise_injection, softplus
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


def test_noise_injection():
    rng = np.random.default_rng(1)
    x, noise, strength = randn(rng, 2, 3, 4, 5), randn(rng, 2, 1, 4, 5), randn(rng, 1)
    y = noise_injection(ns.Tensor(x), ns.Tensor(noise), ns.Tensor(strength)).data
    np.testing.assert_allclose(y, x + noise * strength[0], rtol=1e-14)
    check_both_orders(lambda x, n, s: noise_injection(x, n, s), [x, noise, strength])
    check_both_orders(lambda x, n, s: noise_injection(x, n, s) ** 2, [x, noise, randn(rng)])


def reference_minibatch_std(x, group_size, num_channels):
    N, C, H, W = x.shape
    G = min(group_size, N)
    n = N // G
    c = C // num_channels
    out = np.zeros((N, num_channels, H, W))
    for slot in range(n):
        members = [g * n + slot for g in range(G)]
        for f in range(num_channels):
            block = x[members][:, f * c:(f + 1) * c]                 # [G, c, H, W]
            std = np.sqrt(((block - block.mean(axis=0)) ** 2).mean(axis=0) + 1e-8)
            for m in members:
                out[m, f] = std.mean()
    return np.concatenate([x, out], axis=1)


@pytest.mark.parametrize("batch, group, channels", [(4, 2, 1), (8, 4, 1), (8, 4, 2), (4, 4, 2), (2, 4, 1)])
def test_minibatch_std(batch, group, channels):
    rng = np.random.default_rng(batch * 100 + group * 10 + channels)
    x = randn(rng, batch, 4, 3, 3)
    fn = lambda x: minibatch_std(x, group_size=group, num_channels=channels)
    np.testing.assert_allclose(fn(ns.Tensor(x)).data, reference_minibatch_std(x, group, channels), rtol=1e-12)
    check_both_orders(fn, [x])


@pytest.mark.parametrize("bad, match", [
    (lambda: minibatch_std(ns.Tensor(np.ones((6, 4, 2, 2))), group_size=4), "divisible"),
    (lambda: minibatch_std(ns.Tensor(np.ones((4, 3, 2, 2))), num_channels=2), "channels"),
    (lambda: minibatch_std(ns.Tensor(np.ones((4, 2, 2)))), r"\[N, C, H, W\]"),
    (lambda: noise_injection(ns.Tensor(np.ones((2, 3, 4, 4))), ns.Tensor(np.ones((2, 3, 4, 4))), 1.0), "noise"),
    (lambda: noise_injection(ns.Tensor(np.ones((2, 3, 4, 4))), ns.Tensor(np.ones((2, 1, 4, 4))),
                             ns.Tensor(np.ones(2))), "scalar"),
    (lambda: softplus(ns.Tensor(np.ones(3, np.int16))), "dtype"),
])
def test_bad_arguments(bad, match):
    with pytest.raises(ValueError, match=match):
        bad()
