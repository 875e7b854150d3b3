"""conv2d (cross-correlation, OIHW, no bias), its transpose, its weight gradient, and the
reference's conv2d_resample (convolution fused with FIR up/downsampling).

Three linear maps close under differentiation, so every derivative of every order is one of them:
  conv2d(x, w)               y = x * w                  (cross-correlation, stride s, padding p)
  conv_transpose2d(g, w)     the adjoint of conv2d in x (x-shaped output)
  conv2d_weight_grad(x, g)   the adjoint of conv2d in w (w-shaped output)
With <conv2d(x, w), g> = <x, conv_transpose2d(g, w)> = <w, conv2d_weight_grad(x, g)>, each one's
backward is a pair of the others (see the Function classes).

NumPy paths. Window GEMMs (when blas.available(), i.e. NumPy's own OpenBLAS can be called
directly): the batch is laid out once per channel as one flat zero-margined row, so the input
window of a kernel tap is that row shifted by a constant, a strided 2-D view BLAS reads in
place; a pass is then k*k GEMMs adding into one output (beta = 1; block by block of output
positions, WINDOW_COLUMNS) instead of one GEMM on a k*k-times larger patch matrix that must be
written and read. `_Grid` serves the "same" convolutions (stride 1, odd square kernel, padding
(k-1)/2; margins shared between neighbouring rows and images: 1.03x the work at 64 px, 1.27x at
16 px), `_PhaseGrid` strided
ones (each tap reads one of s*s phases of the input). Small images with many channels run
faster as im2col (one GEMM with K = 9C), so each pass picks by output size
(WINDOW_MIN_PIXELS). Otherwise im2col + one BLAS GEMM per pass: the patch matrix is laid out
[C*kh*kw, N*Ho*Wo] (contiguous, so OpenBLAS gets plain row-major operands), built by one
strided-view copy; col2im is the adjoint, a slice-add per kernel tap (kh*kw loop iterations,
no loop over pixels), both with the batch split over the thread pool of parallel.py.
`_im2col` and `_col2im` are the seams the CUDA kernels plug into for CuPy arrays.
"""
import numpy as np

from .. import backend, blas
from . import _impl
from ..parallel import batch_parallel
from ..autograd import Function, Tensor
from .upfirdn2d import filter_size, parse_padding, upfirdn2d


def _pair(value, name, op="conv2d"):
    if isinstance(value, (int, np.integer)):
        return int(value), int(value)
    value = tuple(int(v) for v in value)
    if len(value) != 2:
        raise ValueError(f"{op}: {name} must be an int or a pair, got {value}")
    return value


def _conv_output_size(size, k, stride, pad):
    return (size + 2 * pad - k) // stride + 1


def _im2col(x, kh, kw, stride, padding):
    """x [N, C, H, W] -> patches [C*kh*kw, N*Ho*Wo] (row = (c, ky, kx), column = (n, oy, ox))."""
    if backend.is_cuda_array(x):
        return _im2col_cuda(x, kh, kw, stride, padding)
    xp = backend.get_array_module(x)
    N, C, H, W = x.shape
    sy, sx = stride
    py, px = padding
    Ho, Wo = _conv_output_size(H, kh, sy, py), _conv_output_size(W, kw, sx, px)
    if py or px:
        x = xp.pad(x, ((0, 0), (0, 0), (py, py), (px, px)))
    x = xp.ascontiguousarray(x)
    sN, sC, sH, sW = x.strides
    view = xp.lib.stride_tricks.as_strided(
        x, shape=(C, kh, kw, N, Ho, Wo), strides=(sC, sH, sW, sN, sH * sy, sW * sx))
    cols = xp.empty(view.shape, dtype=x.dtype)

    def copy(rows):                                   # one chunk of the batch per thread
        cols[:, :, :, rows] = view[:, :, :, rows]
    batch_parallel(copy, N, cols.size)
    return cols.reshape(C * kh * kw, N * Ho * Wo)


