"""conv2d's fast CPU passes: one GEMM per kernel tap on shifted windows, no patch matrix.

The batch is laid out once per channel as one flat zero-margined row, so the input window of a
kernel tap is that row shifted by a constant: a strided 2-D view that BLAS reads in place
(blas.gemm calls NumPy's own OpenBLAS; NumPy's matmul would copy it). A pass is then k*k GEMMs
adding into one output (beta = 1) instead of one GEMM on a k*k-times larger patch matrix that
must be written and read:
  y[:, r] = sum over taps t of w_t [O, C] @ x_flat[:, r + offset(t)]
`_Grid` serves the "same" convolutions (stride 1, odd square kernel, padding (k-1)/2),
`_PhaseGrid` the strided ones (each tap reads one of the s*s phases of the input). Where the
windows do not apply, a pass runs the reference's im2col (conv2d.py). Same results as the
reference to rounding.
"""
import numpy as np

from .. import blas
from . import _impl
from .conv2d import _conv_output_size, _conv2d_ref, _conv_transpose2d_ref, _conv2d_weight_grad_ref

# ---- the three passes: windows where they apply, else the reference ---------------------------

def conv2d(x, w, stride, padding):
    """conv2d's forward pass."""
    if _same_size_applies(x, w.shape, stride, padding):
        return _conv2d_windows(x, w)
    if _strided_applies(x, w.shape, stride, padding):
        return _conv2d_phases(x, w, stride[0], padding[0])
    return _conv2d_ref(x, w, stride, padding)


def conv_transpose2d(g, w, x_shape, stride, padding):
    """conv2d's input gradient (its adjoint in x)."""
    if _same_size_applies(g, w.shape, stride, padding):
        return _conv2d_windows(g, w, adjoint=True)
    if _strided_applies(g, w.shape, stride, padding):
        return _conv_transpose2d_phases(g, w, x_shape, stride[0], padding[0])
    return _conv_transpose2d_ref(g, w, x_shape, stride, padding)


def conv2d_weight_grad(x, g, w_shape, stride, padding):
    """conv2d's weight gradient (its adjoint in w)."""
    if _same_size_applies(x, w_shape, stride, padding):
        return _conv2d_weight_grad_windows(x, g, w_shape[2])
    if _strided_applies(x, w_shape, stride, padding):
        return _conv2d_weight_grad_phases(x, g, w_shape[2], stride[0], padding[0])
    return _conv2d_weight_grad_ref(x, g, w_shape, stride, padding)


