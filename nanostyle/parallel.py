"""Split NumPy work over the batch on a small thread pool.

OpenBLAS spreads each GEMM over the cores, but NumPy's own loops (copies, slice-adds,
elementwise chains) run on one core; they release the GIL, so chunks of a batch given to
threads run at once. `batch_parallel(fn, n, size)` calls fn(rows) for chunks `rows` (slices)
of range(n), each writing its own part of an output or returning its part, and returns the
chunks' results in order. Small work (below MIN_ELEMENTS) runs inline as one chunk, as does
everything when NANOSTYLE_NUM_THREADS=1.
"""
import os
from concurrent.futures import ThreadPoolExecutor

THREADS = int(os.environ.get("NANOSTYLE_NUM_THREADS", "0") or 0) or min(os.cpu_count() or 1, 8)
MIN_ELEMENTS = 1 << 18            # below ~1 MB of float32 the thread hand-off costs more than it saves
_pool = None


def batch_parallel(fn, n, size):
    """[fn(slice) for `THREADS` contiguous chunks of range(n)], run at once; `size` is the work's
    element count, to run small work inline (one chunk). fn's chunks must touch disjoint parts of
    any output."""
    global _pool
    chunks = min(THREADS, n)
    if chunks <= 1 or size < MIN_ELEMENTS:
        return [fn(slice(0, n))]
    if _pool is None:
        _pool = ThreadPoolExecutor(max_workers=THREADS, thread_name_prefix="nanostyle")
    bounds = [round(i * n / chunks) for i in range(chunks + 1)]
    return [future.result() for future in [_pool.submit(fn, slice(a, b)) for a, b in zip(bounds[:-1], bounds[1:])]]
