"""CUDA kernel infrastructure: compile nanostyle/kernels/<family>.cu once, cache it, launch it.

- A family is an op family: kernels/<family>.cu holds the kernels whose launchers sit in
  ops/<family>.py. Its source is common.cuh + <family>.cu; every kernel is a template instantiated
  for float and double through `name_expressions` (CuPy's RawModule), compiled lazily on first
  use on a GPU and cached by CuPy on disk (CUPY_CACHE_DIR).
- `compile_with_nvrtc(family, arch)` compiles the same source with NVRTC directly, with no GPU
  (CI runs it on a CPU machine for sm_80 and sm_90, so every kernel is proven to compile).
- Launchers check contiguity, dtype and shape, pass scalars with explicit NumPy types, and
  check the launch: CuPy raises on a failed launch; with NANOSTYLE_CUDA_SYNC=1 every launch is
  followed by a synchronisation so asynchronous faults surface at the kernel that caused them.
- With NANOSTYLE_POISON=1 (or `POISON_OUTPUTS = True`) outputs are allocated filled with NaN,
  so a kernel that leaves an element unwritten fails the parity tests.
"""
import functools
import os

import numpy as np


KERNEL_DIR = os.path.join(os.path.dirname(__file__), "kernels")

# op family (ops/<family>.py, kernels/<family>.cu) -> templated kernel names
KERNELS = {
    "adam": ["adam_step"],
    "bias_act": ["bias_act_forward", "bias_act_grad", "bias_act_grad2"],
    "conv2d": ["im2col_kernel", "col2im_kernel"],
    "modulated_conv2d": ["modulate_forward", "modulate_backward_styles", "weight_square_sum",
                         "demodulation_coefficients"],
    "noise": ["noise_forward", "noise_strength_grad"],
    "scatter_add": ["segment_sum"],
    "softplus": ["softplus_forward", "sigmoid_forward"],
    "upfirdn2d": ["upfirdn2d_kernel"],
}
CTYPES = {np.dtype(np.float32): "float", np.dtype(np.float64): "double"}
BLOCK = 256
COMPILE_OPTIONS = ("-std=c++17",)

POISON_OUTPUTS = os.environ.get("NANOSTYLE_POISON", "") == "1"
SYNC_AFTER_LAUNCH = os.environ.get("NANOSTYLE_CUDA_SYNC", "") == "1"


def source(family):
    if family not in KERNELS:
        raise ValueError(f"unknown kernel family {family!r}; known: {sorted(KERNELS)}")
    with open(os.path.join(KERNEL_DIR, "common.cuh")) as handle:
        common = handle.read()
    with open(os.path.join(KERNEL_DIR, f"{family}.cu")) as handle:
        return common + "\n" + handle.read()


def name_expressions(family):
    return [f"{name}<{ctype}>" for name in KERNELS[family] for ctype in ("float", "double")]


@functools.lru_cache(maxsize=None)
def get_module(family):
    import cupy
    return cupy.RawModule(code=source(family), options=COMPILE_OPTIONS,
                          name_expressions=name_expressions(family))


def get_kernel(family, name, dtype):
    ctype = CTYPES.get(np.dtype(dtype))
    if ctype is None:
        raise ValueError(f"{family}.{name}: unsupported dtype {dtype}; use float32 or float64")
    return get_module(family).get_function(f"{name}<{ctype}>")


def compile_with_nvrtc(family, arch):
    """Compile every kernel of `family` for `arch` (e.g. 'sm_80') with NVRTC, without a GPU.
    Returns (ptx, {name_expression: lowered_name}); raises RuntimeError with the log."""
    from cupy_backends.cuda.libs import nvrtc
    program = nvrtc.createProgram(source(family), f"{family}.cu", [], [])
    try:
        expressions = name_expressions(family)
        for expression in expressions:
            nvrtc.addNameExpression(program, expression)
        options = [f"--gpu-architecture={arch.replace('sm_', 'compute_')}", *COMPILE_OPTIONS]
        try:
            nvrtc.compileProgram(program, options)
        except Exception as error:
            raise RuntimeError(f"NVRTC failed on {family}.cu for {arch}: {error}\n"
                               f"{nvrtc.getProgramLog(program)}") from None
        lowered = {e: nvrtc.getLoweredName(program, e) for e in expressions}
        return nvrtc.getPTX(program), lowered
    finally:
        nvrtc.destroyProgram(program)


# ---- launch helpers --------------------------------------------------------------------------

def scalar_type(dtype):
    """The NumPy scalar type that matches a kernel's T (float32 -> np.float32)."""
    return np.float32 if np.dtype(dtype) == np.float32 else np.float64


def check_contiguous(op, name, array):
    if not array.flags.c_contiguous:
        raise ValueError(f"{op}: {name} must be C-contiguous for the CUDA kernel, got strides {array.strides}")


def empty(shape, dtype):
    import cupy
    if POISON_OUTPUTS:
        return cupy.full(shape, np.nan, dtype=dtype)
    return cupy.empty(shape, dtype=dtype)


def grid_for(n, block=BLOCK):
    return (int(max(1, min((n + block - 1) // block, 65535 * 8))),)


def launch(family, name, dtype, n, args, block=BLOCK, shared_mem=0, grid=None):
    kernel = get_kernel(family, name, dtype)
    kernel(grid or grid_for(n, block), (block,), args, shared_mem=shared_mem)
    if SYNC_AFTER_LAUNCH:
        import cupy
        cupy.cuda.runtime.deviceSynchronize()


def device_array(array):
    """Contiguous CuPy copy-or-view of `array` (kernels take raw pointers)."""
    import cupy
    return cupy.ascontiguousarray(array)
