"""conv2d, conv_transpose2d, conv2d_resample: the reference against direct loops, the fast CPU
passes against the reference, gradients of first and second order, argument errors."""
import numpy as np
import pytest

import nanostyle as ns
from nanostyle import blas
from nanostyle.ops import conv2d, conv_transpose2d, conv2d_resample, setup_filter
from nanostyle.ops import _conv2d_cpu
from nanostyle.ops.conv2d import IMPLEMENTATIONS
from helpers import check_both_orders, randn
from test_ops_upfirdn2d import reference_upfirdn2d


def reference_conv2d(x, w, padding, stride):
    N, C, H, W = x.shape
    O, _, kh, kw = w.shape
    py, px = padding
    sy, sx = stride
    xp = np.pad(x, ((0, 0), (0, 0), (py, py), (px, px)))
    Ho, Wo = (H + 2 * py - kh) // sy + 1, (W + 2 * px - kw) // sx + 1
    out = np.zeros((N, O, Ho, Wo))
    for n in range(N):
        for o in range(O):
            for i in range(Ho):
                for j in range(Wo):
                    for c in range(C):
                        for ky in range(kh):
                            for kx in range(kw):
                                out[n, o, i, j] += xp[n, c, i * sy + ky, j * sx + kx] * w[o, c, ky, kx]
    return out


CASES = [   # (k, padding, stride, hw)
    (3, 1, 1, (5, 7)), (3, 0, 2, (6, 5)), (1, 0, 1, (4, 4)), (3, 1, 2, (5, 5)), (2, 1, 1, (1, 1)),
    (3, 0, 1, (6, 5)), (3, 2, 1, (4, 3)), (5, 2, 1, (6, 7)), (3, 1, 1, (1, 2)), (4, 1, 3, (10, 11)), (2, 0, 2, (5, 4)),
]


@pytest.mark.parametrize("k, padding, stride, hw", CASES)
def test_conv2d_forward_and_gradients(k, padding, stride, hw, impl):
    rng = np.random.default_rng(k * 10 + padding + stride)
    x, w = randn(rng, 2, 3, *hw), randn(rng, 4, 3, k, k)
    y = conv2d(ns.Tensor(x), ns.Tensor(w), padding=padding, stride=stride).data
    np.testing.assert_allclose(y, reference_conv2d(x, w, (padding,) * 2, (stride,) * 2), atol=1e-12)
    check_both_orders(lambda x, w: conv2d(x, w, padding=padding, stride=stride), [x, w])


@pytest.mark.parametrize("channels, out_channels", [(1, 4), (4, 1), (3, 5)])
def test_1x1_conv2d_forward_and_gradients(channels, out_channels, impl):
    """1x1 convolutions, also with a single input channel (fromRGB) or output channel (toRGB)."""
    rng = np.random.default_rng(channels * 10 + out_channels)
    x, w = randn(rng, 3, channels, 5, 4), randn(rng, out_channels, channels, 1, 1)
    y = conv2d(ns.Tensor(x), ns.Tensor(w)).data
    np.testing.assert_allclose(y, reference_conv2d(x, w, (0, 0), (1, 1)), atol=1e-12)
    check_both_orders(lambda x, w: conv2d(x, w), [x, w])


def test_conv_transpose2d_is_the_adjoint_of_conv2d_and_differentiable(impl):
    rng = np.random.default_rng(7)
    x, w = randn(rng, 2, 3, 7, 7), randn(rng, 3, 4, 3, 3)  # torch layout [C_in, C_out, kh, kw]
    y = conv_transpose2d(ns.Tensor(x), ns.Tensor(w), stride=2, padding=1)
    assert y.shape == (2, 4, 13, 13)
    probe = randn(rng, *y.shape)
    # <T(x), probe> == <x, conv2d(probe)> with the same weight viewed as a conv weight
    lhs = (y.data * probe).sum()
    rhs = (x * conv2d(ns.Tensor(probe), ns.Tensor(w), padding=1, stride=2).data).sum()
    assert abs(lhs - rhs) < 1e-10 * abs(lhs)
    check_both_orders(lambda x, w: conv_transpose2d(x, w, stride=2, padding=1), [x, w])


