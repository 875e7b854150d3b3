"""Shared test helpers: random float64 inputs that avoid kinks, gradient-check wrappers, an
optimiser that does not step."""
import numpy as np

from nanostyle.gradcheck import check_backward, check_double_backward


def randn(rng, *shape, dtype=np.float64):
    return rng.standard_normal(shape).astype(dtype)


def away_from_zero(rng, *shape, margin=1e-2):
    """Random normal values with |v| >= margin (redrawn), for inputs to relu/lrelu kinks."""
    values = rng.standard_normal(shape)
    bad = np.abs(values) < margin
    while bad.any():
        values[bad] = rng.standard_normal(int(bad.sum()))
        bad = np.abs(values) < margin
    return values


def check_both_orders(func, inputs, **kwargs):
    check_backward(func, inputs, **kwargs)
    check_double_backward(func, inputs, **kwargs)


class NoStep:
    """An optimiser that keeps the gradients and leaves the weights alone."""

    def __init__(self, params):
        self.params = params

    def zero_grad(self):
        for p in self.params:
            p.grad = None

    def step(self):
        pass
