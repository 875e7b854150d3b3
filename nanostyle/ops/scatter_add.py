"""scatter_add: out = zeros(shape); out[index] += g, repeated indices adding up: the transpose
of indexing, so the gradient of Tensor.__getitem__ (autograd's ScatterAdd), e.g. of the
augmentation's translation, whose reflected borders repeat rows and columns.

The reference: one += for a basic index (ints and slices), NumPy's add.at for an index array.
On a GPU a sort by destination and a segment sum (kernels/scatter_add.cu), so that the sums, and
every weight after them, are the same bits on every run. IMPLEMENTATIONS at the bottom;
ops/_impl.py picks one per call.
"""
import numpy as np

from . import _impl


def scatter_add(g, index, shape):
    """zeros(shape)[index] += g on raw arrays (index as NumPy or CuPy indexing takes it)."""
    return _impl.pick(IMPLEMENTATIONS, g)(g, index, shape)


def _is_fancy(index):
    items = index if isinstance(index, tuple) else (index,)
    return any(not isinstance(i, (int, slice, type(None), type(Ellipsis))) for i in items)


# ---- the reference ---------------------------------------------------------------------------

def _scatter_add_ref(g, index, shape):
    out = np.zeros(shape, dtype=g.dtype)
    if _is_fancy(index):
        np.add.at(out, index, g)
    else:
        out[index] += g
    return out


# ---- CUDA (kernels/scatter_add.cu) ---------------------------------------------------------------

def _scatter_add_cuda(g, index, shape):
    """CuPy's add.at adds with atomics, in the order the threads happen to arrive. Here each
    source element's destination is found by the same indexing applied to the destinations'
    numbers, the sources are sorted by (destination, source) - unique keys, so any sort gives
    the one order - and the kernel sums each destination's run in that order."""
    import cupy
    from .. import cuda
    if not _is_fancy(index):                      # each destination written at most once
        out = cupy.zeros(shape, dtype=g.dtype)
        out[index] += g
        return out
    n_out, n_src = int(np.prod(shape)), g.size
    dest = cupy.arange(n_out, dtype=np.int64).reshape(shape)[index].reshape(-1)
    if dest.size != n_src:
        raise ValueError(f"scatter_add: index selects {dest.size} elements but the gradient has {n_src}")
    if n_out * n_src >= 2 ** 63:
        raise ValueError(f"scatter_add: {n_src} sources into {n_out} destinations overflow the int64 sort key; "
                         "index a smaller array")
    order = cupy.argsort(dest * n_src + cupy.arange(n_src, dtype=np.int64))
    starts = cupy.searchsorted(dest[order], cupy.arange(n_out + 1, dtype=np.int64))
    out = cuda.empty(shape, g.dtype)
    cuda.launch("scatter_add", "segment_sum", g.dtype, n_out,
                (out, cuda.device_array(g), order, starts.astype(np.int64, copy=False), np.int64(n_out)))
    return out


# ---- which implementation runs (no fast CPU path of its own) -----------------------------------

IMPLEMENTATIONS = _impl.table(ref=_scatter_add_ref, cuda=_scatter_add_cuda)
