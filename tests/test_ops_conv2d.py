"""conv2d, conv_transpose2d, conv2d_resample: forward against direct loops, gradients of first
and second order, argument errors."""
import importlib

import numpy as np
import pytest

import nanostyle as ns
from nanostyle import blas
from nanostyle.ops import conv2d, conv_transpose2d, conv2d_resample, setup_filter
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


@pytest.fixture(params=["shifted", "im2col"])
def conv_path(request, monkeypatch):
    """Run a test through the shifted-window GEMMs (stride 1 'same' and phase-split strided,
    where they apply and a direct BLAS is found) and again with im2col forced everywhere."""
    module = importlib.import_module("nanostyle.ops.conv2d")
    if request.param == "im2col":
        monkeypatch.setattr(module, "_shifted_ok", lambda *args: False)
        monkeypatch.setattr(module, "_strided_ok", lambda *args: False)
    elif not blas.available(np.float64):
        pytest.skip("no direct BLAS found (blas.available() is False): only the im2col path runs")
    else:                                             # the windows even for the tests' tiny images
        monkeypatch.setattr(module, "WINDOW_MIN_PIXELS", dict.fromkeys(module.WINDOW_MIN_PIXELS, 0))
        # and their GEMMs in several column blocks, the last one short (the images' 96-200
        # output positions would otherwise fit in one)
        monkeypatch.setattr(module, "WINDOW_COLUMNS", 7)
    return request.param


@pytest.mark.parametrize("k, padding, stride, hw", [
    (3, 1, 1, (5, 7)), (3, 0, 2, (6, 5)), (1, 0, 1, (4, 4)), (3, 1, 2, (5, 5)), (2, 1, 1, (1, 1)),
    (3, 0, 1, (6, 5)), (3, 2, 1, (4, 3)), (5, 2, 1, (6, 7)), (3, 1, 1, (1, 2)), (4, 1, 3, (10, 11)), (2, 0, 2, (5, 4)),
])
def test_conv2d_forward_and_gradients(k, padding, stride, hw, conv_path):
    rng = np.random.default_rng(k * 10 + padding + stride)
    x, w = randn(rng, 2, 3, *hw), randn(rng, 4, 3, k, k)
    y = conv2d(ns.Tensor(x), ns.Tensor(w), padding=padding, stride=stride).data
    np.testing.assert_allclose(y, reference_conv2d(x, w, (padding,) * 2, (stride,) * 2), atol=1e-12)
    check_both_orders(lambda x, w: conv2d(x, w, padding=padding, stride=stride), [x, w])


@pytest.mark.parametrize("channels, out_channels", [(1, 4), (4, 1), (3, 5)])
def test_1x1_conv2d_forward_and_gradients(channels, out_channels, conv_path):
    """1x1 convolutions, also with a single input channel (fromRGB) or output channel (toRGB)."""
    rng = np.random.default_rng(channels * 10 + out_channels)
    x, w = randn(rng, 3, channels, 5, 4), randn(rng, out_channels, channels, 1, 1)
    y = conv2d(ns.Tensor(x), ns.Tensor(w)).data
    np.testing.assert_allclose(y, reference_conv2d(x, w, (0, 0), (1, 1)), atol=1e-12)
    check_both_orders(lambda x, w: conv2d(x, w), [x, w])


def test_conv_transpose2d_is_the_adjoint_of_conv2d_and_differentiable(conv_path):
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
def test_conv2d_resample_matches_slow_composition_and_gradients(k, up, down, conv_path):
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

