"""upfirdn2d: upsample, pad, FIR-filter, downsample (StyleGAN2-ADA's resampling primitive).

For x [N, C, H, W] and a filter f [fh, fw] (or a 1-D f applied along both axes):
  1. upsample by inserting up-1 zeros after every sample,
  2. pad by [x0, x1, y0, y1] (negative values crop),
  3. convolve with f * gain**(f.ndim / 2) (a true convolution; flip_filter=True correlates),
  4. keep every down-th sample.
Output height: (H*up + y0 + y1 - fh) // down + 1 (likewise the width).

The op is linear in x, so its gradient is the same op with up and down swapped, the filter
flipped and the padding mirrored (the reference's formula); the backward pass therefore calls
upfirdn2d itself and every order of derivative comes for free.

NumPy path: one strided slice-multiply-add per filter tap, computed only at the output positions
kept by the downsampling. Separable (rank-1) filters such as [1,3,3,1] run as two 1-D passes
(4 + 4 taps instead of 16), rows first, on the smaller intermediate.
"""
import functools

import numpy as np

from .. import backend
from . import _impl
from ..parallel import batch_parallel
from ..autograd import Function, Tensor


def setup_filter(f, normalize=True, flip_filter=False, gain=1, separable=None, dtype=np.float32):
    """A FIR filter as an array (no gradient). [1,3,3,1] becomes the 4x4 outer product,
    normalised to sum 1 (separable=True keeps it 1-D)."""
    if f is None:
        f = 1
    f = np.asarray(f, dtype=np.float64)
    if f.ndim not in (0, 1, 2):
        raise ValueError(f"setup_filter: filter must be 0-, 1- or 2-D, got shape {f.shape}")
    if f.size == 0:
        raise ValueError("setup_filter: empty filter")
    if f.ndim == 0:
        f = f.reshape(1)
    if separable is None:
        separable = f.ndim == 1 and f.size >= 8
    if f.ndim == 1 and not separable:
        f = np.outer(f, f)
    if normalize:
        f = f / f.sum()
    if flip_filter:
        f = f[::-1, ::-1] if f.ndim == 2 else f[::-1]
    f = f * (gain ** (f.ndim / 2))
    return np.ascontiguousarray(f, dtype=dtype)


def parse_padding(padding):
    """int, [px, py] or [x0, x1, y0, y1] -> (x0, x1, y0, y1)."""
    if isinstance(padding, (int, np.integer)):
        return (int(padding),) * 4
    padding = [int(p) for p in padding]
    if len(padding) == 2:
        px, py = padding
        return px, px, py, py
    if len(padding) == 4:
        return tuple(padding)
    raise ValueError(f"padding must be an int, [px, py] or [x0, x1, y0, y1], got {padding}")


def filter_size(f):
    if f is None:
        return 1, 1
    f = f.data if isinstance(f, Tensor) else f
    if f.ndim == 1:
        return f.shape[0], f.shape[0]
    return f.shape[1], f.shape[0]  # (fw, fh)


def _filter_2d(f, flip_filter, gain, dtype):
    """The correlation kernel actually applied: 2-D, gain folded in, flipped unless flip_filter.
    (A 1-D filter is applied along both axes with gain**0.5 each: the outer product times gain.)
    Read-only: it is cached, since every call of a layer asks for the same one."""
    return _filter_plan(f, flip_filter, gain, dtype)[0]


def _filter_plan(f, flip_filter, gain, dtype):
    """(kernel of _filter_2d, _separate(kernel)), from the cache: keyed by the filter's values
    (not the array's identity, so a fresh but equal filter still hits), flip, gain and dtype."""
    key = None
    if f is not None:
        f = backend.to_numpy(f.data if isinstance(f, Tensor) else f)
        key = f.shape, f.dtype.str, f.tobytes()
    plan = _plan if _impl.fast_path_on("upfirdn2d.caches") else _plan.__wrapped__
    return plan(key, bool(flip_filter), float(gain), np.dtype(dtype).str)


