"""modulated_conv2d: StyleGAN2's style-modulated, demodulated convolution (Karras et al. 2020,
eq. 1-3), with optional FIR up/downsampling and additive noise.

  w'[n,o,i,k] = w[o,i,k] * s[n,i]                              (modulation, eq. 1)
  d[n,o]      = 1 / sqrt(sum_{i,k} w'[n,o,i,k]^2 + 1e-8)       (demodulation, eq. 3)
  y[n]        = conv2d_resample(x[n], w'[n] * d[n]) + noise

Because modulation scales input channels and demodulation scales output channels, the same
result comes from one shared-weight convolution of the whole batch (one GEMM):
  y = conv2d_resample(x * s[:, :, None, None], w) * d[:, :, None, None] + noise,
with d[n,o] = rsqrt(sum_i s[n,i]^2 * sum_k w[o,i,k]^2 + 1e-8). That is the form used here; the
reference's fused grouped convolution computes the same numbers. Orientation: cross-correlation
at every up/down factor. The modulation, its styles gradient and the demodulation
coefficients have a reference in NumPy and kernels in kernels/modulated_conv2d.cu (IMPLEMENTATIONS at
the bottom; ops/_impl.py picks one per call).
"""
import collections

import numpy as np

from .. import backend
from ..autograd import Function, Tensor
from . import _impl
from .conv2d import conv2d_resample

DEMODULATION_EPS = 1e-8


def modulated_conv2d(x, weight, styles, noise=None, up=1, down=1, padding=0,
                     resample_filter=None, demodulate=True):
    """StyleGAN2's modulated convolution. x [N, I, H, W], weight [O, I, kh, kw], styles [N, I],
    noise broadcastable to the output ([N, 1, H', W'])."""
    for name, t in (("x", x), ("weight", weight), ("styles", styles)):
        if not isinstance(t, Tensor):
            raise ValueError(f"modulated_conv2d: {name} must be a Tensor, got {type(t).__name__}")
    if x.ndim != 4 or weight.ndim != 4 or styles.ndim != 2:
        raise ValueError(f"modulated_conv2d: expected x [N,I,H,W], weight [O,I,kh,kw], styles [N,I]; "
                         f"got x {tuple(x.shape)}, weight {tuple(weight.shape)}, styles {tuple(styles.shape)}")
    N, I = x.shape[:2]
    if weight.shape[1] != I or styles.shape != (N, I):
        raise ValueError(f"modulated_conv2d: channel mismatch: x {tuple(x.shape)}, "
                         f"weight {tuple(weight.shape)}, styles {tuple(styles.shape)}")
    if up > 1 and down > 1:
        raise ValueError(f"modulated_conv2d: up={up} and down={down} together are not supported")
    backend.check_float_dtype("modulated_conv2d", x.data, weight.data, styles.data,
                              None if noise is None else noise.data)
    O = weight.shape[0]
    y = conv2d_resample(_modulate(x, styles), weight, f=resample_filter, up=up, down=down,
                        padding=padding, flip_weight=True)
    if demodulate:
        y = y * _demodulation_coefficients(weight, styles).reshape(N, O, 1, 1)
    if noise is not None:
        y = y + noise
    return y


def _modulate(x, styles):
    """x [N, I, H, W] scaled per sample and input channel by styles [N, I]."""
    return Modulate.apply(x, styles)


def _demodulation_coefficients(weight, styles):
    """d [N, O] = rsqrt(styles^2 @ (sum_k weight^2).T + eps)."""
    return DemodulationCoefficients.apply(weight, styles)


class Modulate(Function):
    """y[n, i] = x[n, i] * styles[n, i] (per sample and input channel)."""

    def forward(self, x, styles):
        return _impl.pick(IMPLEMENTATIONS, x).modulate(x, styles)

    def backward(self, g):
        x, styles = self.inputs
        gx = Modulate.apply(g, styles) if self.needs_input_grad[0] else None
        gs = StyleGrad.apply(g, x) if self.needs_input_grad[1] else None
        return gx, gs


