"""GEMM straight from the BLAS that NumPy itself links, for the CPU convolutions.

NumPy's matmul copies any operand that is not contiguous and cannot add into an existing
output. The window convolutions of ops/_conv2d_cpu.py need both: their operands are windows
of one flat buffer (2-D views whose row stride is longer than a row), and each kernel tap adds
its product into the same output (beta = 1). `gemm` calls `?gemm` of the OpenBLAS that NumPy's
wheels ship (numpy.libs/libscipy_openblas64_*.so, the same library and thread pool NumPy's
matmul uses) through ctypes, which releases the GIL for the call.

`available(dtype)` says whether the call can be made; where it cannot (a NumPy built against
another BLAS, Accelerate on macOS, or NANOSTYLE_BLAS=numpy in the environment), the
convolutions use im2col and NumPy's matmul, with the same results to rounding.
"""
import ctypes
import glob
import os

import numpy as np

_ROW_MAJOR, _NO_TRANS, _TRANS = 101, 111, 112
# (symbol template, integer type): NumPy 2 wheels (scipy-openblas, 64-bit ints), NumPy 1.26
# wheels (openblas64_), and LP64 builds.
_SYMBOLS = (("scipy_cblas_{}gemm64_", ctypes.c_int64), ("cblas_{}gemm64_", ctypes.c_int64),
            ("scipy_cblas_{}gemm", ctypes.c_int), ("cblas_{}gemm", ctypes.c_int))
_functions = None                      # {np.dtype: ctypes function}, filled on first use


def _library_paths():
    libs = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(np.__file__))), "numpy.libs")
    return sorted(glob.glob(os.path.join(libs, "lib*openblas*.so*")))


def _switched_off():
    """NANOSTYLE_BLAS=numpy (or off, 0): NumPy's own matmul only, no direct calls."""
    return os.environ.get("NANOSTYLE_BLAS", "").lower() in ("numpy", "off", "0")


def _libraries():
    """NumPy's OpenBLAS libraries, loaded, in _library_paths' order (those that fail to load skipped)."""
    for path in _library_paths():
        try:
            yield ctypes.CDLL(path)
        except OSError:
            continue


def _load():
    found = {}
    if _switched_off():
        return found
    for lib in _libraries():
        for template, int_t in _SYMBOLS:
            try:
                pair = {np.dtype(np.float32): getattr(lib, template.format("s")),
                        np.dtype(np.float64): getattr(lib, template.format("d"))}
            except AttributeError:
                continue
            for dtype, fn in pair.items():
                real = ctypes.c_float if dtype == np.float32 else ctypes.c_double
                fn.restype = None
                fn.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int, int_t, int_t, int_t, real,
                               ctypes.c_void_p, int_t, ctypes.c_void_p, int_t, real, ctypes.c_void_p, int_t]
            return pair
    return found


def _function(*symbols):
    """The first of these functions found in NumPy's OpenBLAS, or None."""
    for lib in _libraries():
        for symbol in symbols:
            function = getattr(lib, symbol, None)
            if function is not None:
                return function
    return None


_set_local_threads = None              # OpenBLAS's openblas_set_num_threads_local, or False


def set_local_threads(count):
    """Make BLAS calls use `count` threads; returns the previous count, to restore it after.
    OpenBLAS >= 0.3.27's openblas_set_num_threads_local, meant per thread, but in NumPy's wheels
    it acts on every thread (set on a pool thread it slows the main thread's later GEMMs;
    benchmarks/RESULTS.md, "CPU fast paths: what each pays (issue 25)"), so set it around a
    piece of work and restore it. With any other BLAS this does nothing and returns `count`."""
    global _set_local_threads
    if _set_local_threads is None:
        _set_local_threads = False
        if not _switched_off():
            function = _function("openblas_set_num_threads_local")
            if function is not None:
                function.restype, function.argtypes = ctypes.c_int, [ctypes.c_int]
                _set_local_threads = function
    if not _set_local_threads:
        return count
    return _set_local_threads(int(count))


