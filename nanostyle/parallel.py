"""Split NumPy work over the batch on a small thread pool.

OpenBLAS spreads each GEMM over the cores, but NumPy's own loops (copies, slice-adds,
elementwise chains) run on one core; they release the GIL, so chunks of a batch given to threads
run at once. `batch_parallel(fn, n, size)` calls fn(rows) for chunks `rows` (slices) of
range(n), each writing its own part of an output or returning its part, and returns the chunks'
results in order; `binary(ufunc, a, b)` splits a large broadcasting sum or product the same way.
Small work (below MIN_ELEMENTS) runs inline as one chunk, as does everything when
NANOSTYLE_NUM_THREADS=1.

`split_batch(fn, parts)` is the coarse version the training loop uses on the CPU: fn(i) for
each part i of a minibatch (its whole forward and backward pass) on its own thread, all at once.
Inside those threads the fine splitting above runs inline and each BLAS call uses one thread, so
the cores are not shared twice over. Per-op splitting leaves a core idle through every small op
and every hand-off; whole halves of a batch keep both busy.
"""
import math
import operator
import os
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np

THREADS = int(os.environ.get("NANOSTYLE_NUM_THREADS", "0") or 0) or min(os.cpu_count() or 1, 8)
MIN_ELEMENTS = 1 << 18            # below ~1 MB of float32 the thread hand-off costs more than it saves
_pool = None
_local = threading.local()          # .inline: this thread runs one part of split_batch


def _get_pool():
    global _pool
    if _pool is None:
        _pool = ThreadPoolExecutor(max_workers=THREADS, thread_name_prefix="nanostyle")
    return _pool


def _inline():
    return THREADS <= 1 or getattr(_local, "inline", False)


def batch_parallel(fn, n, size):
    """[fn(slice) for `THREADS` contiguous chunks of range(n)], run at once; `size` is the work's
    element count, to run small work inline (one chunk). fn's chunks must touch disjoint parts of
    any output."""
    from .ops import _impl
    chunks = min(THREADS, n)
    if chunks <= 1 or size < MIN_ELEMENTS or _inline() or not _impl.fast_path_on("parallel.batch_parallel"):
        return [fn(slice(0, n))]
    bounds = [round(i * n / chunks) for i in range(chunks + 1)]
    pool = _get_pool()
    return [future.result() for future in [pool.submit(fn, slice(a, b)) for a, b in zip(bounds[:-1], bounds[1:])]]


def split_batch(fn, parts):
    """[fn(i) for i in range(parts)], each call on its own thread at once (fn(0) on this one).
    Inside them batch_parallel and binary run inline and BLAS calls are single-threaded. The
    calls must not write to shared state; results come back in order, and an exception in any
    call is raised here after all have finished."""
    from . import blas

    def run(i):
        # OpenBLAS's "local" thread count acts process-wide in NumPy's wheels (measured: set on
        # a pool thread, it slowed later GEMMs on the main thread), so the caller sets it for the
        # whole split below; setting it here too covers a BLAS that keeps it per thread
        previous_inline, _local.inline = getattr(_local, "inline", False), True
        previous_blas = blas.set_local_threads(1)
        try:
            return fn(i)
        finally:
            blas.set_local_threads(previous_blas)
            _local.inline = previous_inline

    if parts <= 1:
        return [fn(0)]
    outer_blas = blas.set_local_threads(1)
    try:
        futures = [_get_pool().submit(run, i) for i in range(1, parts)]
        try:
            first = run(0)
        except BaseException:
            for future in futures:      # let the other parts finish before raising
                future.exception()
            raise
        return [first] + [future.result() for future in futures]
    finally:
        blas.set_local_threads(outer_blas)


def batch_parts(batch, group):
    """How many parts split_batch should cut a minibatch into: as many as there are threads, or
    fewer, so that each part holds a whole number of `group`s (the discriminator's
    minibatch-stddev groups, which then keep their size); 1 = no split."""
    for parts in range(min(THREADS, batch // group), 1, -1):
        if batch % (parts * group) == 0:
            return parts
    return 1


_OPERATORS = {np.add: operator.add, np.subtract: operator.sub, np.multiply: operator.mul,
              np.divide: operator.truediv}


def binary(ufunc, a, b):
    """a + b, a - b, a * b or a / b (ufunc np.add, np.subtract, np.multiply, np.divide), the same bits, split over
    the leading axis of the result on the pool when the result is large (the per-channel scalings
    and noise additions of the 64-px layers: 2.8 -> 1.5 ms for a [16, 64, 64, 64] float32
    product on 2 cores)."""
    from .ops import _impl
    inline = _OPERATORS[ufunc]                     # the operator: CuPy arrays and scalars as before
    if (not (isinstance(a, np.ndarray) and isinstance(b, np.ndarray)) or _inline()
            or not _impl.fast_path_on("parallel.binary")):
        return inline(a, b)
    shape = np.broadcast_shapes(a.shape, b.shape)
    if not shape or shape[0] < 2 or math.prod(shape) < MIN_ELEMENTS:
        return inline(a, b)
    out = np.empty(shape, dtype=np.result_type(a, b))
    a = a.reshape((1,) * (len(shape) - a.ndim) + a.shape)
    b = b.reshape((1,) * (len(shape) - b.ndim) + b.shape)

    def run(rows):
        ufunc(a if a.shape[0] == 1 else a[rows], b if b.shape[0] == 1 else b[rows], out=out[rows])
    batch_parallel(run, shape[0], out.size)
    return out
