"""bias_act: bias + activation + gain + clamp in one op (StyleGAN2-ADA's fused bias_act).

  y = clamp(act(x + b) * gain, -clamp, clamp)       (b broadcast along axis `dim`)

Activations and their defaults (alpha, gain) follow the reference table: linear (0, 1),
relu (0, sqrt 2), lrelu (0.2, sqrt 2), tanh, sigmoid, elu, selu, softplus (0, 1), swish (0, sqrt 2).

Gradient structure (as the reference): BiasAct's backward is its own Function, BiasActGrad,
  dx = dy * act'(x + b) * gain * [|y| <= clamp],   db = sum of dx over all axes but `dim`.
BiasActGrad is linear in dy, so its gradient wrt dy is BiasActGrad again; its gradient wrt the
pre-activation is dy * act''(x + b) * gain (zero for linear, relu and lrelu, whose second
derivative vanishes almost everywhere). That gives exact second-order gradients (R1); third
order is not supported for the curved activations (act'' is taken as a constant there).

Forward saves the pre-activation x + b (what every derivative needs). Each of the three passes
(forward, gradient, second derivative) has a reference here in plain NumPy and a CUDA kernel in
kernels/bias_act.cu (IMPLEMENTATIONS at the bottom; ops/_impl.py picks one per call).
"""
import collections
import math

import numpy as np

from .. import backend
from ..autograd import Function, Tensor
from . import _impl

ACTIVATIONS = {
    #  name       def_alpha  def_gain        2nd derivative non-zero
    "linear":   (0.0, 1.0, False),
    "relu":     (0.0, math.sqrt(2), False),
    "lrelu":    (0.2, math.sqrt(2), False),
    "tanh":     (0.0, 1.0, True),
    "sigmoid":  (0.0, 1.0, True),
    "elu":      (0.0, 1.0, True),
    "selu":     (0.0, 1.0, True),
    "softplus": (0.0, 1.0, True),
    "swish":    (0.0, math.sqrt(2), True),
}

ACTIVATION_CODES = {name: code for code, name in enumerate(ACTIVATIONS)}  # kernels/bias_act.cu

_SELU_ALPHA = 1.6732632423543772
_SELU_SCALE = 1.0507009873554805


def bias_act(x, b=None, dim=1, act="linear", alpha=None, gain=None, clamp=None):
    """Add bias b along axis `dim`, apply the activation, scale by gain, clamp."""
    if not isinstance(x, Tensor):
        raise ValueError(f"bias_act: x must be a Tensor, got {type(x).__name__}")
    if act not in ACTIVATIONS:
        raise ValueError(f"bias_act: unknown activation {act!r}; choose from {sorted(ACTIVATIONS)}")
    if x.ndim < 1:
        raise ValueError("bias_act: x must have at least one axis")
    if not -x.ndim <= dim < x.ndim:
        raise ValueError(f"bias_act: dim {dim} out of range for x of shape {tuple(x.shape)}")
    dim = dim % x.ndim
    if b is not None:
        if not isinstance(b, Tensor):
            b = Tensor(b)
        if b.ndim != 1 or b.shape[0] != x.shape[dim]:
            raise ValueError(f"bias_act: bias must be 1-D of length x.shape[{dim}] = {x.shape[dim]}; "
                             f"got bias {tuple(b.shape)} for x {tuple(x.shape)}")
    backend.check_float_dtype("bias_act", x.data, None if b is None else b.data)
    def_alpha, def_gain, _ = ACTIVATIONS[act]
    alpha = float(def_alpha if alpha is None else alpha)
    gain = float(def_gain if gain is None else gain)
    clamp = None if clamp is None or clamp < 0 else float(clamp)
    return BiasAct.apply(x, b, dim=dim, act=act, alpha=alpha, gain=gain, clamp=clamp)


class BiasAct(Function):
    def forward(self, x, b, dim, act, alpha, gain, clamp):
        self.dim, self.act, self.alpha, self.gain, self.clamp = dim, act, alpha, gain, clamp
        y, z = _impl.pick(IMPLEMENTATIONS, x).forward(x, b, dim, act, alpha, gain, clamp)
        self.z = z if (act != "linear" or clamp is not None) else None
        return y

    def backward(self, dy):
        x, b = self.inputs
        curved = ACTIVATIONS[self.act][2]
        if curved:
            # The pre-activation as a graph node, so the second derivative reaches x and b.
            z = x if b is None else x + b.reshape(_bias_shape(x.ndim, self.dim, b.shape[0]))
        else:
            z = Tensor(self.z) if self.z is not None else None
        dz = BiasActGrad.apply(dy, z, act=self.act, alpha=self.alpha, gain=self.gain, clamp=self.clamp)
        dx = dz if self.needs_input_grad[0] else None
        db = None
        if b is not None and self.needs_input_grad[1]:
            axes = tuple(a for a in range(dz.ndim) if a != self.dim)
            db = dz.sum(axis=axes)
        return dx, db


