"""conv2d's fast CPU passes for the "same" convolutions (stride 1, odd square kernel k,
padding p = (k-1)/2): one GEMM per kernel tap on shifted windows, no patch matrix.

  y[:, r] = sum over taps t of w_t [O, C] @ x_flat[:, r + offset(t)]

The batch is laid out once per channel as one flat zero-margined row (_Grid), so the input
window of a tap is that row shifted by a constant: a strided 2-D view that BLAS reads in place
(blas.gemm calls NumPy's own OpenBLAS; NumPy's matmul would copy it), each tap's product added
into one output (beta = 1). Other convolutions run the reference's im2col (conv2d.py). Same
results as the reference to rounding.
"""
import numpy as np

from .. import blas
from . import _impl
from .conv2d import _conv2d_ref, _conv_transpose2d_ref, _conv2d_weight_grad_ref


def conv2d(x, w, stride, padding):
    """conv2d's forward pass."""
    if _windows_apply(x, w.shape, stride, padding):
        return _conv2d_windows(x, w)
    return _conv2d_ref(x, w, stride, padding)


def conv_transpose2d(g, w, x_shape, stride, padding):
    """conv2d's input gradient (its adjoint in x)."""
    if _windows_apply(g, w.shape, stride, padding):
        return _conv2d_windows(g, w, adjoint=True)
    return _conv_transpose2d_ref(g, w, x_shape, stride, padding)


def conv2d_weight_grad(x, g, w_shape, stride, padding):
    """conv2d's weight gradient (its adjoint in w)."""
    if _windows_apply(x, w_shape, stride, padding):
        return _conv2d_weight_grad_windows(x, g, w_shape[2])
    return _conv2d_weight_grad_ref(x, g, w_shape, stride, padding)


def _windows_apply(x, w_shape, stride, padding):
    """Stride 1, odd square kernel, 'same' padding, and NumPy's BLAS callable directly."""
    _, _, kh, kw = w_shape
    return (stride == (1, 1) and kh == kw and kh % 2 == 1 and padding == ((kh - 1) // 2,) * 2
            and blas.available(x.dtype) and _impl.fast_path_on("conv2d.windows"))


class _Grid:
    """The flat layout of a batch [N, C, H, W] for a k x k correlation with p = (k-1)/2: per
    channel one row of `size` elements, `start` zeros, N blocks of (H+p) x (W+p) (row stride
    R = W+p) holding image n's pixel (y, x) at start + (n*(H+p) + y)*R + x and zeros elsewhere,
    then `start` zeros. Neighbouring images share their p-wide margins, since every tap shifts
    by at most p rows and p columns either way. Outputs are computed at the L = N*(H+p)*(W+p)
    positions after `start`; the window of tap (ky, kx) is those positions shifted by
    offset(ky, kx)."""

    def __init__(self, N, H, W, k):
        self.N, self.H, self.W, self.p = N, H, W, (k - 1) // 2
        self.Hb, self.R = H + self.p, W + self.p
        self.start = self.p * self.R + self.p
        self.L = N * self.Hb * self.R
        self.size = self.L + 2 * self.start

    def offset(self, ky, kx):
        return (ky - self.p) * self.R + (kx - self.p)

    def window(self, flat, ky, kx, sign=1):
        """The [C, L] window of a packed buffer for tap (ky, kx) (sign=-1: the adjoint's shift)."""
        begin = self.start + sign * self.offset(ky, kx)
        return flat[:, begin:begin + self.L]

    def computed(self, flat):
        """The L computed positions of a [C, size] buffer."""
        return flat[:, self.start:self.start + self.L]

    def blocks(self, flat):
        """[C, N, H+p, W+p] view of the computed positions of a [C, size] or [C, L] buffer."""
        flat = self.computed(flat) if flat.shape[-1] == self.size else flat
        return flat.reshape(flat.shape[0], self.N, self.Hb, self.R)

    def pack(self, x):
        """x [N, C, H, W] -> [C, size] with zeros everywhere but the pixels."""
        N, C, H, W = x.shape
        flat = np.empty((C, self.size), dtype=x.dtype)
        flat[:, :self.start] = 0
        flat[:, self.start + self.L:] = 0
        view = self.blocks(flat)
        view[:, :, H:, :] = 0
        view[:, :, :H, W:] = 0
        view[:, :, :H, :W] = x.transpose(1, 0, 2, 3)
        return flat

    def unpack(self, flat):
        """[C, L] computed positions -> [N, C, H, W] contiguous (margins dropped)."""
        return np.ascontiguousarray(self.blocks(flat)[:, :, :self.H, :self.W].transpose(1, 0, 2, 3))


def _taps(w):
    """w [O, C, k, k] -> [k, k, O, C] contiguous: one [O, C] matrix per kernel tap."""
    return np.ascontiguousarray(w.transpose(2, 3, 0, 1))


def _conv2d_windows(x, w, adjoint=False):
    """conv2d(x, w) as window GEMMs; adjoint=True: x is an output-shaped g and the result is
    the adjoint in x, gx[r] = sum over taps of w_tap^T g[r - offset(tap)] (g zero off the images)."""
    N, _, H, W = x.shape
    O, C, k, _ = w.shape
    grid = _Grid(N, H, W, k)
    packed, taps = grid.pack(x), _taps(w)
    out = np.empty((C if adjoint else O, grid.L), dtype=x.dtype)
    for i in range(k * k):
        ky, kx = divmod(i, k)
        blas.gemm(taps[ky, kx], grid.window(packed, ky, kx, sign=-1 if adjoint else 1), out,
                  beta=0.0 if i == 0 else 1.0, trans_a=adjoint)
    return grid.unpack(out)


def _conv2d_weight_grad_windows(x, g, k):
    """Adjoint in w: gw[:, :, ky, kx] = g [O, L] @ window(x, ky, kx)^T (g zero off the images)."""
    N, C, H, W = x.shape
    O = g.shape[1]
    grid = _Grid(N, H, W, k)
    packed_x, rows = grid.pack(x), grid.computed(grid.pack(g))
    taps = np.empty((k, k, O, C), dtype=x.dtype)
    for i in range(k * k):
        ky, kx = divmod(i, k)
        blas.gemm(rows, grid.window(packed_x, ky, kx), taps[ky, kx], trans_b=True)
    return np.ascontiguousarray(taps.transpose(2, 3, 0, 1))