def _col2im(cols, x_shape, kh, kw, stride, padding):
    """The adjoint of _im2col: patches [C*kh*kw, N*Ho*Wo] summed back into x [N, C, H, W]."""
    if backend.is_cuda_array(cols):
        return _col2im_cuda(cols, x_shape, kh, kw, stride, padding)
    xp = backend.get_array_module(cols)
    N, C, H, W = x_shape
    sy, sx = stride
    py, px = padding
    Ho, Wo = _conv_output_size(H, kh, sy, py), _conv_output_size(W, kw, sx, px)
    cols = cols.reshape(C, kh, kw, N, Ho, Wo)
    padded = xp.zeros((N, C, H + 2 * py, W + 2 * px), dtype=cols.dtype)

    def add(rows):                                    # one chunk of the batch per thread
        for ky in range(kh):
            for kx in range(kw):
                padded[rows, :, ky:ky + sy * (Ho - 1) + 1:sy, kx:kx + sx * (Wo - 1) + 1:sx] += \
                    cols[:, ky, kx, rows].transpose(1, 0, 2, 3)
    batch_parallel(add, N, cols.size)
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


def _corners(blocks, H, W):
    """The top-left H x W of every block of a [C, N, Hb, Wb] view, as [N, C, H, W] contiguous."""
    C, N = blocks.shape[:2]
    out = np.empty((N, C, H, W), dtype=blocks.dtype)

    def copy(rows):                                   # one chunk of the batch per thread
        out[rows] = blocks[:, rows, :H, :W].transpose(1, 0, 2, 3)
    batch_parallel(copy, N, out.size)
    return out


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

        def fill(rows):                               # one chunk of the batch per thread
            view[:, rows, H:, :] = 0
            view[:, rows, :H, W:] = 0
            view[:, rows, :H, :W] = x[rows].transpose(1, 0, 2, 3)
        batch_parallel(fill, N, flat.size)
        return flat

    def unpack(self, flat):
        """[C, L] computed positions -> [N, C, H, W] contiguous (margins dropped)."""
        return _corners(self.blocks(flat), self.H, self.W)


# Output pixels per image from which the window paths beat im2col, per pass (measured on a 2-core
# AMD EPYC, bench64's shapes, in one run): k*k GEMMs with K = C lose to one GEMM with K = 9C
# at small images and many channels (forward and weight gradient at 16 px and 256 channels:
# 0.97x and 1.06x as fast), while col2im (the input gradient) costs more than the windows down
# to 8 px (0.85x the time).
WINDOW_MIN_PIXELS = {"forward": 1024, "weight": 1024, "input": 64}


def _windows_pay(pass_, out_pixels):
    return out_pixels >= WINDOW_MIN_PIXELS[pass_] or not _impl.fast_path_on("conv2d.window_thresholds")