def reference_conv2d_resample(x, w, f, up, down, padding):
    """Zero insertion + FIR (gain up^2) on the way up, correlation, FIR + decimation on the way
    down, with the reference's padding rules: the slow literal composition."""
    fh, fw = f.shape
    p = padding
    if up > 1:
        pad = (p + (fw + up - 1) // 2, p + (fw - up) // 2) * 1
        x = reference_upfirdn2d(x, f, up, 1, (pad[0], pad[1], pad[0], pad[1]), False, up * up)
        p = 0
    y = reference_conv2d(x, w, (p, p) if up == 1 and down == 1 else (0, 0), (1, 1)) if down == 1 else None
    if down > 1:
        pad = (p + (fw - down + 1) // 2, p + (fw - down) // 2)
        x = reference_upfirdn2d(x, f, 1, 1, (pad[0], pad[1], pad[0], pad[1]), False, 1)
        y = reference_conv2d(x, w, (0, 0), (1, 1))[:, :, ::down, ::down]
    return y


@pytest.mark.parametrize("k, up, down", [(3, 2, 1), (1, 2, 1), (3, 1, 2), (1, 1, 2), (3, 1, 1)])
def test_conv2d_resample_matches_slow_composition_and_gradients(k, up, down, impl):
    rng = np.random.default_rng(100 + k * 10 + up + down)
    f = setup_filter([1, 3, 3, 1], dtype=np.float64)
    x, w = randn(rng, 2, 3, 6, 6), randn(rng, 4, 3, k, k)
    fn = lambda x, w: conv2d_resample(x, w, f=f, up=up, down=down, padding=k // 2)
    y = fn(ns.Tensor(x), ns.Tensor(w)).data
    np.testing.assert_allclose(y, reference_conv2d_resample(x, w, f, up, down, k // 2), atol=1e-11)
    check_both_orders(fn, [x, w])


def test_float32_in_float32_out():
    rng = np.random.default_rng(1)
    x, w = ns.Tensor(randn(rng, 1, 2, 5, 5, dtype=np.float32)), ns.Tensor(randn(rng, 3, 2, 3, 3, dtype=np.float32))
    assert conv2d(x, w, padding=1).dtype == np.float32


@pytest.mark.parametrize("x_shape, w_shape, dtype, match", [
    ((2, 3, 5), (4, 3, 3, 3), np.float64, "4-D"),
    ((2, 3, 5, 5), (4, 2, 3, 3), np.float64, "channels"),
    ((2, 3, 5, 5), (4, 3, 3, 3), np.int64, "dtype"),
    ((2, 3, 2, 2), (4, 3, 5, 5), np.float64, "larger"),
])
def test_bad_arguments_name_the_op_and_shapes(x_shape, w_shape, dtype, match):
    with pytest.raises(ValueError, match=match) as info:
        conv2d(ns.Tensor(np.ones(x_shape, dtype)), ns.Tensor(np.ones(w_shape, np.float64)))
    assert "conv2d" in str(info.value)



@pytest.mark.parametrize("channels, out_channels, k, padding, stride, hw",
                         [(3, 4) + case for case in CASES] + [(1, 4, 1, 0, 1, (5, 4)), (4, 1, 1, 0, 1, (5, 4))])
def test_fast_passes_match_the_reference(channels, out_channels, k, padding, stride, hw):
    """Each of the three fast CPU passes against the reference's (the windows where they apply)."""
    rng = np.random.default_rng(k * 100 + padding * 10 + stride)
    x, w = randn(rng, 2, channels, *hw), randn(rng, out_channels, channels, k, k)
    stride, padding = (stride, stride), (padding, padding)
    ref, fast = IMPLEMENTATIONS["ref"], _conv2d_cpu
    y = ref.conv2d(x, w, stride, padding)
    g = randn(rng, *y.shape)
    pairs = [(fast.conv2d(x, w, stride, padding), y),
             (fast.conv_transpose2d(g, w, x.shape, stride, padding), ref.conv_transpose2d(g, w, x.shape, stride, padding)),
             (fast.conv2d_weight_grad(x, g, w.shape, stride, padding), ref.conv2d_weight_grad(x, g, w.shape, stride, padding))]
    for got, expected in pairs:
        assert got.shape == expected.shape
        np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12)
    windows = stride == (1, 1) and k % 2 == 1 and padding[0] == (k - 1) // 2
    assert fast._windows_apply(x, w.shape, stride, padding) == (windows and blas.available(np.float64))


def test_window_grid_holds_each_pixel_once_and_zeros_elsewhere():
    x = np.random.default_rng(4).standard_normal((5, 3, 6, 7))
    grid = _conv2d_cpu._Grid(5, 6, 7, 3)
    packed = grid.pack(x)
    assert packed.shape == (3, grid.size) and np.count_nonzero(packed) == x.size
    assert np.array_equal(grid.unpack(grid.computed(packed)), x)
