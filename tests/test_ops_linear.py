"""linear: forward against its definition, gradients of first and second order with lr_mul,
bias and activation, errors."""
import math

import numpy as np
import pytest

import nanostyle as ns
from nanostyle.ops import linear
from nanostyle.ops.bias_act import ACTIVATIONS
from helpers import check_both_orders, randn
from test_ops_bias_act import REFERENCE


@pytest.mark.parametrize("lr_mul, activation, with_bias", [
    (1.0, "linear", True), (0.01, "lrelu", True), (1.0, "lrelu", False), (0.01, "linear", False),
    (0.1, "swish", True),
])
def test_linear(lr_mul, activation, with_bias):
    rng = np.random.default_rng(int(lr_mul * 100) + with_bias)
    # weights stored as randn / lr_mul, as the networks initialise them; redraw off the kink
    while True:
        x, w = randn(rng, 5, 6), randn(rng, 4, 6) / lr_mul
        b = randn(rng, 4) / lr_mul if with_bias else None
        z = x @ (w * lr_mul / math.sqrt(6)).T + (0 if b is None else b * lr_mul)
        if activation != "lrelu" or np.abs(z).min() > 1e-2:
            break
    fn = (lambda x, w, b: linear(x, w, b, lr_mul=lr_mul, activation=activation)) if with_bias else \
        (lambda x, w: linear(x, w, None, lr_mul=lr_mul, activation=activation))
    inputs = [x, w, b] if with_bias else [x, w]
    y = fn(*[ns.Tensor(a) for a in inputs]).data
    alpha, gain, _ = ACTIVATIONS[activation]
    np.testing.assert_allclose(y, REFERENCE[activation](z, alpha) * gain, rtol=1e-12)
    check_both_orders(fn, inputs)


def test_float32_in_float32_out():
    x = ns.Tensor(np.random.default_rng(0).standard_normal((2, 3)).astype(np.float32))
    assert linear(x, ns.Tensor(np.ones((4, 3), np.float32)), activation="lrelu").dtype == np.float32


@pytest.mark.parametrize("bad, match", [
    (lambda: linear(ns.Tensor(np.ones((2, 3))), ns.Tensor(np.ones((4, 5)))), "features"),
    (lambda: linear(ns.Tensor(np.ones(3)), ns.Tensor(np.ones((4, 3)))), "expected"),
    (lambda: linear(ns.Tensor(np.ones((2, 3))), ns.Tensor(np.ones((4, 3))), ns.Tensor(np.ones(3))), "bias"),
])
def test_bad_arguments(bad, match):
    with pytest.raises(ValueError, match=match):
        bad()
