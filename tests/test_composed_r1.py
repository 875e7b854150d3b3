"""The composed check: R1 (sum of squared input gradients) of a tiny discriminator built from the
ops passes a finite-difference check with respect to every weight: the whole double-backward
chain conv2d -> bias_act -> upfirdn2d -> minibatch_std -> linear -> softplus is exact."""
import numpy as np

import nanostyle as ns
from nanostyle.gradcheck import check_backward
from nanostyle.ops import bias_act, conv2d, linear, minibatch_std, setup_filter, softplus, upfirdn2d
from helpers import away_from_zero, randn


def test_r1_of_a_tiny_discriminator_has_exact_weight_gradients():
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
