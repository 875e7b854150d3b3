"""softplus(x) = log(1 + exp(x)), stable for large |x|; the logistic GAN losses are built on it
(non-saturating G loss softplus(-D(G(z))), D loss softplus(D(G(z))) + softplus(-D(x))).

Forward: logaddexp(0, x) (= max(x, 0) + log1p(exp(-|x|))), exact and finite at +-1000.
Backward: sigmoid(x), itself a Function whose backward is g * s * (1 - s), so R1's double
backward through the loss is exact. The reference in NumPy and the kernels of
kernels/softplus.cu (IMPLEMENTATIONS at the bottom; ops/_impl.py picks one per call).
"""
import collections

import numpy as np

from .. import backend
from ..autograd import Function, Tensor
from . import _impl
from .bias_act import stable_sigmoid


def softplus(x):
    """log(1 + exp(x)), numerically stable."""
    if not isinstance(x, Tensor):
        raise ValueError(f"softplus: x must be a Tensor, got {type(x).__name__}")
    backend.check_float_dtype("softplus", x.data)
    return Softplus.apply(x)


def sigmoid(x):
    return Sigmoid.apply(x)


class Softplus(Function):
    def forward(self, x):
        return _impl.pick(IMPLEMENTATIONS, x).softplus(x)

    def backward(self, g):
        (x,) = self.inputs
        return g * Sigmoid.apply(x)


class Sigmoid(Function):
    def forward(self, x):
        return _impl.pick(IMPLEMENTATIONS, x).sigmoid(x)

    def backward(self, g):
        (x,) = self.inputs
        s = Sigmoid.apply(x)
        return g * s * (1.0 - s)


# ---- the reference -------------------------------------------------------------------------

def _softplus_ref(x):
    return np.logaddexp(0, x)


def _sigmoid_ref(x):
    return stable_sigmoid(x)


# ---- CUDA (kernels/softplus.cu) --------------------------------------------------------------

def _unary_cuda(name, x):
    from .. import cuda
    x = cuda.device_array(x)
    y = cuda.empty(x.shape, x.dtype)
    cuda.launch("softplus", name, x.dtype, x.size, (y, x, np.int64(x.size)))
    return y


def _softplus_cuda(x):
    return _unary_cuda("softplus_forward", x)


def _sigmoid_cuda(x):
    return _unary_cuda("sigmoid_forward", x)


# ---- which implementation runs (no fast CPU path: the reference is one NumPy pass) -------------

Passes = collections.namedtuple("Passes", "softplus sigmoid")
IMPLEMENTATIONS = _impl.table(ref=Passes(_softplus_ref, _sigmoid_ref), cuda=Passes(_softplus_cuda, _sigmoid_cuda))
