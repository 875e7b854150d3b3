"""Which implementation an op runs: the plain reference, the fast CPU path, or CUDA.

Every op family keeps one table {"ref": ..., "fast": ..., "cuda": ...} (`table`) and takes the
entry `pick(IMPLEMENTATIONS, array)` per call, by `choose(array)`: "cuda" for CuPy arrays, else
the CPU choice, "fast" unless set to "ref" by NANOSTYLE_IMPL=ref in the environment,
`set_impl("ref")` or `with use_impl("ref"):`. The choice is process-wide, not per thread:
training runs the parts of a batch on pool threads, and they must run what the caller chose.

The fast CPU paths are named in FAST_PATHS; NANOSTYLE_FAST_OFF=name,name switches single ones
off (what they speed up then runs the reference's way), so that benchmarks/fast_paths.py can
time each one against the step without it. Each is kept because it saves at least 5 % of the
training step (benchmarks/RESULTS.md, "CPU fast paths: what each pays (issue 25)").
"""
import contextlib
import os

from .. import backend

IMPLS = ("ref", "fast")

# name -> where it lives and what it does
FAST_PATHS = {
    "conv2d.windows": "_conv2d_cpu: stride-1 'same' convolutions as one GEMM per kernel tap on "
                      "shifted windows of a flat zero-margined batch (_Grid), no patch matrix",
    "upfirdn2d.separable": "_upfirdn2d_cpu: rank-1 filters as a row pass and a column pass",
    "upfirdn2d.banded": "_upfirdn2d_cpu: the row and column passes of small images as GEMMs "
                        "with a banded matrix",
}


def _read_impl():
    name = os.environ.get("NANOSTYLE_IMPL", "").strip().lower() or "fast"
    if name not in IMPLS:
        raise ValueError(f"NANOSTYLE_IMPL={name!r} is not understood; use one of {', '.join(IMPLS)}")
    return name


def _read_fast_off():
    names = {n.strip() for n in os.environ.get("NANOSTYLE_FAST_OFF", "").split(",") if n.strip()}
    unknown = sorted(names - set(FAST_PATHS))
    if unknown:
        raise ValueError(f"NANOSTYLE_FAST_OFF names unknown fast paths {unknown}; "
                         f"known: {', '.join(sorted(FAST_PATHS))}")
    return frozenset(names)


_cpu_impl = _read_impl()
_fast_off = _read_fast_off()


def get_impl():
    """The CPU implementation ops run now: "fast" (the default) or "ref"."""
    return _cpu_impl


def set_impl(name):
    """Make ops on NumPy arrays run `name` ("ref" or "fast") from now on, in every thread;
    returns the previous choice. CuPy arrays always run the CUDA kernels."""
    global _cpu_impl
    if name not in IMPLS:
        raise ValueError(f"set_impl: {name!r} is not an implementation; use one of {', '.join(IMPLS)}")
    previous, _cpu_impl = _cpu_impl, name
    return previous


@contextlib.contextmanager
def use_impl(name):
    """`with use_impl("ref"):` runs the ops inside on the plain reference (process-wide: not
    for two threads that want different choices at once)."""
    previous = set_impl(name)
    try:
        yield
    finally:
        set_impl(previous)


def choose(array):
    """"cuda" when `array` is a CuPy array, else the CPU choice ("fast" or "ref")."""
    if backend.is_cuda_array(array):
        return "cuda"
    return _cpu_impl


def table(ref, cuda, fast=None):
    """A family's IMPLEMENTATIONS: {"ref", "fast", "cuda"}; "fast" is the reference where the
    family has no fast CPU path of its own."""
    return {"ref": ref, "fast": ref if fast is None else fast, "cuda": cuda}


def pick(implementations, array):
    """The entry of a family's IMPLEMENTATIONS table that runs for `array` (see choose)."""
    return implementations[choose(array)]


def fast_path_on(name):
    """False when the fast path `name` (a key of FAST_PATHS) is switched off by
    NANOSTYLE_FAST_OFF, or when the reference was chosen."""
    return _cpu_impl == "fast" and name not in _fast_off