@functools.lru_cache(maxsize=256)
def _plan(key, flip_filter, gain, dtype):
    """_filter_plan's cached work, computed once per filter, gain, flip and dtype (the SVD and
    the small array work cost more, per call, than the smaller FIR passes themselves)."""
    if key is None:
        f2 = np.ones((1, 1))
    else:
        shape, dtype_str, raw = key
        f = np.frombuffer(raw, dtype=dtype_str).reshape(shape).astype(np.float64)
        f2 = np.outer(f, f) if f.ndim == 1 else f
    f2 = f2 * gain
    if not flip_filter:
        f2 = f2[::-1, ::-1]  # convolution = correlation with the flipped filter
    kernel = np.ascontiguousarray(f2).astype(dtype)
    kernel.setflags(write=False)
    separable = _separate(kernel)
    if separable is not None:
        for taps in separable:
            taps.setflags(write=False)
    return kernel, separable


def _output_size(size, up, down, pad0, pad1, taps):
    return (size * up + pad0 + pad1 - taps) // down + 1


def _separate(kernel):
    """(column taps, row taps) when the 2-D kernel is an outer product, else None."""
    if kernel.shape[0] == 1 or kernel.shape[1] == 1:
        return None
    u, s, vt = np.linalg.svd(kernel.astype(np.float64))
    if s[1] > 1e-12 * s[0]:
        return None
    return u[:, 0] * s[0], vt[0]


