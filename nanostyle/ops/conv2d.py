"""conv2d (cross-correlation, OIHW weights, no bias), its transpose, its weight gradient, and
conv2d_resample (convolution fused with FIR up/downsampling, as StyleGAN2-ADA computes it).

  y[n, o, i, j] = sum_{c, ky, kx} x_pad[n, c, s*i + ky, s*j + kx] * w[o, c, ky, kx]

Three linear maps close under differentiation, so every derivative of every order is one of them:
  conv2d(x, w)               y = x * w                  (cross-correlation, stride s, padding p)
  conv_transpose2d(g, w)     the adjoint of conv2d in x (x-shaped output)
  conv2d_weight_grad(x, g)   the adjoint of conv2d in w (w-shaped output)
With <conv2d(x, w), g> = <x, conv_transpose2d(g, w)> = <w, conv2d_weight_grad(x, g)>, each one's
backward is a pair of the others (see the Function classes).

Each of the three passes has three implementations (IMPLEMENTATIONS at the bottom; ops/_impl.py
picks one per call): the reference here, im2col + one GEMM (the patch matrix [C*kh*kw, N*Ho*Wo]
built by one strided-view copy; col2im, its adjoint, a slice-add per kernel tap); the fast CPU
passes of _conv2d_cpu.py (one GEMM per kernel tap on shifted windows, no patch matrix); and on a
GPU the same im2col/col2im as kernels/conv2d.cu, with cuBLAS for the GEMM.
"""
import collections

import numpy as np

from .. import backend
from ..autograd import Function, Tensor
from . import _impl
from .upfirdn2d import filter_size, parse_padding, upfirdn2d


def conv2d(x, w, padding=0, stride=1):
    """Cross-correlation of x [N, C, H, W] with w [O, C, kh, kw] (torch.conv2d semantics, no bias)."""
    _check_conv("conv2d", x, w)
    stride, padding = _pair(stride, "stride"), _pair(padding, "padding")
    if x.shape[1] != w.shape[1]:
        raise ValueError(f"conv2d: x has {x.shape[1]} channels but w expects {w.shape[1]} "
                         f"(x {tuple(x.shape)}, w {tuple(w.shape)})")
    if min(stride) < 1 or min(padding) < 0:
        raise ValueError(f"conv2d: stride must be >= 1 and padding >= 0, got {stride}, {padding}")
    Ho = _conv_output_size(x.shape[2], w.shape[2], stride[0], padding[0])
    Wo = _conv_output_size(x.shape[3], w.shape[3], stride[1], padding[1])
    if Ho < 1 or Wo < 1:
        raise ValueError(f"conv2d: kernel {tuple(w.shape[2:])} larger than padded input "
                         f"{tuple(x.shape[2:])} + padding {padding}")
    return Conv2d.apply(x, w, stride=stride, padding=padding)


def conv_transpose2d(x, w, stride=1, padding=0):
    """Transposed convolution (torch.conv_transpose2d semantics): w [C_in, C_out, kh, kw] with
    C_in = x's channels; output size (H - 1) * stride - 2 * padding + kh."""
    _check_conv("conv_transpose2d", x, w)
    stride, padding = _pair(stride, "stride", "conv_transpose2d"), _pair(padding, "padding", "conv_transpose2d")
    if x.shape[1] != w.shape[0]:
        raise ValueError(f"conv_transpose2d: x has {x.shape[1]} channels but w expects {w.shape[0]} "
                         f"(x {tuple(x.shape)}, w {tuple(w.shape)})")
    N, _, H, W = x.shape
    _, C, kh, kw = w.shape
    out_h = (H - 1) * stride[0] - 2 * padding[0] + kh
    out_w = (W - 1) * stride[1] - 2 * padding[1] + kw
    if out_h < 1 or out_w < 1:
        raise ValueError(f"conv_transpose2d: empty output for x {tuple(x.shape)}, w {tuple(w.shape)}")
    return ConvTranspose2d.apply(x, w, x_shape=(N, C, out_h, out_w), stride=stride, padding=padding)