def _shifted_ok(x, kh, kw, stride, padding):
    """True when the shifted-window path applies: NumPy arrays, direct BLAS, stride 1, odd
    square kernel, 'same' padding."""
    return (not backend.is_cuda_array(x) and stride == (1, 1) and kh == kw and kh % 2 == 1
            and padding == ((kh - 1) // 2,) * 2 and blas.available(x.dtype) and _impl.fast_path_on("conv2d.windows"))


# Columns (output positions) per block of the window GEMMs. All k*k taps of one block run before
# the next block starts, so the [O, block] output that each tap adds into (beta = 1) stays in
# cache instead of streaming the whole [O, L] output from memory k*k times; a larger block
# leaves OpenBLAS's own tiling alone. At 64 px and 64-128 channels (L = 34 K columns per half
# batch) 8192 made the forward and input passes 1.05-1.25x as fast, at 32 px and below 1.0x
# (benchmarks/RESULTS.md, 2026-11-26 evening).
WINDOW_COLUMNS = 8192


def _column_blocks(L):
    if not _impl.fast_path_on("conv2d.column_blocks"):
        return [slice(0, L)]
    return [slice(j, min(L, j + WINDOW_COLUMNS)) for j in range(0, L, WINDOW_COLUMNS)]


def _taps(w):
    """w [O, C, k, k] -> [k, k, O, C] contiguous: one [O, C] matrix per kernel tap."""
    return np.ascontiguousarray(w.transpose(2, 3, 0, 1))


def _conv2d_shifted(x, w, adjoint=False):
    """conv2d(x, w) as window GEMMs; adjoint=True: x is an output-shaped g and the result is
    the adjoint in x, gx[r] = sum over taps of w_tap^T g[r - offset(tap)] (g zero off the images)."""
    N, _, H, W = x.shape
    O, C, k, _ = w.shape
    grid = _Grid(N, H, W, k)
    packed, taps = grid.pack(x), _taps(w)
    out = np.empty((C if adjoint else O, grid.L), dtype=x.dtype)
    for cols in _column_blocks(grid.L):
        for i in range(k * k):
            ky, kx = divmod(i, k)
            blas.gemm(taps[ky, kx], grid.window(packed, ky, kx, sign=-1 if adjoint else 1)[:, cols],
                      out[:, cols], beta=0.0 if i == 0 else 1.0, trans_a=adjoint)
    return grid.unpack(out)


def _conv2d_weight_grad_shifted(x, g, k):
    """Adjoint in w: gw[:, :, ky, kx] = g [O, L] @ window(x, ky, kx)^T (g zero off the images)."""
    N, C, H, W = x.shape
    O = g.shape[1]
    grid = _Grid(N, H, W, k)
    packed_x, packed_g = grid.pack(x), grid.pack(g)
    rows = grid.computed(packed_g)
    taps = np.empty((k, k, O, C), dtype=x.dtype)
    for block, cols in enumerate(_column_blocks(grid.L)):
        for i in range(k * k):
            ky, kx = divmod(i, k)
            blas.gemm(rows[:, cols], grid.window(packed_x, ky, kx)[:, cols], taps[ky, kx],
                      beta=0.0 if block == 0 else 1.0, trans_b=True)
    return np.ascontiguousarray(taps.transpose(2, 3, 0, 1))


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
        N, C = x.shape[:2]
        phases = np.zeros((self.s, self.s, C, self.size), dtype=x.dtype)
        blocks = self.blocks(phases)

        def fill(chunk):
            for a, b, (bi, si), (bj, sj) in self._phase_pairs():
                blocks[a, b, :, chunk, bi, bj] = x[chunk, :, si, sj].transpose(1, 0, 2, 3)
        batch_parallel(fill, N, phases.size)
        return phases

    def unpack(self, phases):
        """The adjoint of pack: phases [s, s, C, L] -> x [N, C, H, W] (pixels no phase holds: 0)."""
        C = phases.shape[2]
        blocks = self.blocks(phases)
        x = np.zeros((self.N, C, self.H, self.W), dtype=phases.dtype)

        def copy(chunk):
            for a, b, (bi, si), (bj, sj) in self._phase_pairs():
                x[chunk, :, si, sj] = blocks[a, b, :, chunk, bi, bj].transpose(1, 0, 2, 3)
        batch_parallel(copy, self.N, x.size)
        return x

    def pack_output(self, g):
        """An output-shaped g [N, O, Ho, Wo] -> [O, size], zero off the output pixels."""
        O = g.shape[1]
        flat = np.zeros((O, self.size), dtype=g.dtype)
        blocks = self.blocks(flat)

        def fill(chunk):
            blocks[:, chunk, :self.Ho, :self.Wo] = g[chunk].transpose(1, 0, 2, 3)
        batch_parallel(fill, self.N, flat.size)
        return flat

    def unpack_output(self, flat):
        """[O, L] computed positions -> [N, O, Ho, Wo] contiguous."""
        return _corners(self.blocks(flat), self.Ho, self.Wo)


def _strided_ok(x, kh, kw, stride, padding):
    """True when the phase-split shifted-window path applies: NumPy arrays, direct BLAS, equal
    strides >= 2, square kernel, equal paddings."""
    return (not backend.is_cuda_array(x) and stride[0] == stride[1] >= 2 and kh == kw
            and padding[0] == padding[1] and blas.available(x.dtype) and _impl.fast_path_on("conv2d.phase_grid"))


def _conv2d_strided(x, w, s, p):
    O, C, k, _ = w.shape
    grid = _PhaseGrid(x.shape, k, s, p)
    phases, taps = grid.pack(x), _taps(w)
    out = np.empty((O, grid.L), dtype=x.dtype)
    for i in range(k * k):
        ky, kx = divmod(i, k)
        blas.gemm(taps[ky, kx], grid.window(phases[ky % s, kx % s], ky, kx), out, beta=0.0 if i == 0 else 1.0)
    return grid.unpack_output(out)


def _conv_transpose2d_strided(g, w, x_shape, s, p):
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


def _conv2d_weight_grad_strided(x, g, k, s, p):
    C, O = x.shape[1], g.shape[1]
    grid = _PhaseGrid(x.shape, k, s, p)
    phases, rows = grid.pack(x), grid.computed(grid.pack_output(g))
    taps = np.empty((k, k, O, C), dtype=x.dtype)
    for i in range(k * k):
        ky, kx = divmod(i, k)
        blas.gemm(rows, grid.window(phases[ky % s, kx % s], ky, kx), taps[ky, kx], trans_b=True)
    return np.ascontiguousarray(taps.transpose(2, 3, 0, 1))


def _conv2d_forward(x, w, stride, padding):
    N, C, H, W = x.shape
    O, _, kh, kw = w.shape
    Ho = _conv_output_size(H, kh, stride[0], padding[0])
    Wo = _conv_output_size(W, kw, stride[1], padding[1])
    if _windows_pay("forward", Ho * Wo):
        if _shifted_ok(x, kh, kw, stride, padding):
            return _conv2d_shifted(x, w)
        if _strided_ok(x, kh, kw, stride, padding):
            return _conv2d_strided(x, w, stride[0], padding[0])
    cols = _im2col(x, kh, kw, stride, padding)
    return _from_rows(w.reshape(O, -1) @ cols, N, Ho, Wo)


def _conv_transpose2d_forward(g, w, x_shape, stride, padding):
    O, C, kh, kw = w.shape
    if _windows_pay("input", g.shape[2] * g.shape[3]):
        if _shifted_ok(g, kh, kw, stride, padding):
            return _conv2d_shifted(g, w, adjoint=True)
        if _strided_ok(g, kh, kw, stride, padding):
            return _conv_transpose2d_strided(g, w, x_shape, stride[0], padding[0])
    cols = w.reshape(O, C * kh * kw).T @ _to_rows(g)
    return _col2im(cols, x_shape, kh, kw, stride, padding)


def _conv2d_weight_grad_forward(x, g, w_shape, stride, padding):
    O, C, kh, kw = w_shape
    if _windows_pay("weight", g.shape[2] * g.shape[3]):
        if _shifted_ok(x, kh, kw, stride, padding):
            return _conv2d_weight_grad_shifted(x, g, kh)
        if _strided_ok(x, kh, kw, stride, padding):
            return _conv2d_weight_grad_strided(x, g, kh, stride[0], padding[0])
    cols = _im2col(x, kh, kw, stride, padding)
    return (_to_rows(g) @ cols.T).reshape(w_shape)


class Conv2d(Function):
    def forward(self, x, w, stride, padding):
        self.stride, self.padding = stride, padding
        return _conv2d_forward(x, w, stride, padding)

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
        self.x_shape, self.stride, self.padding = x_shape, stride, padding
        return _conv_transpose2d_forward(g, w, x_shape, stride, padding)

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
        return _conv2d_weight_grad_forward(x, g, w_shape, stride, padding)

    def backward(self, gw):
        x, g = self.inputs
        gx = gg = None
        if self.needs_input_grad[0]:
            gx = ConvTranspose2d.apply(g, gw, x_shape=x.shape, stride=self.stride, padding=self.padding)
        if self.needs_input_grad[1]:
            gg = Conv2d.apply(x, gw, stride=self.stride, padding=self.padding)
        return gx, gg


def _check_conv(op, x, w):
    for name, t in (("x", x), ("w", w)):
        if not isinstance(t, Tensor):
            raise ValueError(f"{op}: {name} must be a Tensor, got {type(t).__name__}")
        if t.ndim != 4:
            raise ValueError(f"{op}: {name} must be 4-D, got shape {tuple(t.shape)}")
    backend.check_float_dtype(op, x.data, w.data)


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


# --- CUDA launchers (kernels/im2col.cu); the GEMMs go through cuBLAS via CuPy's matmul ---------

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
    cuda.launch("im2col", "im2col_kernel", x.dtype, cols.size, (cols, x) + geometry)
    return cols


def _col2im_cuda(cols, x_shape, kh, kw, stride, padding):
    from .. import cuda
    cols = cuda.device_array(cols)
    geometry = _conv_geometry(x_shape, kh, kw, stride, padding)
    N, C, H, W = x_shape
    if cols.shape != (C * kh * kw, N * int(geometry[-2]) * int(geometry[-1])):
        raise ValueError(f"conv2d: patch matrix {cols.shape} does not match input {tuple(x_shape)} and kernel {kh}x{kw}")
    x = cuda.empty(tuple(x_shape), cols.dtype)
    cuda.launch("im2col", "col2im_kernel", cols.dtype, x.size, (x, cols) + geometry)
    return x
