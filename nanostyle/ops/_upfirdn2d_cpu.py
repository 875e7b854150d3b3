"""upfirdn2d's fast CPU path: a rank-1 filter (such as [1,3,3,1]'s outer product) as a row pass
and a column pass, 4 + 4 taps instead of 16, rows first.

  upfirdn2d(x, outer(c, r)) = fir_columns(fir_rows(x, r), c)

On images up to BAND_MAX_WIDTH pixels a pass is one product with a banded matrix that holds the
zero insertion, padding, taps and decimation of one axis; on larger ones a slice-multiply-add
per tap (_fir_1d). Other filters run the reference (upfirdn2d.py). Same results as the
reference to rounding.
"""
import numpy as np

from . import _impl
from .upfirdn2d import _filter_2d, _upfirdn2d_ref

# Images up to this many pixels wide (tall) take the row (column) pass as a product with a
# banded matrix: its cost grows with the size (one multiply-add per input sample and output,
# against one per tap for _fir_1d), yet BLAS does it faster than NumPy's passes over
# zero-padded buffers on small images (benchmarks/RESULTS.md, "CPU fast paths: what each pays
# (issue 25)").
BAND_MAX_WIDTH = 80


def upfirdn2d(x, f, up, down, padding, flip_filter, gain, band_max_width=None):
    """upfirdn2d on NumPy arrays; band_max_width: BAND_MAX_WIDTH unless given (0: no bands)."""
    separable = _separate(_filter_2d(f, flip_filter, gain, x.dtype)) \
        if _impl.fast_path_on("upfirdn2d.separable") else None
    if separable is None:
        return _upfirdn2d_ref(x, f, up, down, padding, flip_filter, gain)
    if band_max_width is None:
        band_max_width = BAND_MAX_WIDTH if _impl.fast_path_on("upfirdn2d.banded") else 0
    H, W = x.shape[2:]
    x0, x1, y0, y1 = padding
    column_taps, row_taps = separable
    if W <= band_max_width:                           # the row pass as one GEMM, then the column pass
        x = _fir_rows_gemm(x, row_taps, up, down, x0, x1)
        if H <= band_max_width:                       # T^T @ each image
            return np.matmul(_band(H, column_taps, up, down, y0, y1, x.dtype, transpose=True), x)
    else:
        x = _fir_1d(x, row_taps, up, down, x0, x1, axis=3)
    return _fir_1d(x, column_taps, up, down, y0, y1, axis=2)


def _separate(kernel):
    """(column taps, row taps) when the 2-D kernel is an outer product, else None."""
    if kernel.shape[0] == 1 or kernel.shape[1] == 1:
        return None
    u, s, vt = np.linalg.svd(kernel.astype(np.float64))
    if s[1] > 1e-12 * s[0]:
        return None
    return u[:, 0] * s[0], vt[0]


# ---- one axis: a banded matrix product, or a slice-multiply-add per tap -----------------------

def _band(n, taps, up, down, pad0, pad1, dtype, transpose=False):
    """The [n, n_out] matrix of one axis of upfirdn: T[i, o] = taps[i*up + pad0 - o*down]
    (zero outside the taps), so that x @ T upsamples, pads (or crops), filters and downsamples.
    transpose=True: T^T, contiguous."""
    K = len(taps)
    out_len = (n * up + pad0 + pad1 - K) // down + 1
    k = np.arange(n)[:, None] * up + pad0 - np.arange(out_len)[None, :] * down
    band = np.where((k >= 0) & (k < K), np.asarray(taps, dtype=np.float64)[np.clip(k, 0, K - 1)], 0.0).astype(dtype)
    return band.T.copy() if transpose else band


def _fir_rows_gemm(x, taps, up, down, pad0, pad1):
    """_fir_1d along the last axis as one GEMM: x [..., n] @ T [n, n_out]."""
    band = _band(x.shape[-1], taps, up, down, pad0, pad1, x.dtype)
    rows = np.ascontiguousarray(x).reshape(-1, x.shape[-1]) @ band
    return rows.reshape(x.shape[:-1] + (band.shape[1],))


def _fir_1d(x, taps, up, down, pad0, pad1, axis):
    """Upsample, pad, correlate with `taps`, downsample along one axis of x.

    Zero insertion and padding happen in one allocation."""
    n = x.shape[axis]
    length = n * up + pad0 + pad1

    def index(sl, ndim=x.ndim):
        idx = [slice(None)] * ndim
        idx[axis] = sl
        return tuple(idx)

    if up > 1 or pad0 > 0 or pad1 > 0:
        # sample i lands at buffer position i * up + pad0; keep those inside [0, length)
        first = max(0, -(-max(0, -pad0) // up))
        last = min(n - 1, (length - 1 - pad0) // up)
        shape = list(x.shape)
        shape[axis] = length
        buffer = np.zeros(shape, dtype=x.dtype)
        if last >= first:
            start = first * up + pad0
            buffer[index(slice(start, start + (last - first) * up + 1, up))] = x[index(slice(first, last + 1))]
        x = buffer
    else:  # pure cropping
        x = x[index(slice(-pad0, n + pad1))]
    K = len(taps)
    out_len = (x.shape[axis] - K) // down + 1

    def tap(k):
        return x[index(slice(k, k + down * (out_len - 1) + 1, down))]

    out = None
    for k in range(K):
        if taps[k] != 0:
            term = tap(k) * x.dtype.type(taps[k])
            if out is None:
                out = term
            else:
                out += term
    if out is None:
        shape = list(x.shape)
        shape[axis] = out_len
        out = np.zeros(shape, dtype=x.dtype)
    return out