def conv2d_resample(x, w, f=None, up=1, down=1, padding=0, flip_weight=True):
    """Convolution with optional FIR upsampling (before) or downsampling (after), as the
    StyleGAN2-ADA reference computes it, through the cheapest equivalent path:
    1x1 kernels resample on the smaller side, `down` uses a strided convolution, `up` a
    transposed strided convolution. flip_weight=True means cross-correlation."""
    _check_conv("conv2d_resample", x, w)
    if x.shape[1] != w.shape[1]:
        raise ValueError(f"conv2d_resample: x has {x.shape[1]} channels but w expects {w.shape[1]} "
                         f"(x {tuple(x.shape)}, w {tuple(w.shape)})")
    if up < 1 or down < 1:
        raise ValueError(f"conv2d_resample: up and down must be >= 1, got {up}, {down}")
    if not flip_weight:
        w = w[:, :, ::-1, ::-1]  # convolution orientation = correlation with the flipped kernel
    O, I, kh, kw = w.shape
    fw, fh = filter_size(f)
    x0, x1, y0, y1 = parse_padding(padding)
    if up > 1:
        x0 += (fw + up - 1) // 2
        x1 += (fw - up) // 2
        y0 += (fh + up - 1) // 2
        y1 += (fh - up) // 2
    if down > 1:
        x0 += (fw - down + 1) // 2
        x1 += (fw - down) // 2
        y0 += (fh - down + 1) // 2
        y1 += (fh - down) // 2

    if kw == 1 and kh == 1 and down > 1 and up == 1:
        x = upfirdn2d(x, f, down=down, padding=(x0, x1, y0, y1))
        return conv2d(x, w)
    if kw == 1 and kh == 1 and up > 1 and down == 1:
        x = conv2d(x, w)
        return upfirdn2d(x, f, up=up, padding=(x0, x1, y0, y1), gain=up * up)
    if down > 1 and up == 1:
        x = upfirdn2d(x, f, padding=(x0, x1, y0, y1))
        return conv2d(x, w, stride=down)
    if up > 1:
        # Zero insertion followed by correlation with w equals a transposed convolution with
        # the flipped kernel (in/out swapped); the leftover padding goes to the FIR filter.
        w_t = w[:, :, ::-1, ::-1].transpose(1, 0, 2, 3)
        x0 -= kw - 1
        x1 -= kw - up
        y0 -= kh - 1
        y1 -= kh - up
        pxt = max(min(-x0, -x1), 0)
        pyt = max(min(-y0, -y1), 0)
        x = conv_transpose2d(x, w_t, stride=up, padding=(pyt, pxt))
        x = upfirdn2d(x, f, padding=(x0 + pxt, x1 + pxt, y0 + pyt, y1 + pyt), gain=up * up)
        if down > 1:
            x = upfirdn2d(x, f, down=down)
        return x
    if x0 == x1 and y0 == y1 and x0 >= 0 and y0 >= 0:
        return conv2d(x, w, padding=(y0, x0))
    x = upfirdn2d(x, None, padding=(x0, x1, y0, y1))
    x = conv2d(x, w)
    if down > 1:
        x = upfirdn2d(x, f, down=down)
    return x


class Conv2d(Function):
    def forward(self, x, w, stride, padding):
        self.stride, self.padding = stride, padding
        return _impl.pick(IMPLEMENTATIONS, x).conv2d(x, w, stride, padding)

    def backward(self, g):
        x, w = self.inputs
        gx = gw = None
        if self.needs_input_grad[0]:
            gx = ConvTranspose2d.apply(g, w, x_shape=x.shape, stride=self.stride, padding=self.padding)
        if self.needs_input_grad[1]:
            gw = Conv2dWeightGrad.apply(x, g, w_shape=w.shape, stride=self.stride, padding=self.padding)
        return gx, gw


class ConvTranspose2d(Function):
    """x-shaped adjoint of conv2d: inputs (g, w) -> [N, C, H, W] with H, W given by x_shape."""

    def forward(self, g, w, x_shape, stride, padding):
        self.stride, self.padding = stride, padding
        return _impl.pick(IMPLEMENTATIONS, g).conv_transpose2d(g, w, x_shape, stride, padding)

    def backward(self, gx):
        g, w = self.inputs
        gg = gw = None
        if self.needs_input_grad[0]:
            gg = Conv2d.apply(gx, w, stride=self.stride, padding=self.padding)
        if self.needs_input_grad[1]:
            gw = Conv2dWeightGrad.apply(gx, g, w_shape=w.shape, stride=self.stride, padding=self.padding)
        return gg, gw


