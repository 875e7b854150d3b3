"""noise_injection: StyleGAN2's per-pixel noise, x + noise * strength (Karras et al. 2019, sec. 3.2).

noise [N, 1, H, W] is shared by all channels; strength is one learned scalar per layer.
Gradients: dx = g, dnoise = strength * sum_c g, dstrength = sum(g * noise). The forward and the
strength's reduction have a reference in NumPy and kernels in kernels/noise.cu (IMPLEMENTATIONS
at the bottom; ops/_impl.py picks one per call).
"""
import collections

import numpy as np

from .. import backend
from ..autograd import Function, Tensor
from . import _impl


def noise_injection(x, noise, strength):
    """x [N, C, H, W] + noise [N, 1, H, W] * strength (a scalar Tensor, shape () or (1,))."""
    if not isinstance(strength, Tensor):
        strength = Tensor(backend.get_array_module(x.data).asarray(strength, dtype=x.dtype))
    for name, t in (("x", x), ("noise", noise)):
        if not isinstance(t, Tensor):
            raise ValueError(f"noise_injection: {name} must be a Tensor, got {type(t).__name__}")
    if x.ndim != 4 or noise.ndim != 4 or noise.shape[1] != 1 or noise.shape[0] != x.shape[0] \
            or noise.shape[2:] != x.shape[2:]:
        raise ValueError(f"noise_injection: expected x [N,C,H,W] and noise [N,1,H,W]; got x "
                         f"{tuple(x.shape)}, noise {tuple(noise.shape)}")
    if strength.size != 1:
        raise ValueError(f"noise_injection: strength must be a scalar, got shape {tuple(strength.shape)}")
    backend.check_float_dtype("noise_injection", x.data, noise.data, strength.data)
    return NoiseInjection.apply(x, noise, strength)


class NoiseInjection(Function):
    def forward(self, x, noise, strength):
        return _impl.pick(IMPLEMENTATIONS, x).forward(x, noise, strength)

    def backward(self, g):
        x, noise, strength = self.inputs
        gx = g if self.needs_input_grad[0] else None
        gnoise = gstrength = None
        if self.needs_input_grad[1]:
            gnoise = g.sum(axis=1, keepdims=True) * strength.reshape(())
        if self.needs_input_grad[2]:
            gstrength = NoiseStrengthGrad.apply(g, noise).reshape(strength.shape)
        return gx, gnoise, gstrength


class NoiseStrengthGrad(Function):
    """sum(g * noise) over everything (noise broadcast over channels): bilinear in (g, noise)."""

    def forward(self, g, noise):
        return _impl.pick(IMPLEMENTATIONS, g).strength_grad(g, noise)

    def backward(self, gs):
        g, noise = self.inputs
        gg = gn = None
        if self.needs_input_grad[0]:
            gg = noise.broadcast_to(g.shape) * gs
        if self.needs_input_grad[1]:
            gn = g.sum(axis=1, keepdims=True) * gs
        return gg, gn


# ---- the reference -------------------------------------------------------------------------

def _noise_ref(x, noise, strength):
    return x + noise * strength.reshape(())


def _noise_strength_grad_ref(g, noise):
    return (g * noise).sum()


# ---- CUDA (kernels/noise.cu) -----------------------------------------------------------------

def _noise_forward_cuda(x, noise, strength):
    from .. import cuda
    x, noise, strength = (cuda.device_array(a) for a in (x, noise, strength))
    N, C, H, W = x.shape
    y = cuda.empty(x.shape, x.dtype)
    cuda.launch("noise", "noise_forward", x.dtype, x.size,
                (y, x, noise, strength.reshape(1), np.int64(x.size), np.int32(C), np.int64(H * W)))
    return y


def _noise_strength_grad_cuda(g, noise):
    from .. import cuda
    g, noise = cuda.device_array(g), cuda.device_array(noise)
    N, C, H, W = g.shape
    blocks = min(cuda.grid_for(g.size)[0], 1024)
    partials = cuda.empty((blocks,), g.dtype)   # one per block: no atomics, the same bits every run
    cuda.launch("noise", "noise_strength_grad", g.dtype, g.size,
                (partials, g, noise, np.int64(g.size), np.int32(C), np.int64(H * W)),
                shared_mem=cuda.BLOCK * g.dtype.itemsize, grid=(blocks,))
    return partials.sum()


# ---- which implementation runs (no fast CPU path of its own) -----------------------------------

Passes = collections.namedtuple("Passes", "forward strength_grad")
IMPLEMENTATIONS = _impl.table(ref=Passes(_noise_ref, _noise_strength_grad_ref),
                              cuda=Passes(_noise_forward_cuda, _noise_strength_grad_cuda))
