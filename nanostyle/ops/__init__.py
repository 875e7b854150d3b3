"""Differentiable ops, one file per kernel family: the public op, its Functions and its plain
reference, the launcher of the CUDA kernel in nanostyle/kernels/<family>.cu, and (where one
pays) a fast CPU path in _<family>_cpu.py. NCHW layout; each op follows the StyleGAN2-ADA op of
the same name. `use_impl("ref")` / `set_impl` / NANOSTYLE_IMPL=ref run the references (_impl.py)."""
from ._impl import get_impl, set_impl, use_impl
from .bias_act import bias_act
from .linear import linear
from .softplus import softplus, sigmoid
from .noise import noise_injection
from .minibatch_std import minibatch_std
from .upfirdn2d import setup_filter, upfirdn2d, upsample2d, downsample2d, filter2d
from .conv2d import conv2d, conv_transpose2d, conv2d_resample
from .modulated_conv2d import modulated_conv2d
