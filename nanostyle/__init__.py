"""nanostyle: a minimal, framework-free StyleGAN2 (NumPy on the CPU, CuPy CUDA kernels on a GPU).

    import nanostyle as ns
    G = ns.load("runs/RUN/latest.npz")             # trained generator (EMA weights)
    images = G.sample(seeds=range(8))              # uint8 [8, 1, R, R]
    ns.save_image_grid(images, "grid.png")
    result = ns.project(G, slice_uint8)            # latent, image and residual of a real slice

Public face: training (`TrainConfig`, `train`), trained models (`load`, `Generator.sample`,
`project`, `evaluate`, `save_image_grid`, `CheckpointError`), the networks (`Generator`,
`Discriminator`, `MappingNetwork`, `SynthesisNetwork`), the autograd (`Tensor`, `grad`,
`no_grad`), the differentiable ops in `ns.ops` and the gradient checks in `ns.gradcheck`.
Importing needs neither a GPU nor CuPy.
"""
import os as _os
import sys as _sys

# Processes that mpiexec started on one machine share its cores: each takes its share for OpenBLAS
# and for the parts of a batch computed on threads (as torchrun sets OMP_NUM_THREADS=1), unless
# these are set already; two processes with a thread per core each would fight over the cores
# (distributed.py). OpenBLAS reads its setting when NumPy loads it (where NumPy came first, the
# setting is too late for it, and the parts of a batch still follow).
_local_ranks = _os.environ.get("MPI_LOCALNRANKS") or _os.environ.get("OMPI_COMM_WORLD_LOCAL_SIZE") or "1"
if _local_ranks.isdigit() and int(_local_ranks) > 1:
    _cores = len(_os.sched_getaffinity(0)) if hasattr(_os, "sched_getaffinity") else _os.cpu_count() or 1
    _share = str(max(1, _cores // int(_local_ranks)))
    _os.environ.setdefault("NANOSTYLE_NUM_THREADS", _share)
    if "numpy" not in _sys.modules:
        _os.environ.setdefault("OPENBLAS_NUM_THREADS", _share)

from . import backend  # noqa: E402
from .autograd import Tensor, Function, grad, no_grad, enable_grad, set_grad_enabled, concat, stack, where, tensor
from . import gradcheck
from . import ops
from .networks import Discriminator, Generator, MappingNetwork, SynthesisNetwork
from .checkpoint import CheckpointError
from .train import TrainConfig, train
from .viz import save_image_grid
from .api import evaluate, load
from .projector import Projection, project

__version__ = "0.1.0"
