"""bias_act's fast CPU path for lrelu without clamp, StyleGAN2's activation after every layer:
  y = max(gain z, alpha gain z),   dz = dy * max(gain [z > 0], alpha gain)
plain vectorised passes instead of NumPy's masked `where` loops, in blocks of samples small
enough for the passes over them to stay in cache. Equal to the reference's where(z > 0, ...)
when 0 <= alpha <= 1 and gain >= 0, up to float32 rounding of alpha * gain. Every other
activation runs the reference (bias_act.py).
"""
import numpy as np

from . import _impl
from .bias_act import _bias_act_grad_ref, _bias_act_ref, _bias_shape


def _applies(act, clamp, alpha, gain):
    return (act == "lrelu" and clamp is None and 0 <= alpha <= 1 and gain >= 0
            and _impl.fast_path_on("bias_act.lrelu"))


def _blocks(array, elements=1 << 18):
    """Slices of array's first axis of about `elements` elements each (at least one row)."""
    step = max(1, elements // max(1, array[0].size))
    return [slice(i, min(i + step, len(array))) for i in range(0, len(array), step)]


def bias_act(x, b, dim, act, alpha, gain, clamp):
    """Raw arrays -> (y, z) with z = x + b the saved pre-activation."""
    if not _applies(act, clamp, alpha, gain) or dim == 0:
        return _bias_act_ref(x, b, dim, act, alpha, gain, clamp)
    bias = None if b is None else b.reshape(_bias_shape(x.ndim, dim, b.shape[0]))
    z = x if bias is None else np.empty_like(x)
    y = np.empty_like(x)
    high, low = z.dtype.type(gain), z.dtype.type(alpha * gain)

    for i in _blocks(x):
        if bias is not None:
            np.add(x[i], bias, out=z[i])
        np.multiply(z[i], high, out=y[i])
        np.maximum(y[i], np.multiply(z[i], low), out=y[i])   # gain z where z > 0, else alpha gain z
    return y, z


def bias_act_grad(dy, z, act, alpha, gain, clamp):
    """dz = dy * act'(z) * gain."""
    if not _applies(act, clamp, alpha, gain) or dy.ndim == 0 or z.shape != dy.shape:
        return _bias_act_grad_ref(dy, z, act, alpha, gain, clamp)
    dz = np.empty_like(dy)
    high, low = dy.dtype.type(gain), dy.dtype.type(alpha * gain)

    for i in _blocks(dy):
        slope = np.multiply(np.greater(z[i], 0), high, dtype=dy.dtype)
        np.maximum(slope, low, out=slope)             # gain where z > 0, else alpha * gain
        np.multiply(dy[i], slope, out=dz[i])
    return dz
