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

Implementations (IMPLEMENTATIONS at the bottom; ops/_impl.py picks one per call): the reference
here, one strided slice-multiply-add per filter tap at the kept output positions; the fast CPU
path of _upfirdn2d_cpu.py (rank-1 filters as a row pass and a column pass); kernels/upfirdn2d.cu.
"""
import numpy as np

from .. import backend
from ..autograd import Function, Tensor
from . import _impl


def upfirdn2d(x, f, up=1, down=1, padding=0, flip_filter=False, gain=1):
    """Upsample, pad, FIR-filter and downsample a batch of images (see module docstring)."""
    if f is not None:
        f = backend.to_numpy(f.data if isinstance(f, Tensor) else f)
    up, down, padding = int(up), int(down), parse_padding(padding)
    _check(x, f, up, down, padding)
    return Upfirdn2d.apply(x, f=f, up=up, down=down, padding=padding, flip_filter=bool(flip_filter),
                           gain=float(gain))


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


class Upfirdn2d(Function):
    def forward(self, x, f, up, down, padding, flip_filter, gain):
        self.f, self.up, self.down, self.padding = f, up, down, padding
        self.flip_filter, self.gain, self.in_shape = flip_filter, gain, x.shape
        out = _impl.pick(IMPLEMENTATIONS, x)(x, f, up, down, padding, flip_filter, gain)
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


# ---- arguments -------------------------------------------------------------------------------

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


def _output_size(size, up, down, pad0, pad1, taps):
    return (size * up + pad0 + pad1 - taps) // down + 1


def _check(x, f, up, down, padding):
    if not isinstance(x, Tensor):
        raise ValueError(f"upfirdn2d: x must be a Tensor, got {type(x).__name__}")
    if x.ndim != 4:
        raise ValueError(f"upfirdn2d: x must be 4-D [N, C, H, W], got shape {tuple(x.shape)}")
    backend.check_float_dtype("upfirdn2d", x.data)
    if f is not None and f.ndim not in (1, 2):
        raise ValueError(f"upfirdn2d: filter must be 1-D or 2-D, got shape {f.shape}")
    if up < 1 or down < 1:
        raise ValueError(f"upfirdn2d: up and down must be >= 1, got up={up}, down={down}")
    fw, fh = filter_size(f)
    x0, x1, y0, y1 = padding
    out_h = _output_size(x.shape[2], up, down, y0, y1, fh)
    out_w = _output_size(x.shape[3], up, down, x0, x1, fw)
    if out_h <= 0 or out_w <= 0:
        raise ValueError(f"upfirdn2d: output would be empty ({out_h}x{out_w}) for input "
                         f"{tuple(x.shape)}, filter {fh}x{fw}, up {up}, down {down}, padding {padding}")


# ---- the reference ---------------------------------------------------------------------------

def _filter_2d(f, flip_filter, gain, dtype):
    """The correlation kernel applied: 2-D (a 1-D filter along both axes is their outer product),
    gain folded in, flipped unless flip_filter (convolution = correlation with the flipped filter)."""
    kernel = np.ones((1, 1)) if f is None else np.asarray(f, dtype=np.float64)
    if kernel.ndim == 1:
        kernel = np.outer(kernel, kernel)
    kernel = kernel * gain
    if not flip_filter:
        kernel = kernel[::-1, ::-1]
    return np.ascontiguousarray(kernel, dtype=dtype)


def _upfirdn2d_ref(x, f, up, down, padding, flip_filter, gain):
    """x [N, C, H, W]; f an array or None; padding (x0, x1, y0, y1)."""
    N, C, H, W = x.shape
    x0, x1, y0, y1 = padding
    kernel = _filter_2d(f, flip_filter, gain, x.dtype)
    fh, fw = kernel.shape
    out_h = _output_size(H, up, down, y0, y1, fh)
    out_w = _output_size(W, up, down, x0, x1, fw)
    # 1. zero insertion
    if up > 1:
        upsampled = np.zeros((N, C, H * up, W * up), dtype=x.dtype)
        upsampled[:, :, ::up, ::up] = x
        x = upsampled
    # 2. pad (positive) and crop (negative)
    x = np.pad(x, ((0, 0), (0, 0), (max(y0, 0), max(y1, 0)), (max(x0, 0), max(x1, 0))))
    x = x[:, :, max(-y0, 0):x.shape[2] - max(-y1, 0), max(-x0, 0):x.shape[3] - max(-x1, 0)]
    # 3+4. correlate with the kernel, only at the kept output positions
    out = np.zeros((N, C, out_h, out_w), dtype=x.dtype)
    for ky in range(fh):
        for kx in range(fw):
            tap = kernel[ky, kx]
            if tap == 0:
                continue
            window = x[:, :, ky:ky + down * (out_h - 1) + 1:down, kx:kx + down * (out_w - 1) + 1:down]
            out += window * x.dtype.type(tap)
    return out


# ---- CUDA (kernels/upfirdn2d.cu) ---------------------------------------------------------------

def _upfirdn2d_cuda(x, f, up, down, padding, flip_filter, gain):
    from .. import cuda
    x = cuda.device_array(x)
    N, C, H, W = x.shape
    x0, x1, y0, y1 = padding
    kernel = _filter_2d(f, flip_filter, gain, x.dtype)
    fh, fw = kernel.shape
    out_h = _output_size(H, up, down, y0, y1, fh)
    out_w = _output_size(W, up, down, x0, x1, fw)
    y = cuda.empty((N, C, out_h, out_w), x.dtype)
    f_device = cuda.device_array(backend.xp_for_device("cuda").asarray(kernel))
    cuda.launch("upfirdn2d", "upfirdn2d_kernel", x.dtype, y.size,
                (y, x, f_device, np.int64(N * C), np.int32(H), np.int32(W), np.int32(fh), np.int32(fw),
                 np.int32(up), np.int32(down), np.int32(x0), np.int32(y0), np.int32(out_h), np.int32(out_w)))
    return y


# ---- which implementation runs ---------------------------------------------------------------

from . import _upfirdn2d_cpu  # noqa: E402  (after the reference, which its fallback calls)

IMPLEMENTATIONS = _impl.table(ref=_upfirdn2d_ref, fast=_upfirdn2d_cpu.upfirdn2d, cuda=_upfirdn2d_cuda)
