"""Split a minibatch over threads: the training loop's parts of a batch, at once, on the CPU.

`split_batch(fn, parts)` calls fn(i) for each part i of a minibatch (its whole forward and
backward pass) on its own thread, all at once; NumPy's loops and the GEMMs release the GIL, so
the parts run on the cores side by side, each with single-threaded BLAS so that the cores are
not shared twice over. `batch_parts` says how many parts a batch splits into.
"""
import os
from concurrent.futures import ThreadPoolExecutor

THREADS = int(os.environ.get("NANOSTYLE_NUM_THREADS", "0") or 0) or min(os.cpu_count() or 1, 8)
_pool = None


def _get_pool():
    global _pool
    if _pool is None:
        _pool = ThreadPoolExecutor(max_workers=THREADS, thread_name_prefix="nanostyle")
    return _pool


def split_batch(fn, parts):
    """[fn(i) for i in range(parts)], each call on its own thread at once (fn(0) on this one).
    Inside them BLAS calls are single-threaded. The calls must not write to shared state;
    results come back in order, and an exception in any call is raised here after all have
    finished."""
    from . import blas

    def run(i):
        # OpenBLAS's "local" thread count acts process-wide in NumPy's wheels (blas.py), so the
        # caller sets it for the whole split below; setting it here too covers a BLAS that
        # keeps it per thread
        previous_blas = blas.set_local_threads(1)
        try:
            return fn(i)
        finally:
            blas.set_local_threads(previous_blas)

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
