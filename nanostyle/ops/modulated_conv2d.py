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
at every up/down factor.

`_modulate` and `_demodulation_coefficients` are the seams for the CUDA kernels.
"""
from .. import backend
from ..autograd import Tensor
from .conv2d import conv2d_resample

DEMODULATION_EPS = 1e-8


def _modulate(x, styles):
    """x [N, I, H, W] scaled per sample and input channel by styles [N, I]."""
    N, I = styles.shape
    return x * styles.reshape(N, I, 1, 1)


def _demodulation_coefficients(weight, styles):
    """d [N, O] = rsqrt(styles^2 @ (sum_k weight^2).T + eps)."""
    weight_sq = (weight * weight).sum(axis=(2, 3))  # [O, I]
    return ((styles * styles) @ weight_sq.T + DEMODULATION_EPS).rsqrt()


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