# OpenBLAS's kernel sets that use AVX-512 (its names for them, lower case)
_AVX512_CORES = {"skylakex", "cooperlake", "sapphirerapids"}


def core_name():
    """The name of the kernel set the OpenBLAS NumPy links picked for this CPU ('Haswell',
    'SkylakeX', ...), or None where that cannot be asked."""
    function = _function("scipy_openblas_get_corename64_", "openblas_get_corename64_",
                         "scipy_openblas_get_corename", "openblas_get_corename")
    if function is None:
        return None
    function.restype, function.argtypes = ctypes.c_char_p, []
    return function().decode()


def _cpu_flags():
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def kernel_advice(core=None, flags=None, environ=None):
    """One line for the user when OPENBLAS_CORETYPE holds OpenBLAS to kernels without AVX-512 on
    a CPU that has it (some machine images set OPENBLAS_CORETYPE=Haswell), else None. GEMMs, and
    so the training step, run markedly faster with the AVX-512 kernels (benchmarks/RESULTS.md,
    "CPU fast paths: what each pays (issue 25)", which points to the figures). nanostyle leaves
    the setting as it is: whoever set it may have had a reason."""
    environ = os.environ if environ is None else environ
    pinned = environ.get("OPENBLAS_CORETYPE")
    if not pinned:
        return None
    core = core_name() if core is None else core
    flags = _cpu_flags() if flags is None else flags
    if core is None or core.lower() in _AVX512_CORES or not {"avx512f", "avx512bw", "avx512vl"} <= flags:
        return None
    return (f"note: OpenBLAS runs its {core} kernels (no AVX-512) because OPENBLAS_CORETYPE={pinned} is set, but "
            "this CPU has AVX-512; `unset OPENBLAS_CORETYPE` lets it use them, which makes training faster "
            "(benchmarks/RESULTS.md)")


def available(dtype):
    """True when gemm() can run for arrays of this dtype (float32 or float64)."""
    global _functions
    if _functions is None:
        _functions = _load()
    return np.dtype(dtype) in _functions


def _leading_dim(a, name):
    if (a.ndim != 2 or a.strides[1] != a.itemsize or a.strides[0] % a.itemsize
            or (a.shape[0] > 1 and a.strides[0] < a.shape[1] * a.itemsize)):
        raise ValueError(f"blas.gemm: {name} must be a 2-D view with unit stride along its rows, "
                         f"got shape {a.shape} strides {a.strides}")
    return max(a.strides[0] // a.itemsize, a.shape[1], 1)


def gemm(a, b, c, beta=0.0, trans_a=False, trans_b=False):
    """c <- op(a) @ op(b) + beta * c in place, op(m) = m.T when trans_*; a, b, c are NumPy 2-D
    arrays or views of one float dtype, each with unit stride along its last axis."""
    if not available(c.dtype):
        raise RuntimeError("blas.gemm: no BLAS found for direct calls; check blas.available() first")
    if not (a.dtype == b.dtype == c.dtype):
        raise ValueError(f"blas.gemm: dtypes differ ({a.dtype}, {b.dtype}, {c.dtype})")
    m, k = (a.shape[1], a.shape[0]) if trans_a else a.shape
    k2, n = (b.shape[1], b.shape[0]) if trans_b else b.shape
    if k != k2 or c.shape != (m, n):
        raise ValueError(f"blas.gemm: shapes do not chain: op(a) {(m, k)} @ op(b) {(k2, n)} -> c {c.shape}")
    if not c.flags.writeable:
        raise ValueError("blas.gemm: c is read-only")
    if m == 0 or n == 0:
        return c
    if k == 0:
        c *= beta
        return c
    lda, ldb, ldc = _leading_dim(a, "a"), _leading_dim(b, "b"), _leading_dim(c, "c")
    _functions[c.dtype](_ROW_MAJOR, _TRANS if trans_a else _NO_TRANS, _TRANS if trans_b else _NO_TRANS,
                        m, n, k, 1.0, a.ctypes.data, lda, b.ctypes.data, ldb, beta, c.ctypes.data, ldc)
    return c
