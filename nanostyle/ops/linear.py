"""linear: StyleGAN2's equalised-learning-rate fully connected layer (Karras et al. 2018, sec. 4.1).

  y = act(x @ (weight * lr_mul / sqrt(in_features)).T + bias * lr_mul)

Weights are stored unit-variance (divided by lr_mul at init, see networks.py) and scaled at run
time, so Adam sees every layer at the same dynamic range; lr_mul 0.01 slows the mapping network.
The bias and activation go through bias_act (the fused epilogue).
"""
import math

from .. import backend
from ..autograd import Tensor
from .bias_act import bias_act


def linear(x, weight, bias=None, lr_mul=1.0, activation="linear"):
    """x [N, in], weight [out, in], bias [out] or None."""
    for name, t in (("x", x), ("weight", weight)):
        if not isinstance(t, Tensor):
            raise ValueError(f"linear: {name} must be a Tensor, got {type(t).__name__}")
    if x.ndim != 2 or weight.ndim != 2:
        raise ValueError(f"linear: expected x [N, in] and weight [out, in]; got x {tuple(x.shape)}, "
                         f"weight {tuple(weight.shape)}")
    if x.shape[1] != weight.shape[1]:
        raise ValueError(f"linear: x has {x.shape[1]} features but weight expects {weight.shape[1]} "
                         f"(x {tuple(x.shape)}, weight {tuple(weight.shape)})")
    if bias is not None and (bias.ndim != 1 or bias.shape[0] != weight.shape[0]):
        raise ValueError(f"linear: bias must be [{weight.shape[0]}], got {tuple(bias.shape)}")
    backend.check_float_dtype("linear", x.data, weight.data, None if bias is None else bias.data)
    weight_gain = lr_mul / math.sqrt(weight.shape[1])
    y = x @ (weight * weight_gain).T
    if bias is not None and lr_mul != 1:
        bias = bias * lr_mul
    if bias is None and activation == "linear":
        return y
    return bias_act(y, bias, dim=1, act=activation)
