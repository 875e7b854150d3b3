"""Module and Parameter: named trainable state, buffers, state_dict round trips, device moves.

A Module finds its parameters, buffers and submodules from its attributes (Parameters,
Modules, lists of Modules), in the order they were assigned, so names are stable and readable:
a Generator's state_dict holds "synthesis.blocks.1.conv0.weight" (block k of the synthesis
network works at 4 * 2**k pixels, so this is the first 8x8 convolution), "mapping.layers.0.weight",
and the buffers "mapping.w_avg" and "synthesis.blocks.1.conv0.noise_const". Buffers
(non-trainable state) are registered with `register_buffer`.
"""
import copy

import numpy as np

from . import backend
from .autograd import Tensor


class Parameter(Tensor):
    """A leaf Tensor that requires grad."""

    __slots__ = ()

    def __init__(self, data, name=None):
        super().__init__(data, requires_grad=True, name=name)


class Module:
    """A network part: subclasses assign Parameters, Modules (or lists of them) and buffers as
    attributes in __init__ and compute in `forward`; calling the module calls forward.

    named_parameters() / parameters(): trainable Tensors, dotted names in assignment order;
    state_dict(): {name: NumPy array} of parameters and buffers (host copies);
    load_state_dict(state, strict=True): the reverse, ValueError naming missing, unexpected and
    mis-shaped entries; to("cpu" | "cuda"): moves every array in place.
    """

    def __init__(self):
        object.__setattr__(self, "_buffers", {})

    def __call__(self, *args, **kwargs):
        return self.forward(*args, **kwargs)

    def forward(self, *args, **kwargs):
        raise NotImplementedError

    def register_buffer(self, name, value):
        if not isinstance(value, Tensor):
            value = Tensor(value)
        self._buffers[name] = value
        object.__setattr__(self, name, value)

    def __setattr__(self, name, value):
        if "_buffers" in self.__dict__ and name in self._buffers:
            if not isinstance(value, Tensor):
                value = Tensor(value)
            self._buffers[name] = value
        object.__setattr__(self, name, value)

    # ---- traversal ------------------------------------------------------------------------
    def named_children(self):
        for name, value in self.__dict__.items():
            if isinstance(value, Module):
                yield name, value
            elif isinstance(value, (list, tuple)) and value and all(isinstance(v, Module) for v in value):
                for i, v in enumerate(value):
                    yield f"{name}.{i}", v

    def named_parameters(self, prefix=""):
        out = []
        for name, value in self.__dict__.items():
            if isinstance(value, Parameter):
                out.append((prefix + name, value))
        for name, child in self.named_children():
            out.extend(child.named_parameters(prefix + name + "."))
        return out

    def parameters(self):
        return [p for _, p in self.named_parameters()]

    def named_buffers(self, prefix=""):
        out = [(prefix + name, value) for name, value in self._buffers.items()]
        for name, child in self.named_children():
            out.extend(child.named_buffers(prefix + name + "."))
        return out

    def num_parameters(self):
        return int(sum(p.size for p in self.parameters()))

    # ---- state ------------------------------------------------------------------------------
    def state_dict(self):
        """Parameters and buffers as host (NumPy) copies, keyed by dotted name."""
        state = {name: backend.to_numpy(p.data).copy() for name, p in self.named_parameters()}
        state.update({name: backend.to_numpy(b.data).copy() for name, b in self.named_buffers()})
        return state

    def load_state_dict(self, state, strict=True):
        own = dict(self.named_parameters())
        own.update(self.named_buffers())
        missing = [k for k in own if k not in state]
        unexpected = [k for k in state if k not in own]
        mismatched = [f"{k}: checkpoint {tuple(np.shape(state[k]))} vs model {tuple(own[k].shape)}"
                      for k in own if k in state and tuple(np.shape(state[k])) != tuple(own[k].shape)]
        if mismatched or (strict and (missing or unexpected)):
            problems = []
            if missing:
                problems.append(f"missing {len(missing)}: {', '.join(missing[:8])}")
            if unexpected:
                problems.append(f"unexpected {len(unexpected)}: {', '.join(unexpected[:8])}")
            if mismatched:
                problems.append(f"shape mismatch {len(mismatched)}: {'; '.join(mismatched[:8])}")
            raise ValueError("load_state_dict: the state does not fit this model (" + " | ".join(problems)
                             + "); was it saved with another network configuration?")
        for name, tensor in own.items():
            if name in state:
                xp = tensor.xp
                tensor.data = xp.asarray(state[name], dtype=tensor.dtype).copy()
        return self

    def to(self, device):
        """Move parameters and buffers to 'cpu' or 'cuda' (in place; returns self)."""
        backend.xp_for_device(device)  # validates the name and the GPU's presence
        for _, t in self.named_parameters() + self.named_buffers():
            if device == "cpu":
                t.data = backend.to_numpy(t.data)
            else:
                t.data = backend.to_device(t.data, device)
        return self

    def requires_grad_(self, flag=True):
        for p in self.parameters():
            p.requires_grad = bool(flag)
        return self

    def zero_grad(self):
        for p in self.parameters():
            p.grad = None


def copy_module(module):
    """A deep copy (for G_ema): same structure, independent arrays, no gradients."""
    clone = copy.deepcopy(module)
    for p in clone.parameters():
        p.grad = None
    return clone
