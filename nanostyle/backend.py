"""Array backends: NumPy on the CPU, CuPy on a CUDA GPU.

The array module is decided per array (`get_array_module`), as CuPy and Chainer do, so one op
implementation serves both. CuPy is imported in a guarded block: the library imports and runs on
a machine without CuPy, and on one with CuPy but no GPU (CI compiles the CUDA kernels there
through NVRTC, but never launches them).

Device choice: `NANOSTYLE_DEVICE=cpu|cuda` forces it; otherwise CUDA when CuPy imports *and* a
device answers, else CPU.
"""
import os

import numpy as np

try:  # CuPy is optional: the `cuda` extra installs it.
    import cupy
    _CUPY_IMPORT_ERROR = None
except Exception as error:  # ImportError, or a broken CUDA install raising at import
    cupy = None
    _CUPY_IMPORT_ERROR = error

_gpu_answers = None  # memoised: asking the driver is slow and the answer does not change


def cupy_available():
    """True when CuPy imports (a GPU is not needed: NVRTC compiles without one)."""
    return cupy is not None


def gpu_available():
    """True when CuPy imports and at least one CUDA device answers."""
    global _gpu_answers
    if _gpu_answers is None:
        _gpu_answers = False
        if cupy is not None:
            try:
                _gpu_answers = cupy.cuda.runtime.getDeviceCount() > 0
            except Exception:
                _gpu_answers = False
    return _gpu_answers


def gpu_unavailable_reason():
    """A sentence saying why GPU work cannot run here (for skipped tests and benchmarks)."""
    if cupy is None:
        return f"CuPy is not importable ({_CUPY_IMPORT_ERROR!r}); install the `cuda` extra"
    if not gpu_available():
        return "CuPy imports but no CUDA device answers on this machine"
    return ""


class DeviceUnavailable(RuntimeError):
    """The device asked for (cuda) is not there: no CuPy, or no GPU answers."""


def default_device():
    """'cuda' or 'cpu', honouring NANOSTYLE_DEVICE."""
    forced = os.environ.get("NANOSTYLE_DEVICE", "").strip().lower()
    if forced == "cpu":
        return "cpu"
    if forced in ("cuda", "gpu"):
        if not gpu_available():
            raise DeviceUnavailable(f"NANOSTYLE_DEVICE={forced} but {gpu_unavailable_reason()}; "
                               "unset NANOSTYLE_DEVICE or set it to cpu")
        return "cuda"
    if forced:
        raise ValueError(f"NANOSTYLE_DEVICE={forced!r} is not understood; use 'cpu' or 'cuda'")
    return "cuda" if gpu_available() else "cpu"


def get_array_module(*arrays):
    """numpy or cupy, whichever the arrays live in (numpy for Python scalars).

    A plain isinstance test rather than cupy.get_array_module: that one imports cupyx.scipy
    lazily on its first call, which fails when the first call comes from two pool threads at once."""
    if cupy is not None:
        for a in arrays:
            if isinstance(a, cupy.ndarray):
                return cupy
    return np


def xp_for_device(device):
    if device == "cpu":
        return np
    if device == "cuda":
        if not gpu_available():
            raise DeviceUnavailable(f"device 'cuda' asked for but {gpu_unavailable_reason()}; "
                                    "train or sample on the CPU with --device cpu (NANOSTYLE_DEVICE=cpu)")
        return cupy
    raise ValueError(f"unknown device {device!r}; use 'cpu' or 'cuda'")


def is_cuda_array(array):
    return cupy is not None and isinstance(array, cupy.ndarray)


def to_numpy(array):
    """A NumPy array for any array (CuPy arrays are copied to the host)."""
    if is_cuda_array(array):
        return cupy.asnumpy(array)
    return np.asarray(array)


def to_device(array, device):
    """Move an array to 'cpu' or 'cuda'."""
    return xp_for_device(device).asarray(array)


SUPPORTED_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def check_float_dtype(op, *arrays):
    """Raise ValueError unless every array is float32 or float64 and all share one dtype."""
    dtypes = {np.dtype(a.dtype) for a in arrays if a is not None}
    for dtype in dtypes:
        if dtype not in SUPPORTED_DTYPES:
            raise ValueError(f"{op}: unsupported dtype {dtype}; use float32 or float64")
    if len(dtypes) > 1:
        raise ValueError(f"{op}: mixed dtypes {sorted(str(d) for d in dtypes)}; "
                         "cast all inputs to one of float32 / float64")


def seed_all(seed):
    """A NumPy Generator seeded with `seed` (the library never uses the global RNG)."""
    return np.random.default_rng(seed)
