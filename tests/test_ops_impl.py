"""ops/_impl.py: the implementation choice (process-wide, reaches the pool threads), the
environment settings and their errors, and every op family's table of implementations."""
import importlib
import inspect
import os
import subprocess
import sys

import numpy as np
import pytest

import nanostyle as ns
from nanostyle import parallel
from nanostyle.ops import _impl

FAMILIES = ["adam", "bias_act", "conv2d", "modulated_conv2d", "noise", "scatter_add", "softplus", "upfirdn2d"]
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_use_impl_switches_and_restores_even_on_error():
    assert ns.ops.get_impl() == "fast" and _impl.choose(np.zeros(1)) == "fast"
    with pytest.raises(RuntimeError):
        with ns.ops.use_impl("ref"):
            assert _impl.choose(np.zeros(1)) == "ref"
            assert not _impl.fast_path_on("conv2d.windows")
            raise RuntimeError
    assert ns.ops.get_impl() == "fast" and _impl.fast_path_on("conv2d.windows")
    with pytest.raises(ValueError, match="set_impl: 'cuda' is not an implementation"):
        ns.ops.set_impl("cuda")


def test_the_choice_reaches_every_part_of_a_split_batch():
    with ns.ops.use_impl("ref"):
        assert parallel.split_batch(lambda i: _impl.choose(np.zeros(1)), 2) == ["ref", "ref"]


@pytest.mark.parametrize("variable, value, expected", [
    ("NANOSTYLE_IMPL", "ref", "ref fast_off=[]"),
    ("NANOSTYLE_FAST_OFF", "conv2d.windows, upfirdn2d.banded", "fast fast_off=['conv2d.windows', 'upfirdn2d.banded']"),
    ("NANOSTYLE_IMPL", "numba", "NANOSTYLE_IMPL='numba' is not understood; use one of ref, fast"),
    ("NANOSTYLE_FAST_OFF", "conv2d.winograd", "NANOSTYLE_FAST_OFF names unknown fast paths ['conv2d.winograd']"),
])
def test_environment_settings(variable, value, expected):
    code = "from nanostyle.ops import _impl; print(_impl.get_impl(), 'fast_off=' + str(sorted(_impl._fast_off)))"
    env = {k: v for k, v in os.environ.items() if k not in ("NANOSTYLE_IMPL", "NANOSTYLE_FAST_OFF")}
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60,
                            env=dict(env, **{variable: value}))
    assert expected in result.stdout + result.stderr


@pytest.mark.parametrize("family", FAMILIES)
def test_every_family_maps_each_implementation_to_passes_of_one_signature(family):
    """IMPLEMENTATIONS has ref, fast and cuda, and each pass takes what the reference's takes
    (the CUDA launchers cannot run here: a mismatch would otherwise show only on a GPU)."""
    table = importlib.import_module(f"nanostyle.ops.{family}").IMPLEMENTATIONS
    assert set(table) == {"ref", "fast", "cuda"}

    def passes(entry):
        return list(entry) if isinstance(entry, tuple) else [entry]

    def required(fn):
        return [p.name for p in inspect.signature(fn).parameters.values() if p.default is p.empty]
    for impl in ("fast", "cuda"):
        assert len(passes(table[impl])) == len(passes(table["ref"]))
        for fn, ref in zip(passes(table[impl]), passes(table["ref"])):
            assert len(required(fn)) == len(required(ref)), f"{family} {impl} {fn.__name__}"
