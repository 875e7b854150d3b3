"""softplus(x) = log(1 + exp(x)), stable for large |x|; the logistic GAN losses are built on it
(non-saturating G loss softplus(-D(G(z))), D loss softplus(D(G(z))) + softplus(-D(x))).

Forward: logaddexp(0, x) (= max(x, 0) + log1p(exp(-|x|))), exact and finite at +-1000.
Backward: sigmoid(x), itself a Function whose backward is g * s * (1 - s), so R1's double
backward through the loss is exact.
"""
from .. import backend
from ..autograd import Function, Tensor
from .bias_act import stable_sigmoid


def _softplus_forward(x):
    if backend.is_cuda_array(x):
        return _unary_cuda("softplus_forward", x)
    return backend.get_array_module(x).logaddexp(0, x)


def _sigmoid_forward(x):
    if backend.is_cuda_array(x):
        return _unary_cuda("sigmoid_forward", x)
    return stable_sigmoid(backend.get_array_module(x), x)


class Softplus(Function):
    def forward(self, x):
        return _softplus_forward(x)

    def backward(self, g):
        (x,) = self.inputs
        return g * Sigmoid.apply(x)


class Sigmoid(Function):
    def forward(self, x):
        return _sigmoid_forward(x)

    def backward(self, g):
        (x,) = self.inputs
        s = Sigmoid.apply(x)
        return g * s * (1.0 - s)


def sigmoid(x):
    return Sigmoid.apply(x)


def softplus(x):
    """log(1 + exp(x)), numerically stable."""
    if not isinstance(x, Tensor):
        raise ValueError(f"softplus: x must be a Tensor, got {type(x).__name__}")
    backend.check_float_dtype("softplus", x.data)
    return Softplus.apply(x)


# --- CUDA launchers (kernels/softplus.cu) ---------------------------------------------------

def _unary_cuda(name, x):
    import numpy as np
    from .. import cuda
    x = cuda.device_array(x)
    y = cuda.empty(x.shape, x.dtype)
    cuda.launch("softplus", name, x.dtype, x.size, (y, x, np.int64(x.size)))
    return y