class Conv2dWeightGrad(Function):
    """w-shaped adjoint of conv2d: inputs (x, g) -> [O, C, kh, kw]."""

    def forward(self, x, g, w_shape, stride, padding):
        self.stride, self.padding = stride, padding
        return _impl.pick(IMPLEMENTATIONS, x).conv2d_weight_grad(x, g, w_shape, stride, padding)

    def backward(self, gw):
        x, g = self.inputs
        gx = gg = None
        if self.needs_input_grad[0]:
            gx = ConvTranspose2d.apply(g, gw, x_shape=x.shape, stride=self.stride, padding=self.padding)
        if self.needs_input_grad[1]:
            gg = Conv2d.apply(x, gw, stride=self.stride, padding=self.padding)
        return gx, gg


# ---- argument checks -------------------------------------------------------------------------

def _pair(value, name, op="conv2d"):
    if isinstance(value, (int, np.integer)):
        return int(value), int(value)
    value = tuple(int(v) for v in value)
    if len(value) != 2:
        raise ValueError(f"{op}: {name} must be an int or a pair, got {value}")
    return value


def _check_conv(op, x, w):
    for name, t in (("x", x), ("w", w)):
        if not isinstance(t, Tensor):
            raise ValueError(f"{op}: {name} must be a Tensor, got {type(t).__name__}")
        if t.ndim != 4:
            raise ValueError(f"{op}: {name} must be 4-D, got shape {tuple(t.shape)}")
    backend.check_float_dtype(op, x.data, w.data)


# ---- the reference: im2col + one GEMM per pass ----------------------------------------------

def _conv_output_size(size, k, stride, pad):
    return (size + 2 * pad - k) // stride + 1


def _im2col(x, kh, kw, stride, padding):
    """x [N, C, H, W] -> patches [C*kh*kw, N*Ho*Wo] (row = (c, ky, kx), column = (n, oy, ox))."""
    N, C, H, W = x.shape
    sy, sx = stride
    py, px = padding
    Ho, Wo = _conv_output_size(H, kh, sy, py), _conv_output_size(W, kw, sx, px)
    if py or px:
        x = np.pad(x, ((0, 0), (0, 0), (py, py), (px, px)))
    sN, sC, sH, sW = x.strides
    view = np.lib.stride_tricks.as_strided(
        x, shape=(C, kh, kw, N, Ho, Wo), strides=(sC, sH, sW, sN, sH * sy, sW * sx))
    return np.ascontiguousarray(view).reshape(C * kh * kw, N * Ho * Wo)


def _col2im(cols, x_shape, kh, kw, stride, padding):
    """The adjoint of _im2col: patches [C*kh*kw, N*Ho*Wo] summed back into x [N, C, H, W]."""
    N, C, H, W = x_shape
    sy, sx = stride
    py, px = padding
    Ho, Wo = _conv_output_size(H, kh, sy, py), _conv_output_size(W, kw, sx, px)
    cols = cols.reshape(C, kh, kw, N, Ho, Wo)
    padded = np.zeros((N, C, H + 2 * py, W + 2 * px), dtype=cols.dtype)
    for ky in range(kh):
        for kx in range(kw):
            padded[:, :, ky:ky + sy * (Ho - 1) + 1:sy, kx:kx + sx * (Wo - 1) + 1:sx] += \
                cols[:, ky, kx].transpose(1, 0, 2, 3)
    return padded[:, :, py:py + H, px:px + W]


def _to_rows(g):
    """[N, O, Ho, Wo] -> [O, N*Ho*Wo] (contiguous, the GEMM's layout)."""
    xp = backend.get_array_module(g)
    N, O, Ho, Wo = g.shape
    return xp.ascontiguousarray(g.transpose(1, 0, 2, 3)).reshape(O, N * Ho * Wo)


def _from_rows(rows, N, Ho, Wo):
    """[O, N*Ho*Wo] -> [N, O, Ho, Wo] contiguous."""
    xp = backend.get_array_module(rows)
    O = rows.shape[0]
    return xp.ascontiguousarray(rows.reshape(O, N, Ho, Wo).transpose(1, 0, 2, 3))


