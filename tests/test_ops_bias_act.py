"""bias_act: forward against definitions, gradients of first and second order for every
activation, gain/alpha/clamp variants, errors."""
import numpy as np
import pytest

import nanostyle as ns
from nanostyle.ops import bias_act
from nanostyle.ops.bias_act import ACTIVATIONS
from helpers import away_from_zero, check_both_orders

REFERENCE = {
    "linear": lambda z, a: z,
    "relu": lambda z, a: np.maximum(z, 0),
    "lrelu": lambda z, a: np.where(z > 0, z, a * z),
    "tanh": np.tanh and (lambda z, a: np.tanh(z)),
    "sigmoid": lambda z, a: 1 / (1 + np.exp(-z)),
    "elu": lambda z, a: np.where(z > 0, z, np.exp(z) - 1),
    "selu": lambda z, a: 1.0507009873554805 * np.where(z > 0, z, 1.6732632423543772 * (np.exp(z) - 1)),
    "softplus": lambda z, a: np.log1p(np.exp(z)),
    "swish": lambda z, a: z / (1 + np.exp(-z)),
}


@pytest.mark.parametrize("act", sorted(ACTIVATIONS))
@pytest.mark.parametrize("with_bias, dim", [(True, 1), (False, 1), (True, 0), (True, -1)])
def test_every_activation(act, with_bias, dim):
    rng = np.random.default_rng(hash((act, with_bias, dim)) % 2**32)
    x = away_from_zero(rng, 3, 4, 2, 3) * 1.5
    b = away_from_zero(rng, x.shape[dim]) * 0.3 if with_bias else None
    if b is not None:  # redraw so that x + b keeps away from the kink at 0
        shape = [1] * 4
        shape[dim] = b.shape[0]
        z = x + b.reshape(shape)
        x = np.where(np.abs(z) < 1e-2, x + 0.1, x)
    fn = (lambda x, b: bias_act(x, b, dim=dim, act=act)) if with_bias else (lambda x: bias_act(x, act=act))
    inputs = [x, b] if with_bias else [x]
    y = fn(*[ns.Tensor(a) for a in inputs]).data
    alpha, gain, _ = ACTIVATIONS[act]
    z = x if b is None else x + b.reshape([b.shape[0] if i == dim % 4 else 1 for i in range(4)])
    np.testing.assert_allclose(y, REFERENCE[act](z, alpha) * gain, rtol=1e-12, atol=1e-12)
    check_both_orders(fn, inputs)


@pytest.mark.parametrize("act", ["lrelu", "tanh", "swish"])
def test_gain_alpha_and_clamp(act):
    rng = np.random.default_rng(11)
    x = away_from_zero(rng, 2, 3, 4, 4) * 2
    b = away_from_zero(rng, 3) * 0.1
    clamp = 1.3
    z = x + b[None, :, None, None]
    y_unclamped = REFERENCE[act](z, 0.1) * 0.7
    # keep inputs away from the clamp boundary and the kink
    keep = (np.abs(np.abs(y_unclamped) - clamp) > 0.05) & (np.abs(z) > 1e-2)
    x = np.where(keep, x, x + 0.37)
    fn = lambda x, b: bias_act(x, b, act=act, alpha=0.1, gain=0.7, clamp=clamp)
    y = fn(ns.Tensor(x), ns.Tensor(b)).data
    z = x + b[None, :, None, None]
    np.testing.assert_allclose(y, np.clip(REFERENCE[act](z, 0.1) * 0.7, -clamp, clamp), rtol=1e-12)
    assert np.abs(y).max() <= clamp
    check_both_orders(fn, [x, b])


def test_float32_in_float32_out():
    x = ns.Tensor(np.random.default_rng(0).standard_normal((2, 3)).astype(np.float32))
    assert bias_act(x, ns.Tensor(np.ones(3, np.float32)), act="lrelu").dtype == np.float32


@pytest.mark.parametrize("bad, match", [
    (lambda: bias_act(ns.Tensor(np.ones((2, 3))), ns.Tensor(np.ones(4))), "bias"),
    (lambda: bias_act(ns.Tensor(np.ones((2, 3))), act="gelu"), "unknown activation"),
    (lambda: bias_act(ns.Tensor(np.ones((2, 3), np.int32))), "dtype"),
    (lambda: bias_act(ns.Tensor(np.ones((2, 3))), ns.Tensor(np.ones(3, np.float32))), "mixed"),
])
def test_bad_arguments(bad, match):
    with pytest.raises(ValueError, match=match):
        bad()
