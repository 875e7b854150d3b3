"""adam_step: one Adam update of a parameter array in place (Kingma & Ba 2015, with bias
correction, as torch.optim.Adam computes it).

  m = beta1 m + (1 - beta1) g
  v = beta2 v + (1 - beta2) g^2
  p = p - lr * (m / (1 - beta1^t)) / (sqrt(v / (1 - beta2^t)) + eps)

The reference: a few in-place NumPy passes with no temporaries beyond one buffer; on the GPU
one fused kernel (kernels/adam.cu: p, g, m, v read once, p, m, v written once). IMPLEMENTATIONS
at the bottom; ops/_impl.py picks one per call.
"""
import math

import numpy as np

from .. import backend
from . import _impl


def adam_step(param, grad, exp_avg, exp_avg_sq, *, lr, beta1, beta2, eps, step):
    """Update raw arrays `param`, `exp_avg`, `exp_avg_sq` in place; `step` counts from 1."""
    arrays = (param, grad, exp_avg, exp_avg_sq)
    if any(a.shape != param.shape for a in arrays):
        raise ValueError(f"adam_step: shapes differ: {[tuple(a.shape) for a in arrays]}")
    backend.check_float_dtype("adam_step", *arrays)
    if step < 1:
        raise ValueError(f"adam_step: step counts from 1, got {step}")
    _impl.pick(IMPLEMENTATIONS, param)(param, grad, exp_avg, exp_avg_sq, lr, beta1, beta2, eps, step)


# ---- the reference -------------------------------------------------------------------------

def _adam_step_ref(param, grad, exp_avg, exp_avg_sq, lr, beta1, beta2, eps, step):
    exp_avg *= beta1
    exp_avg += (1 - beta1) * grad
    exp_avg_sq *= beta2
    exp_avg_sq += (1 - beta2) * grad * grad
    bias1 = 1 - beta1 ** step
    bias2 = 1 - beta2 ** step
    denom = np.sqrt(exp_avg_sq / bias2)
    denom += eps
    param -= (lr / bias1) * exp_avg / denom


# ---- CUDA (kernels/adam.cu) ------------------------------------------------------------------

def _adam_step_cuda(param, grad, exp_avg, exp_avg_sq, lr, beta1, beta2, eps, step):
    from .. import cuda
    for name, a in (("param", param), ("grad", grad), ("exp_avg", exp_avg), ("exp_avg_sq", exp_avg_sq)):
        cuda.check_contiguous("adam_step", name, a)
    scalar = cuda.scalar_type(param.dtype)
    step_size = lr / (1 - beta1 ** step)
    bias2_sqrt = math.sqrt(1 - beta2 ** step)
    cuda.launch("adam", "adam_step", param.dtype, param.size,
                (param, grad, exp_avg, exp_avg_sq, np.int64(param.size),
                 scalar(step_size), scalar(beta1), scalar(beta2), scalar(eps), scalar(bias2_sqrt)))


# ---- which implementation runs (no fast CPU path of its own) -----------------------------------

IMPLEMENTATIONS = _impl.table(ref=_adam_step_ref, cuda=_adam_step_cuda)