def _conv2d_ref(x, w, stride, padding, im2col=_im2col):
    """y = w [O, C*kh*kw] @ patches of x."""
    N, _, H, W = x.shape
    O, _, kh, kw = w.shape
    Ho = _conv_output_size(H, kh, stride[0], padding[0])
    Wo = _conv_output_size(W, kw, stride[1], padding[1])
    return _from_rows(w.reshape(O, -1) @ im2col(x, kh, kw, stride, padding), N, Ho, Wo)


def _conv_transpose2d_ref(g, w, x_shape, stride, padding, col2im=_col2im):
    """gx = col2im(w^T @ g): the adjoint of _conv2d_ref in x."""
    O, C, kh, kw = w.shape
    return col2im(w.reshape(O, C * kh * kw).T @ _to_rows(g), x_shape, kh, kw, stride, padding)


def _conv2d_weight_grad_ref(x, g, w_shape, stride, padding, im2col=_im2col):
    """gw = g @ (patches of x)^T: the adjoint of _conv2d_ref in w."""
    _, _, kh, kw = w_shape
    return (_to_rows(g) @ im2col(x, kh, kw, stride, padding).T).reshape(w_shape)


# ---- CUDA: im2col / col2im as kernels (kernels/conv2d.cu), the GEMMs through cuBLAS ------------

def _conv_geometry(x_shape, kh, kw, stride, padding):
    N, C, H, W = x_shape
    Ho = _conv_output_size(H, kh, stride[0], padding[0])
    Wo = _conv_output_size(W, kw, stride[1], padding[1])
    return tuple(np.int32(v) for v in (N, C, H, W, kh, kw, stride[0], stride[1], padding[0], padding[1], Ho, Wo))


def _im2col_cuda(x, kh, kw, stride, padding):
    from .. import cuda
    x = cuda.device_array(x)
    geometry = _conv_geometry(x.shape, kh, kw, stride, padding)
    N, C, Ho, Wo = x.shape[0], x.shape[1], int(geometry[-2]), int(geometry[-1])
    cols = cuda.empty((C * kh * kw, N * Ho * Wo), x.dtype)
    cuda.launch("conv2d", "im2col_kernel", x.dtype, cols.size, (cols, x) + geometry)
    return cols


def _col2im_cuda(cols, x_shape, kh, kw, stride, padding):
    from .. import cuda
    cols = cuda.device_array(cols)
    geometry = _conv_geometry(x_shape, kh, kw, stride, padding)
    N, C, H, W = x_shape
    if cols.shape != (C * kh * kw, N * int(geometry[-2]) * int(geometry[-1])):
        raise ValueError(f"conv2d: patch matrix {cols.shape} does not match input {tuple(x_shape)} and kernel {kh}x{kw}")
    x = cuda.empty(tuple(x_shape), cols.dtype)
    cuda.launch("conv2d", "col2im_kernel", cols.dtype, x.size, (x, cols) + geometry)
    return x


def _conv2d_cuda(x, w, stride, padding):
    return _conv2d_ref(x, w, stride, padding, im2col=_im2col_cuda)


def _conv_transpose2d_cuda(g, w, x_shape, stride, padding):
    return _conv_transpose2d_ref(g, w, x_shape, stride, padding, col2im=_col2im_cuda)


def _conv2d_weight_grad_cuda(x, g, w_shape, stride, padding):
    return _conv2d_weight_grad_ref(x, g, w_shape, stride, padding, im2col=_im2col_cuda)


# ---- which implementation runs ---------------------------------------------------------------

from . import _conv2d_cpu  # noqa: E402  (after the reference, which its fallbacks call)

Passes = collections.namedtuple("Passes", "conv2d conv_transpose2d conv2d_weight_grad")
IMPLEMENTATIONS = _impl.table(
    ref=Passes(_conv2d_ref, _conv_transpose2d_ref, _conv2d_weight_grad_ref),
    fast=Passes(_conv2d_cpu.conv2d, _conv2d_cpu.conv_transpose2d, _conv2d_cpu.conv2d_weight_grad),
    cuda=Passes(_conv2d_cuda, _conv_transpose2d_cuda, _conv2d_weight_grad_cuda))
