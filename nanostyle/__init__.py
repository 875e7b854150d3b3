"""nanostyle: a minimal, framework-free StyleGAN2 (NumPy on the CPU, CuPy CUDA kernels on a GPU).

Public face: `ns.Tensor`, `ns.grad`, `ns.no_grad`, the differentiable ops in `ns.ops`, the
gradient checks in `ns.gradcheck`, and the networks and training loop built on them.
"""
from . import backend
from .autograd import Tensor, Function, grad, no_grad, enable_grad, set_grad_enabled, concat, stack, where, tensor
from . import gradcheck
from . import ops

__version__ = "0.1.0"