class BiasActGrad(Function):
    """(dy, z) -> dy * act'(z) * gain * mask. Linear in dy; its z-derivative uses act''."""

    def forward(self, dy, z, act, alpha, gain, clamp):
        self.act, self.alpha, self.gain, self.clamp = act, alpha, gain, clamp
        return _impl.pick(IMPLEMENTATIONS, dy).grad(dy, z, act, alpha, gain, clamp)

    def backward(self, g):
        dy, z = self.inputs
        gdy = gz = None
        if self.needs_input_grad[0]:
            gdy = BiasActGrad.apply(g, z, act=self.act, alpha=self.alpha, gain=self.gain, clamp=self.clamp)
        if z is not None and self.needs_input_grad[1] and ACTIVATIONS[self.act][2]:
            second = _impl.pick(IMPLEMENTATIONS, z.data).grad2(z.data, self.act, self.alpha, self.gain, self.clamp)
            gz = g * dy * Tensor(second)
        return gdy, gz


# ---- the reference -------------------------------------------------------------------------

def stable_sigmoid(z):
    """1 / (1 + exp(-z)): exp(-|z|) never overflows, and for z << 0 the e / (1 + e) branch
    keeps full precision (shared with ops/softplus.py)."""
    e = np.exp(-np.abs(z))
    return np.where(z >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


def _activation(act, z, alpha):
    if act == "linear":
        return z
    if act == "relu":
        return np.maximum(z, 0)
    if act == "lrelu":                    # for 0 <= alpha <= 1 the larger of z and alpha z
        return np.maximum(z, z * z.dtype.type(alpha)) if 0 <= alpha <= 1 else np.where(z > 0, z, z * z.dtype.type(alpha))
    if act == "tanh":
        return np.tanh(z)
    if act == "sigmoid":
        return stable_sigmoid(z)
    if act == "elu":
        return np.where(z > 0, z, np.expm1(np.minimum(z, 0)))
    if act == "selu":
        return _SELU_SCALE * np.where(z > 0, z, _SELU_ALPHA * np.expm1(np.minimum(z, 0)))
    if act == "softplus":
        return np.logaddexp(0, z)
    if act == "swish":
        return z * stable_sigmoid(z)
    raise AssertionError(act)


def _activation_derivative(act, z, alpha):
    one = z.dtype.type(1)
    if act == "linear":
        return np.ones_like(z)
    if act == "relu":
        return (z > 0).astype(z.dtype)
    if act == "lrelu":
        return np.where(z > 0, one, z.dtype.type(alpha))
    if act == "tanh":
        t = np.tanh(z)
        return one - t * t
    if act in ("sigmoid", "softplus"):
        s = stable_sigmoid(z)
        return s * (one - s) if act == "sigmoid" else s
    if act == "elu":
        return np.where(z > 0, one, np.exp(np.minimum(z, 0)))
    if act == "selu":
        return _SELU_SCALE * np.where(z > 0, one, _SELU_ALPHA * np.exp(np.minimum(z, 0)))
    if act == "swish":
        s = stable_sigmoid(z)
        return s * (one + z * (one - s))
    raise AssertionError(act)


def _activation_second_derivative(act, z, alpha):
    one = z.dtype.type(1)
    if act in ("linear", "relu", "lrelu"):
        return np.zeros_like(z)
    if act == "tanh":
        t = np.tanh(z)
        return -2 * t * (one - t * t)
    if act == "sigmoid":
        s = stable_sigmoid(z)
        return s * (one - s) * (one - 2 * s)
    if act == "softplus":
        s = stable_sigmoid(z)
        return s * (one - s)
    if act == "elu":
        return np.where(z > 0, z.dtype.type(0), np.exp(np.minimum(z, 0)))
    if act == "selu":
        return _SELU_SCALE * np.where(z > 0, z.dtype.type(0), _SELU_ALPHA * np.exp(np.minimum(z, 0)))
    if act == "swish":
        s = stable_sigmoid(z)
        ds = s * (one - s)
        return 2 * ds + z * ds * (one - 2 * s)
    raise AssertionError(act)


def _bias_shape(ndim, dim, length):
    shape = [1] * ndim
    shape[dim] = length
    return tuple(shape)


def _bias_act_ref(x, b, dim, act, alpha, gain, clamp):
    """Raw arrays -> (y, z) with z = x + b the saved pre-activation."""
    z = x if b is None else x + b.reshape(_bias_shape(x.ndim, dim, b.shape[0]))
    y = _activation(act, z, alpha)
    if gain != 1:
        y = y * y.dtype.type(gain)
    if clamp is not None:
        y = np.clip(y, -clamp, clamp)
    return y, z


def _clamp_mask(act, z, alpha, gain, clamp):
    if clamp is None:
        return None
    return np.abs(_activation(act, z, alpha) * z.dtype.type(gain)) <= clamp


def _bias_act_grad_ref(dy, z, act, alpha, gain, clamp):
    """dz = dy * act'(z) * gain, zero where the output was clamped."""
    if act == "linear" and clamp is None:
        return dy * dy.dtype.type(gain) if gain != 1 else dy.copy()
    dz = dy * _activation_derivative(act, z, alpha)
    if gain != 1:
        dz *= dz.dtype.type(gain)
    mask = _clamp_mask(act, z, alpha, gain, clamp)
    if mask is not None:
        dz *= mask
    return dz


def _bias_act_grad2_ref(z, act, alpha, gain, clamp):
    """act''(z) * gain, zero where the output was clamped."""
    second = _activation_second_derivative(act, z, alpha) * z.dtype.type(gain)
    mask = _clamp_mask(act, z, alpha, gain, clamp)
    return second if mask is None else second * mask


# ---- CUDA (kernels/bias_act.cu) -------------------------------------------------------------

def _clamp_arg(clamp):
    return -1.0 if clamp is None else clamp


def _bias_act_forward_cuda(x, b, dim, act, alpha, gain, clamp):
    from .. import cuda
    x = cuda.device_array(x)
    bias = cuda.device_array(b) if b is not None else x  # unused when has_bias == 0
    y, z = cuda.empty(x.shape, x.dtype), cuda.empty(x.shape, x.dtype)
    inner = int(np.prod(x.shape[dim + 1:], dtype=np.int64))
    S = cuda.scalar_type(x.dtype)
    cuda.launch("bias_act", "bias_act_forward", x.dtype, x.size,
                (y, z, x, bias, np.int64(x.size), np.int64(max(inner, 1)), np.int32(x.shape[dim]),
                 np.int32(b is not None), np.int32(ACTIVATION_CODES[act]), S(alpha), S(gain), S(_clamp_arg(clamp))))
    return y, z


def _bias_act_grad_cuda(dy, z, act, alpha, gain, clamp):
    from .. import cuda
    dy = cuda.device_array(dy)
    z_arg = cuda.device_array(z) if z is not None else dy
    if z is not None and z_arg.shape != dy.shape:
        raise ValueError(f"bias_act: gradient shape {dy.shape} does not match the saved input {z_arg.shape}")
    dz = cuda.empty(dy.shape, dy.dtype)
    S = cuda.scalar_type(dy.dtype)
    cuda.launch("bias_act", "bias_act_grad", dy.dtype, dy.size,
                (dz, dy, z_arg, np.int64(dy.size), np.int32(z is not None), np.int32(ACTIVATION_CODES[act]),
                 S(alpha), S(gain), S(_clamp_arg(clamp))))
    return dz


def _bias_act_grad2_cuda(z, act, alpha, gain, clamp):
    from .. import cuda
    z = cuda.device_array(z)
    out = cuda.empty(z.shape, z.dtype)
    S = cuda.scalar_type(z.dtype)
    cuda.launch("bias_act", "bias_act_grad2", z.dtype, z.size,
                (out, z, np.int64(z.size), np.int32(ACTIVATION_CODES[act]), S(alpha), S(gain), S(_clamp_arg(clamp))))
    return out

# ---- which implementation runs (no fast CPU path of its own) -----------------------------------

Passes = collections.namedtuple("Passes", "forward grad grad2")
IMPLEMENTATIONS = _impl.table(ref=Passes(_bias_act_ref, _bias_act_grad_ref, _bias_act_grad2_ref),
                              cuda=Passes(_bias_act_forward_cuda, _bias_act_grad_cuda, _bias_act_grad2_cuda))
