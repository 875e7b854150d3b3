"""nanostyle/gradcheck.py: the finite-difference checks catch a wrong gradient, and a backward
that is right to first order but not differentiable (raw arrays in its result)."""
import numpy as np
import pytest

import nanostyle as ns
from nanostyle.gradcheck import check_backward, check_double_backward, GradientCheckError


def test_gradcheck_catches_a_wrong_gradient():
    class WrongSquare(ns.Function):
        def forward(self, a):
            return a * a

        def backward(self, g):
            (a,) = self.inputs
            return g * a * 2.1  # wrong on purpose

    x = np.random.default_rng(1).standard_normal((3, 3))
    with pytest.raises(GradientCheckError):
        check_backward(lambda a: WrongSquare.apply(a), [x])


def test_gradcheck_catches_a_first_order_only_backward():
    class RawBackward(ns.Function):
        """Right first derivative, but returned as a constant: second order must fail."""
        def forward(self, a):
            return a * a * a

        def backward(self, g):
            (a,) = self.inputs
            return ns.Tensor(g.data * 3 * a.data * a.data)

    x = np.random.default_rng(2).standard_normal((3, 3))
    check_backward(lambda a: RawBackward.apply(a), [x])
    with pytest.raises(GradientCheckError):
        check_double_backward(lambda a: RawBackward.apply(a), [x])