def _fir_1d(x, taps, up, down, pad0, pad1, axis):
    """Upsample, pad, correlate with `taps`, downsample along one axis of x.

    Zero insertion and padding happen in one allocation; symmetric taps (k, K-1-k) are summed
    before the multiply, so [1,3,3,1] costs five passes over the output instead of nine."""
    xp = backend.get_array_module(x)
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
        buffer = xp.zeros(shape, dtype=x.dtype)
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

    def accumulate(term):
        nonlocal out
        if out is None:
            out = term
        else:
            out += term

    done = set()
    for k in range(K // 2 if _impl.fast_path_on("upfirdn2d.symmetric_taps") else 0):
        mirror = K - 1 - k
        if taps[k] == taps[mirror]:
            if taps[k] != 0:
                term = tap(k) + tap(mirror)
                term *= x.dtype.type(taps[k])
                accumulate(term)
            done.update((k, mirror))
    for k in range(K):
        if k not in done and taps[k] != 0:
            accumulate(tap(k) * x.dtype.type(taps[k]))
    if out is None:
        shape = list(x.shape)
        shape[axis] = out_len
        out = xp.zeros(shape, dtype=x.dtype)
    return out


# Images up to this many pixels wide (tall) take the row (column) pass as a product with a
# banded matrix: its cost grows with the size (65 multiply-adds per output at 65 px against 4
# for the direct FIR), yet BLAS still does it faster than NumPy's passes over zero-padded
# buffers there (row pass 2.2x, column pass 1.5x at [16, 64, 65, 65]); at 256 it would not.
ROW_GEMM_MAX_WIDTH = 80


def _band(n, taps, up, down, pad0, pad1, dtype, transpose=False):
    """The [n, n_out] matrix of one axis of upfirdn: T[i, o] = taps[i*up + pad0 - o*down]
    (zero outside the taps), so that x @ T upsamples, pads (or crops), filters and downsamples.
    transpose=True: T^T, contiguous. Read-only and cached: the same few bands serve every call."""
    band = _band_cached if _impl.fast_path_on("upfirdn2d.caches") else _band_cached.__wrapped__
    return band(n, tuple(float(t) for t in taps), up, down, pad0, pad1, np.dtype(dtype).str,
                        transpose)


@functools.lru_cache(maxsize=512)
def _band_cached(n, taps, up, down, pad0, pad1, dtype, transpose):
    K = len(taps)
    out_len = (n * up + pad0 + pad1 - K) // down + 1
    k = np.arange(n)[:, None] * up + pad0 - np.arange(out_len)[None, :] * down
    band = np.where((k >= 0) & (k < K), np.asarray(taps, dtype=np.float64)[np.clip(k, 0, K - 1)], 0.0).astype(dtype)
    band = band.T.copy() if transpose else band
    band.setflags(write=False)
    return band


def _fir_rows_gemm(x, taps, up, down, pad0, pad1):
    """_fir_1d along the last axis as one GEMM: x [..., n] @ T [n, n_out]."""
    xp = backend.get_array_module(x)
    band = xp.asarray(_band(x.shape[-1], taps, up, down, pad0, pad1, x.dtype))
    rows = xp.ascontiguousarray(x).reshape(-1, x.shape[-1]) @ band
    return rows.reshape(x.shape[:-1] + (band.shape[1],))


def _upfirdn2d_forward(x, f, up, down, padding, flip_filter, gain):
    """Raw-array upfirdn2d. x [N, C, H, W]; f array or None; padding (x0, x1, y0, y1)."""
    if backend.is_cuda_array(x):
        return _upfirdn2d_cuda(x, f, up, down, padding, flip_filter, gain)
    xp = backend.get_array_module(x)
    N, C, H, W = x.shape
    x0, x1, y0, y1 = padding
    fw, fh = filter_size(f)
    kernel, separable = _filter_plan(f, flip_filter, gain, x.dtype)
    out_h = _output_size(H, up, down, y0, y1, fh)
    out_w = _output_size(W, up, down, x0, x1, fw)
    if out_h <= 0 or out_w <= 0:
        raise ValueError(f"upfirdn2d: output would be empty ({out_h}x{out_w}) for input "
                         f"{tuple(x.shape)}, filter {fh}x{fw}, up {up}, down {down}, padding {padding}")
    if not _impl.fast_path_on("upfirdn2d.separable"):
        separable = None
    banded = _impl.fast_path_on("upfirdn2d.banded")
    if separable is not None:
        column_taps, row_taps = separable
        if W <= ROW_GEMM_MAX_WIDTH and banded:                   # the row pass as one GEMM, then the column pass
            x = _fir_rows_gemm(x, row_taps, up, down, x0, x1)
            if H <= ROW_GEMM_MAX_WIDTH and banded:    # T^T @ each image, per chunk of the batch
                column_band = xp.asarray(_band(H, column_taps, up, down, y0, y1, x.dtype, transpose=True))
                out = xp.empty((N, C, column_band.shape[0], x.shape[3]), dtype=x.dtype)

                def fir(rows):
                    xp.matmul(column_band, x[rows], out=out[rows])
                batch_parallel(fir, N, out.size * 4)
                return out

            def fir(rows):
                return _fir_1d(x[rows], column_taps, up, down, y0, y1, axis=2)
        else:
            def fir(rows):                            # one chunk of the batch per thread
                part = _fir_1d(x[rows], row_taps, up, down, x0, x1, axis=3)
                return _fir_1d(part, column_taps, up, down, y0, y1, axis=2)
        parts = batch_parallel(fir, N, max(x.size, N * C * out_h * out_w) * max(up, down))
        return parts[0] if len(parts) == 1 else xp.concatenate(parts)
    # 1. zero insertion
    if up > 1:
        upsampled = xp.zeros((N, C, H * up, W * up), dtype=x.dtype)
        upsampled[:, :, ::up, ::up] = x
        x = upsampled
    # 2. pad (positive) and crop (negative)
    x = xp.pad(x, ((0, 0), (0, 0), (max(y0, 0), max(y1, 0)), (max(x0, 0), max(x1, 0))))
    x = x[:, :, max(-y0, 0):x.shape[2] - max(-y1, 0), max(-x0, 0):x.shape[3] - max(-x1, 0)]
    # 3+4. correlate with the kernel, only at the kept output positions
    out = xp.zeros((N, C, out_h, out_w), dtype=x.dtype)
    for ky in range(fh):
        for kx in range(fw):
            tap = kernel[ky, kx]
            if tap == 0:
                continue
            window = x[:, :, ky:ky + down * (out_h - 1) + 1:down, kx:kx + down * (out_w - 1) + 1:down]
            out += window * x.dtype.type(tap)
    return out


def _check(x, f, up, down):
    if not isinstance(x, Tensor):
        raise ValueError(f"upfirdn2d: x must be a Tensor, got {type(x).__name__}")
    if x.ndim != 4:
        raise ValueError(f"upfirdn2d: x must be 4-D [N, C, H, W], got shape {tuple(x.shape)}")
    backend.check_float_dtype("upfirdn2d", x.data)
    if f is not None and np.ndim(backend.to_numpy(f)) not in (1, 2):
        raise ValueError(f"upfirdn2d: filter must be 1-D or 2-D, got shape {np.shape(f)}")
    if int(up) < 1 or int(down) < 1:
        raise ValueError(f"upfirdn2d: up and down must be >= 1, got up={up}, down={down}")


class Upfirdn2d(Function):
    def forward(self, x, f, up, down, padding, flip_filter, gain):
        self.f, self.up, self.down, self.padding = f, up, down, padding
        self.flip_filter, self.gain, self.in_shape = flip_filter, gain, x.shape
        out = _upfirdn2d_forward(x, f, up, down, padding, flip_filter, gain)
        self.out_shape = out.shape
        return out

    def backward(self, g):
        fw, fh = filter_size(self.f)
        _, _, ih, iw = self.in_shape
        _, _, oh, ow = self.out_shape
        x0, x1, y0, y1 = self.padding
        p = (fw - x0 - 1, iw * self.up - ow * self.down + x0 - self.up + 1,
             fh - y0 - 1, ih * self.up - oh * self.down + y0 - self.up + 1)
        return Upfirdn2d.apply(g, f=self.f, up=self.down, down=self.up, padding=p,
                               flip_filter=not self.flip_filter, gain=self.gain)


def upfirdn2d(x, f, up=1, down=1, padding=0, flip_filter=False, gain=1):
    """Upsample, pad, FIR-filter and downsample a batch of images (see module docstring)."""
    _check(x, f, up, down)
    if f is not None:
        f = backend.to_numpy(f.data if isinstance(f, Tensor) else f)
    return Upfirdn2d.apply(x, f=f, up=int(up), down=int(down), padding=parse_padding(padding),
                           flip_filter=bool(flip_filter), gain=float(gain))


def filter2d(x, f, padding=0, flip_filter=False, gain=1):
    """FIR-filter keeping the size (the reference's padding rule)."""
    fw, fh = filter_size(f)
    x0, x1, y0, y1 = parse_padding(padding)
    p = (x0 + fw // 2, x1 + (fw - 1) // 2, y0 + fh // 2, y1 + (fh - 1) // 2)
    return upfirdn2d(x, f, padding=p, flip_filter=flip_filter, gain=gain)


def upsample2d(x, f, up=2, padding=0, flip_filter=False, gain=1):
    """Upsample by `up` with the FIR filter f; gain up**2 keeps the signal's level."""
    fw, fh = filter_size(f)
    x0, x1, y0, y1 = parse_padding(padding)
    p = (x0 + (fw + up - 1) // 2, x1 + (fw - up) // 2, y0 + (fh + up - 1) // 2, y1 + (fh - up) // 2)
    return upfirdn2d(x, f, up=up, padding=p, flip_filter=flip_filter, gain=gain * up * up)


def downsample2d(x, f, down=2, padding=0, flip_filter=False, gain=1):
    """Low-pass filter with f, then keep every `down`-th sample."""
    fw, fh = filter_size(f)
    x0, x1, y0, y1 = parse_padding(padding)
    p = (x0 + (fw - down + 1) // 2, x1 + (fw - down) // 2,
         y0 + (fh - down + 1) // 2, y1 + (fh - down) // 2)
    return upfirdn2d(x, f, down=down, padding=p, flip_filter=flip_filter, gain=gain)


# --- CUDA launcher (kernels/upfirdn2d.cu) -----------------------------------------------------

def _upfirdn2d_cuda(x, f, up, down, padding, flip_filter, gain):
    from .. import cuda
    x = cuda.device_array(x)
    N, C, H, W = x.shape
    x0, x1, y0, y1 = padding
    kernel = _filter_2d(f, flip_filter, gain, x.dtype)
    fh, fw = kernel.shape
    out_h = _output_size(H, up, down, y0, y1, fh)
    out_w = _output_size(W, up, down, x0, x1, fw)
    if out_h <= 0 or out_w <= 0:
        raise ValueError(f"upfirdn2d: output would be empty ({out_h}x{out_w}) for input {tuple(x.shape)}")
    y = cuda.empty((N, C, out_h, out_w), x.dtype)
    f_device = cuda.device_array(backend.xp_for_device("cuda").asarray(kernel))
    cuda.launch("upfirdn2d", "upfirdn2d_kernel", x.dtype, y.size,
                (y, x, f_device, np.int64(N * C), np.int32(H), np.int32(W), np.int32(fh), np.int32(fw),
                 np.int32(up), np.int32(down), np.int32(x0), np.int32(y0), np.int32(out_h), np.int32(out_w)))
    return y