class StyleGrad(Function):
    """dstyles[n, i] = sum over pixels of g * x: bilinear in (g, x)."""

    def forward(self, g, x):
        return _impl.pick(IMPLEMENTATIONS, g).style_grad(g, x)

    def backward(self, gs):
        g, x = self.inputs
        gg = Modulate.apply(x, gs) if self.needs_input_grad[0] else None
        gx = Modulate.apply(g, gs) if self.needs_input_grad[1] else None
        return gg, gx


class DemodulationCoefficients(Function):
    """d[n, o] = rsqrt(sum_i styles[n, i]^2 * sum_k weight[o, i, k]^2 + eps).

    With h = g * d^3: dstyles = -styles * (h @ wsq), dweight = -weight * (h.T @ styles^2),
    written in Tensor ops (d recomputed as a graph node) so the second order is exact."""

    def forward(self, weight, styles):
        return _impl.pick(IMPLEMENTATIONS, weight).demodulation(weight, styles)

    def backward(self, g):
        weight, styles = self.inputs
        d = DemodulationCoefficients.apply(weight, styles)
        h = g * d * d * d
        gw = gs = None
        if self.needs_input_grad[0]:
            O, I = weight.shape[:2]
            gw = -weight * (h.T @ (styles * styles)).reshape(O, I, 1, 1)
        if self.needs_input_grad[1]:
            gs = -styles * (h @ (weight * weight).sum(axis=(2, 3)))
        return gw, gs


# ---- the reference -------------------------------------------------------------------------

def _modulate_ref(x, styles):
    N, I = styles.shape
    return x * styles.reshape(N, I, 1, 1)


def _style_grad_ref(g, x):
    N, I = g.shape[:2]
    return (g.reshape(N, I, -1) * x.reshape(N, I, -1)).sum(axis=2)


def _demodulation_ref(weight, styles):
    weight_sq = (weight * weight).sum(axis=(2, 3))                       # [O, I]
    return 1.0 / np.sqrt((styles * styles) @ weight_sq.T + DEMODULATION_EPS)


# ---- CUDA (kernels/modulated_conv2d.cu) ------------------------------------------------------------

def _modulate_forward_cuda(x, styles):
    from .. import cuda
    x, styles = cuda.device_array(x), cuda.device_array(styles)
    if styles.shape != x.shape[:2]:
        raise ValueError(f"modulated_conv2d: styles {styles.shape} do not match x {x.shape}")
    y = cuda.empty(x.shape, x.dtype)
    cuda.launch("modulated_conv2d", "modulate_forward", x.dtype, x.size,
                (y, x, styles, np.int64(x.size), np.int64(x.shape[2] * x.shape[3])))
    return y


def _style_grad_cuda(g, x):
    from .. import cuda
    g, x = cuda.device_array(g), cuda.device_array(x)
    planes = g.shape[0] * g.shape[1]
    out = cuda.empty(g.shape[:2], g.dtype)
    cuda.launch("modulated_conv2d", "modulate_backward_styles", g.dtype, planes * cuda.BLOCK,
                (out, g, x, np.int64(planes), np.int64(g.shape[2] * g.shape[3])),
                shared_mem=cuda.BLOCK * g.dtype.itemsize, grid=(min(planes, 65535),))
    return out


def _demodulation_cuda(weight, styles):
    from .. import cuda
    weight, styles = cuda.device_array(weight), cuda.device_array(styles)
    O, I, kh, kw = weight.shape
    N = styles.shape[0]
    wsq = cuda.empty((O, I), weight.dtype)
    cuda.launch("modulated_conv2d", "weight_square_sum", weight.dtype, O * I, (wsq, weight, np.int64(O * I), np.int32(kh * kw)))
    d = cuda.empty((N, O), weight.dtype)
    S = cuda.scalar_type(weight.dtype)
    cuda.launch("modulated_conv2d", "demodulation_coefficients", weight.dtype, N * O,
                (d, styles, wsq, np.int32(N), np.int32(O), np.int32(I), S(DEMODULATION_EPS)))
    return d


# ---- which implementation runs (no fast CPU path of its own) -----------------------------------

Passes = collections.namedtuple("Passes", "modulate style_grad demodulation")
IMPLEMENTATIONS = _impl.table(ref=Passes(_modulate_ref, _style_grad_ref, _demodulation_ref),
                              cuda=Passes(_modulate_forward_cuda, _style_grad_cuda, _demodulation_cuda))
