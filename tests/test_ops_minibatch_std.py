"""minibatch_std: values against a loop over the groups, first/second-order gradients, errors."""
import numpy as np
import pytest

import nanostyle as ns
from nanostyle.ops import minibatch_std
from helpers import check_both_orders, randn


def reference_minibatch_std(x, group_size, num_channels):
    N, C, H, W = x.shape
    G = min(group_size, N)
    n = N // G
    c = C // num_channels
    out = np.zeros((N, num_channels, H, W))
    for slot in range(n):
        members = [g * n + slot for g in range(G)]
        for f in range(num_channels):
            block = x[members][:, f * c:(f + 1) * c]                 # [G, c, H, W]
            std = np.sqrt(((block - block.mean(axis=0)) ** 2).mean(axis=0) + 1e-8)
            for m in members:
                out[m, f] = std.mean()
    return np.concatenate([x, out], axis=1)


@pytest.mark.parametrize("batch, group, channels", [(4, 2, 1), (8, 4, 1), (8, 4, 2), (4, 4, 2), (2, 4, 1)])
def test_minibatch_std(batch, group, channels):
    rng = np.random.default_rng(batch * 100 + group * 10 + channels)
    x = randn(rng, batch, 4, 3, 3)
    fn = lambda x: minibatch_std(x, group_size=group, num_channels=channels)
    np.testing.assert_allclose(fn(ns.Tensor(x)).data, reference_minibatch_std(x, group, channels), rtol=1e-12)
    check_both_orders(fn, [x])


@pytest.mark.parametrize("bad, match", [
    (lambda: minibatch_std(ns.Tensor(np.ones((6, 4, 2, 2))), group_size=4), "divisible"),
    (lambda: minibatch_std(ns.Tensor(np.ones((4, 3, 2, 2))), num_channels=2), "channels"),
    (lambda: minibatch_std(ns.Tensor(np.ones((4, 2, 2)))), r"\[N, C, H, W\]"),
])
def test_bad_arguments(bad, match):
    with pytest.raises(ValueError, match=match):
        bad()
