"""minibatch_std: the discriminator's minibatch standard deviation feature (Karras et al. 2018,
sec. 3; StyleGAN2-ADA's MinibatchStdLayer).

Samples are split into groups of G = min(group_size, N) (sample i sits at slot i % (N/G) of group
i // (N/G)); for each slot, the standard deviation over the group of every feature, averaged over
each of `num_channels` channel blocks and all pixels, is appended as `num_channels` constant
feature maps. A composition of differentiable Tensor ops, so R1's double backward goes through it.
"""
from .. import backend
from ..autograd import Tensor, concat


def minibatch_std(x, group_size=4, num_channels=1):
    """x [N, C, H, W] -> [N, C + num_channels, H, W]."""
    if not isinstance(x, Tensor):
        raise ValueError(f"minibatch_std: x must be a Tensor, got {type(x).__name__}")
    if x.ndim != 4:
        raise ValueError(f"minibatch_std: x must be [N, C, H, W], got {tuple(x.shape)}")
    backend.check_float_dtype("minibatch_std", x.data)
    N, C, H, W = x.shape
    G = min(int(group_size), N) if group_size else N
    F = int(num_channels)
    if G < 1 or N % G:
        raise ValueError(f"minibatch_std: batch {N} is not divisible by the group size {G}; "
                         f"use a batch that is a multiple of {G}")
    if F < 1 or C % F:
        raise ValueError(f"minibatch_std: {C} channels cannot be split into num_channels={F} blocks")
    c = C // F
    y = x.reshape(G, N // G, F, c, H, W)
    y = y - y.mean(axis=0)                       # deviation from the group mean
    y = (y.square().mean(axis=0) + 1e-8).sqrt()  # [N/G, F, c, H, W] standard deviation
    y = y.mean(axis=(2, 3, 4))                   # [N/G, F]
    y = y.reshape(1, N // G, F, 1, 1).broadcast_to((G, N // G, F, H, W)).reshape(N, F, H, W)
    return concat([x, y], axis=1)
