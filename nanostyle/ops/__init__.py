"""Differentiable ops, one file per kernel family: the NumPy forward/backward and, below it, the
launcher of the CUDA kernel in nanostyle/kernels/<family>.cu. NCHW layout; each op follows the
StyleGAN2-ADA op of the same name."""
from .bias_act import bias_act
from .linear import linear
from .softplus import softplus, sigmoid
from .noise import noise_injection
from .minibatch_std import minibatch_std
from .upfirdn2d import setup_filter, upfirdn2d, upsample2d, downsample2d, filter2d
from .conv2d import conv2d, conv_transpose2d, conv2d_resample
from .modulated_conv2d import modulated_conv2d
