"""Autograd engine: values and gradients of elementary ops against finite differences
(first and second order), graph pruning, no_grad, accumulation, and R1's double backward
through a tiny discriminator built from the ops."""
import numpy as np
import pytest

import nanostyle as ns
from nanostyle.gradcheck import check_backward, check_double_backward
from nanostyle.ops import bias_act, conv2d, linear, minibatch_std, setup_filter, softplus, upfirdn2d
from helpers import away_from_zero, randn


@pytest.mark.parametrize("name,func,shapes", [
    ("add_broadcast", lambda a, b: a + b, [(3, 4), (1, 4)]),
    ("sub_broadcast", lambda a, b: a - b, [(2, 3, 4), (3, 1)]),
    ("mul", lambda a, b: a * b, [(3, 4), (3, 4)]),
    ("mul_broadcast", lambda a, b: a * b, [(2, 3, 4), (4,)]),
    ("div", lambda a, b: a / (b * b + 1.0), [(3, 4), (3, 4)]),
    ("div_broadcast", lambda a, b: a / (b * b + 1.0), [(2, 3, 4), (3, 1)]),
    ("matmul", lambda a, b: a @ b, [(3, 5), (5, 2)]),
    ("batched_matmul", lambda a, b: a @ b, [(2, 3, 5), (5, 2)]),
    ("pow3", lambda a: a ** 3, [(4, 3)]),
    ("rsqrt", lambda a: (a * a + 0.5).rsqrt(), [(4, 3)]),
    ("exp_log", lambda a: (a.exp() + 1.0).log(), [(4, 3)]),
    ("sum_axis", lambda a: a.sum(axis=(0, 2)), [(2, 3, 4)]),
    ("mean_keepdims", lambda a: a.mean(axis=1, keepdims=True), [(2, 3, 4)]),
    ("reshape_transpose", lambda a: a.reshape(6, 4).transpose(1, 0) * 2.0, [(2, 3, 4)]),
    ("getitem_slice", lambda a: a[1:, ::2] * a[1:, ::2], [(3, 4)]),
    ("getitem_fancy", lambda a: a[np.array([0, 2, 0])] ** 2, [(3, 4)]),
    ("concat", lambda a, b: ns.concat([a * a, b], axis=1), [(2, 3), (2, 2)]),
    ("stack", lambda a, b: ns.stack([a, a * b], axis=0), [(2, 3), (2, 3)]),
    ("where", lambda a, b: ns.where(np.array([[True, False, True]]), a * a, b), [(2, 3), (2, 3)]),
    ("broadcast_to", lambda a: a.broadcast_to((3, 2, 4)) ** 2, [(2, 1)]),
])
def test_elementary_ops_first_and_second_order(name, func, shapes):
    rng = np.random.default_rng(abs(hash(name)) % 2**32)
    if name == "broadcast_to":
        shapes = [(2, 1)]
        func = lambda a: a.reshape(2, 1).broadcast_to((3, 2, 4)) ** 2
    inputs = [randn(rng, *s) for s in shapes]
    check_backward(func, inputs)
    check_double_backward(func, inputs)


def test_backward_accumulates_into_leaves_and_no_grad_records_nothing():
    rng = np.random.default_rng(3)
    a = ns.Tensor(rng.standard_normal((2, 3)), requires_grad=True)
    b = ns.Tensor(rng.standard_normal((2, 3)), requires_grad=True)
    (a * b).sum().backward()
    np.testing.assert_allclose(a.grad.data, b.data)
    (a * b).sum().backward()
    np.testing.assert_allclose(a.grad.data, 2 * b.data)
    with ns.no_grad():
        c = a * b
    assert not c.requires_grad and c.is_leaf


def test_grad_prunes_branches_not_leading_to_inputs():
    calls = []

    class Spy(ns.Function):
        def forward(self, w, x):
            return w * x

        def backward(self, g):
            calls.append(self.needs_input_grad)
            w, x = self.inputs
            return (g * x if self.needs_input_grad[0] else None,
                    g * w if self.needs_input_grad[1] else None)

    rng = np.random.default_rng(4)
    w = ns.Tensor(rng.standard_normal(3), requires_grad=True)
    x = ns.Tensor(rng.standard_normal(3), requires_grad=True)
    (gx,) = ns.grad(Spy.apply(w, x).sum(), [x])
    np.testing.assert_allclose(gx.data, w.data)
    assert calls == [(False, True)]


def test_unused_input_gets_none_or_zeros():
    a = ns.Tensor(np.random.default_rng(5).standard_normal(3), requires_grad=True)
    b = ns.Tensor(np.ones(3), requires_grad=True)
    assert ns.grad((a * a).sum(), [b])[0] is None
    assert np.all(ns.grad((a * a).sum(), [b], allow_unused=False)[0].data == 0)


def test_float32_stays_float32():
    a = ns.Tensor(np.random.default_rng(6).standard_normal(3).astype(np.float32), requires_grad=True)
    y = (a * 2.0 + 1.0) / 3.0
    assert y.dtype == np.float32
    (g,) = ns.grad(y.sum(), [a])
    assert g.dtype == np.float32


def test_r1_of_a_tiny_discriminator_has_exact_weight_gradients():
    """R1 (sum of squared input gradients) of a tiny discriminator built from the ops passes a
    finite-difference check with respect to every weight: the whole double-backward chain
    conv2d -> bias_act -> upfirdn2d -> minibatch_std -> linear -> softplus is exact."""
    rng = np.random.default_rng(2024)
    f = setup_filter([1, 3, 3, 1], dtype=np.float64)
    # Samples of a group differ in scale so that minibatch_std's variances stay far from its
    # 1e-8 floor, where the curvature is so high that finite differences would measure nothing.
    x = randn(rng, 4, 1, 8, 8) * np.array([0.5, 1.0, 2.0, 3.0])[:, None, None, None]
    params = [randn(rng, 3, 1, 3, 3) * 0.7, away_from_zero(rng, 3) * 0.5, randn(rng, 2, 4 * 4 * 4) * 0.5,
              randn(rng, 2)]

    def discriminator(img, w_conv, b_conv, w_fc, b_fc):
        h = conv2d(img, w_conv, padding=1)
        h = bias_act(h, b_conv, act="lrelu")
        h = upfirdn2d(h, f, down=2, padding=1)
        h = minibatch_std(h, group_size=4)
        h = linear(h.reshape(h.shape[0], -1), w_fc, b_fc)
        return softplus(h)

    def r1(*weights):
        img = ns.Tensor(x, requires_grad=True)
        (g,) = ns.grad(discriminator(img, *weights).sum(), [img], create_graph=True)
        return (g * g).sum()

    # lrelu's kink: no pre-activation may sit within a finite-difference step of 0
    pre = conv2d(ns.Tensor(x), ns.Tensor(params[0]), padding=1).data + params[1][None, :, None, None]
    assert np.abs(pre).min() > 1e-5, "redraw: an input landed on the lrelu kink"
    h = upfirdn2d(bias_act(conv2d(ns.Tensor(x), ns.Tensor(params[0]), padding=1),
                           ns.Tensor(params[1]), act="lrelu"), f, down=2, padding=1).data.reshape(4, 1, -1)
    assert ((h - h.mean(axis=0)) ** 2).mean(axis=0).min() > 1e-4, "redraw: a group variance is ~0"
    check_backward(r1, params, num_directions=2)
