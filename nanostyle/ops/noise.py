"""noise_injection: StyleGAN2's per-pixel noise, x + noise * strength (Karras et al. 2019, sec. 3.2).

noise [N, 1, H, W] is shared by all channels; strength is one learned scalar per layer.
Gradients: dx = g, dnoise = strength * sum_c g, dstrength = sum(g * noise) (the reduction the
CUDA kernel performs). `_noise_forward` / `_noise_strength_grad` are the kernel seams.
"""
from .. import backend
from ..autograd import Function, Tensor


def _noise_forward(x, noise, strength):
    return x + noise * strength.reshape(())


def _noise_strength_grad(g, noise):
    return (g * noise).sum()


class NoiseInjection(Function):
    def forward(self, x, noise, strength):
        return _noise_forward(x, noise, strength)

    def backward(self, g):
        x, noise, strength = self.inputs
        gx = g if self.needs_input_grad[0] else None
        gnoise = gstrength = None
        if self.needs_input_grad[1]:
            gnoise = g.sum(axis=1, keepdims=True) * strength.reshape(())
        if self.needs_input_grad[2]:
            gstrength = (g * noise).sum().reshape(strength.shape)
        return gx, gnoise, gstrength


def noise_injection(x, noise, strength):
    """x [N, C, H, W] + noise [N, 1, H, W] * strength (a scalar Tensor, shape () or (1,))."""
    if not isinstance(strength, Tensor):
        strength = Tensor(backend.get_array_module(x.data).asarray(strength, dtype=x.dtype))
    for name, t in (("x", x), ("noise", noise)):
        if not isinstance(t, Tensor):
            raise ValueError(f"noise_injection: {name} must be a Tensor, got {type(t).__name__}")
    if x.ndim != 4 or noise.ndim != 4 or noise.shape[1] != 1 or noise.shape[0] != x.shape[0] \
            or noise.shape[2:] != x.shape[2:]:
        raise ValueError(f"noise_injection: expected x [N,C,H,W] and noise [N,1,H,W]; got x "
                         f"{tuple(x.shape)}, noise {tuple(noise.shape)}")
    if strength.size != 1:
        raise ValueError(f"noise_injection: strength must be a scalar, got shape {tuple(strength.shape)}")
    backend.check_float_dtype("noise_injection", x.data, noise.data, strength.data)
    return NoiseInjection.apply(x, noise, strength)
