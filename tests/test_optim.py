"""Adam (the formula), lazy regularisation's scaling, gradient sanitising, the generator's EMA."""
import math

import numpy as np
import pytest

import nanostyle as ns
from nanostyle.ops.adam import adam_step
from nanostyle.optim import ema_beta, ema_update, lazy_regularization, sanitize_gradients
from test_networks import tiny


def test_adam_step_matches_the_formula():
    rng = np.random.default_rng(1)
    p, m, v = rng.standard_normal(10), np.zeros(10), np.zeros(10)
    p_ref, m_ref, v_ref = p.copy(), m.copy(), v.copy()
    for t in range(1, 4):
        g = rng.standard_normal(10)
        adam_step(p, g, m, v, lr=0.01, beta1=0.5, beta2=0.9, eps=1e-8, step=t)
        m_ref = 0.5 * m_ref + 0.5 * g
        v_ref = 0.9 * v_ref + 0.1 * g * g
        p_ref = p_ref - 0.01 * (m_ref / (1 - 0.5 ** t)) / (np.sqrt(v_ref / (1 - 0.9 ** t)) + 1e-8)
    np.testing.assert_allclose(p, p_ref, rtol=1e-13)
    with pytest.raises(ValueError, match="adam_step"):
        adam_step(p, g[:3], m, v, lr=0.1, beta1=0, beta2=0.9, eps=1e-8, step=1)


def test_optimizer_helpers():
    lr, betas = lazy_regularization(0.0025, (0.0, 0.99), 16)
    assert math.isclose(lr, 0.0025 * 16 / 17) and math.isclose(betas[1], 0.99 ** (16 / 17))
    assert ema_beta(16, 0) == 0.0
    assert math.isclose(ema_beta(32, 10 ** 9, ema_kimg=10), 0.5 ** (32 / 10000))
    param = ns.nn.Parameter(np.ones(4))
    param.grad = ns.Tensor(np.array([1.0, np.nan, np.inf, -np.inf]))
    assert sanitize_gradients([param]) == 3 and np.array_equal(param.grad.data, [1, 0, 0, 0])
    G, _ = tiny(16, seed=0)
    G2, _ = tiny(16, seed=9)
    ema_update(G2, G, 0.25)
    a, b = G.parameters()[0].data, G2.parameters()[0].data
    assert not np.array_equal(a, b)