def _same_size_applies(x, w_shape, stride, padding):
    """Stride 1, odd square kernel, 'same' padding, and NumPy's BLAS callable directly."""
    _, _, kh, kw = w_shape
    return (stride == (1, 1) and kh == kw and kh % 2 == 1 and padding == ((kh - 1) // 2,) * 2
            and blas.available(x.dtype) and _impl.fast_path_on("conv2d.windows"))


def _strided_applies(x, w_shape, stride, padding):
    """Equal strides >= 2, square kernel, equal paddings, and NumPy's BLAS callable directly."""
    _, _, kh, kw = w_shape
    return (stride[0] == stride[1] >= 2 and kh == kw and padding[0] == padding[1]
            and blas.available(x.dtype) and _impl.fast_path_on("conv2d.phase_grid"))


# ---- the flat layouts ------------------------------------------------------------------------

def _corners(blocks, H, W):
    """The top-left H x W of every block of a [C, N, Hb, Wb] view, as [N, C, H, W] contiguous."""
    return np.ascontiguousarray(blocks[:, :, :H, :W].transpose(1, 0, 2, 3))


class _FlatLayout:
    """Per channel one flat row of `size` elements: `start` zeros, then N blocks of Hb x Wb
    (row stride R = Wb), then `start` zeros. Outputs are computed at the L = N*Hb*Wb positions
    after the first `start` (blocks(): as [..., N, Hb, Wb]); the window of kernel tap (ky, kx)
    is those L positions shifted by the subclass's offset(ky, kx), a strided view BLAS reads."""

    def __init__(self, N, Hb, Wb, margin):
        self.N, self.Hb, self.Wb, self.R = N, Hb, Wb, Wb
        self.start = margin * self.R + margin
        self.L = N * Hb * Wb
        self.size = self.L + 2 * self.start

    def computed(self, flat):
        """The L computed positions of a [..., size] buffer."""
        return flat[..., self.start:self.start + self.L]

    def blocks(self, flat):
        """[..., N, Hb, Wb] view of the computed positions of a [..., size] or [..., L] buffer."""
        flat = self.computed(flat) if flat.shape[-1] == self.size else flat
        return flat.reshape(flat.shape[:-1] + (self.N, self.Hb, self.Wb))

    def window(self, flat, ky, kx, sign=1):
        """The [C, L] window of a packed buffer for tap (ky, kx) (sign=-1: the adjoint's shift)."""
        begin = self.start + sign * self.offset(ky, kx)
        return flat[:, begin:begin + self.L]


class _Grid(_FlatLayout):
    """The shifted-window layout of a batch [N, C, H, W] for a same-size k x k correlation
    (p = (k-1)/2): blocks of (H+p) x (W+p), image n's pixel (y, x) at start + (n*(H+p) + y)*R + x,
    zero elsewhere. Neighbouring images share their p-wide margins, since every tap shifts by
    at most p rows and p columns either way."""

    def __init__(self, N, H, W, k):
        self.H, self.W, self.p = H, W, (k - 1) // 2
        super().__init__(N, H + self.p, W + self.p, margin=self.p)

    def offset(self, ky, kx):
        return (ky - self.p) * self.R + (kx - self.p)

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
        return _corners(self.blocks(flat), self.H, self.W)


class _PhaseGrid(_FlatLayout):
    """The shifted-window layout for a k x k correlation with stride s >= 2 and padding p.

    The zero-padded input splits into s*s phases ph[a, b][i, j] = xpad[s*i + a, s*j + b]; tap
    (ky, kx) reads only phase (ky % s, kx % s), at the output's own position shifted by
    (ky // s, kx // s). Each phase is one _FlatLayout of blocks the output size plus
    d = (k-1)//s, with a margin of d; outputs are the first Ho x Wo pixels of each block.
    So a strided convolution is k*k GEMMs on windows too, with no patch matrix and no col2im."""

    def __init__(self, x_shape, k, s, p):
        N, _, H, W = x_shape
        self.H, self.W, self.s, self.p = H, W, s, p
        self.Ho, self.Wo = _conv_output_size(H, k, s, p), _conv_output_size(W, k, s, p)
        d = (k - 1) // s
        super().__init__(N, self.Ho + d, self.Wo + d, margin=d)

    def offset(self, ky, kx):
        return (ky // self.s) * self.R + kx // self.s

    def _phase_rows(self, a, n_in, n_block):
        """(block slice, input slice) of phase offset a along one axis, or None if empty."""
        s, p = self.s, self.p
        first = max(0, -(-(p - a) // s))             # first block index whose source row is >= 0
        last = min(n_block - 1, (n_in - 1 + p - a) // s)
        if last < first:
            return None
        src = s * first + a - p
        return slice(first, last + 1), slice(src, src + s * (last - first) + 1, s)

    def _phase_pairs(self):
        for a in range(self.s):
            for b in range(self.s):
                rows = self._phase_rows(a, self.H, self.Hb)
                cols = self._phase_rows(b, self.W, self.Wb)
                if rows is not None and cols is not None:
                    yield a, b, rows, cols

    def pack(self, x):
        """x [N, C, H, W] -> phases [s, s, C, size], zero but for the input's pixels."""
        phases = np.zeros((self.s, self.s, x.shape[1], self.size), dtype=x.dtype)
        blocks = self.blocks(phases)
        for a, b, (bi, si), (bj, sj) in self._phase_pairs():
            blocks[a, b, :, :, bi, bj] = x[:, :, si, sj].transpose(1, 0, 2, 3)
        return phases

    def unpack(self, phases):
        """The adjoint of pack: phases [s, s, C, L] -> x [N, C, H, W] (pixels no phase holds: 0)."""
        C = phases.shape[2]
        blocks = self.blocks(phases)
        x = np.zeros((self.N, C, self.H, self.W), dtype=phases.dtype)
        for a, b, (bi, si), (bj, sj) in self._phase_pairs():
            x[:, :, si, sj] = blocks[a, b, :, :, bi, bj].transpose(1, 0, 2, 3)
        return x

    def pack_output(self, g):
        """An output-shaped g [N, O, Ho, Wo] -> [O, size], zero off the output pixels."""
        flat = np.zeros((g.shape[1], self.size), dtype=g.dtype)
        self.blocks(flat)[:, :, :self.Ho, :self.Wo] = g.transpose(1, 0, 2, 3)
        return flat

    def unpack_output(self, flat):
        """[O, L] computed positions -> [N, O, Ho, Wo] contiguous."""
        return _corners(self.blocks(flat), self.Ho, self.Wo)


# ---- the window GEMMs ------------------------------------------------------------------------

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
    packed_x, packed_g = grid.pack(x), grid.pack(g)
    rows = grid.computed(packed_g)
    taps = np.empty((k, k, O, C), dtype=x.dtype)
    for i in range(k * k):
        ky, kx = divmod(i, k)
        blas.gemm(rows, grid.window(packed_x, ky, kx), taps[ky, kx], trans_b=True)
    return np.ascontiguousarray(taps.transpose(2, 3, 0, 1))


def _conv2d_phases(x, w, s, p):
    O, C, k, _ = w.shape
    grid = _PhaseGrid(x.shape, k, s, p)
    phases, taps = grid.pack(x), _taps(w)
    out = np.empty((O, grid.L), dtype=x.dtype)
    for i in range(k * k):
        ky, kx = divmod(i, k)
        blas.gemm(taps[ky, kx], grid.window(phases[ky % s, kx % s], ky, kx), out, beta=0.0 if i == 0 else 1.0)
    return grid.unpack_output(out)


def _conv_transpose2d_phases(g, w, x_shape, s, p):
    O, C, k, _ = w.shape
    grid = _PhaseGrid(x_shape, k, s, p)
    packed, taps = grid.pack_output(g), _taps(w)
    phases = np.zeros((s, s, C, grid.L), dtype=g.dtype)
    started = set()
    for i in range(k * k):
        ky, kx = divmod(i, k)
        phase = (ky % s, kx % s)
        blas.gemm(taps[ky, kx], grid.window(packed, ky, kx, sign=-1), phases[phase],
                  beta=1.0 if phase in started else 0.0, trans_a=True)
        started.add(phase)
    return grid.unpack(phases)


def _conv2d_weight_grad_phases(x, g, k, s, p):
    C, O = x.shape[1], g.shape[1]
    grid = _PhaseGrid(x.shape, k, s, p)
    phases, rows = grid.pack(x), grid.computed(grid.pack_output(g))
    taps = np.empty((k, k, O, C), dtype=x.dtype)
    for i in range(k * k):
        ky, kx = divmod(i, k)
        blas.gemm(rows, grid.window(phases[ky % s, kx % s], ky, kx), taps[ky, kx], trans_b=True)
    return np.ascontiguousarray(taps.transpose(2, 3, 0, 1))
