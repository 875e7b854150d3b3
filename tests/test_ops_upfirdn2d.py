"""upfirdn2d: the reference against a direct definition, the fast CPU path against the
reference, first/second-order gradients, errors."""
import numpy as np
import pytest

import nanostyle as ns
from nanostyle.ops import setup_filter, upfirdn2d, upsample2d, downsample2d, filter2d
from nanostyle.ops import _upfirdn2d_cpu
from nanostyle.ops.upfirdn2d import IMPLEMENTATIONS
from helpers import check_both_orders, randn


def reference_upfirdn2d(x, f, up, down, pad, flip_filter, gain):
    """Literal definition: zero insertion, padding/cropping, convolution loop, decimation."""
    N, C, H, W = x.shape
    x0, x1, y0, y1 = pad
    f = np.ones((1, 1)) if f is None else (np.outer(f, f) if f.ndim == 1 else f)
    f = f * gain
    u = np.zeros((N, C, H * up, W * up))
    u[:, :, ::up, ::up] = x
    big = np.zeros((N, C, H * up + abs(y0) + abs(y1) + 2, W * up + abs(x0) + abs(x1) + 2))
    # place u at offset (y0, x0) in an oversized canvas, then cut the padded window
    oy, ox = abs(y0) + 1, abs(x0) + 1
    big[:, :, oy:oy + H * up, ox:ox + W * up] = u
    padded = big[:, :, oy - y0:oy + H * up + y1, ox - x0:ox + W * up + x1]
    fh, fw = f.shape
    kernel = f if flip_filter else f[::-1, ::-1]
    Ho, Wo = padded.shape[2] - fh + 1, padded.shape[3] - fw + 1
    out = np.zeros((N, C, Ho, Wo))
    for i in range(Ho):
        for j in range(Wo):
            out[:, :, i, j] = (padded[:, :, i:i + fh, j:j + fw] * kernel).sum(axis=(2, 3))
    return out[:, :, ::down, ::down]


CASES = [
    dict(up=1, down=1, pad=(1, 1, 1, 1), flip=False, f=[1, 3, 3, 1]),
    dict(up=2, down=1, pad=(2, 1, 2, 1), flip=False, f=[1, 3, 3, 1]),
    dict(up=1, down=2, pad=(1, 1, 1, 1), flip=True, f=[1, 3, 3, 1]),
    dict(up=2, down=2, pad=(-1, 2, 0, 1), flip=False, f=[1, 2, 4]),
    dict(up=1, down=1, pad=(0, 0, 0, 0), flip=False, f=None),
    dict(up=1, down=2, pad=(0, -1, 1, 0), flip=False, f="2d"),
    dict(up=2, down=1, pad=(1, 2, 2, 1), flip=True, f="1d"),
]


def _filter(spec, rng):
    if spec is None:
        return None
    if spec == "2d":
        return rng.uniform(0.1, 1.0, (3, 2))
    if spec == "1d":
        return setup_filter(rng.uniform(0.1, 1.0, 9), separable=True, dtype=np.float64)
    return setup_filter(spec, dtype=np.float64)


@pytest.mark.parametrize("case", CASES)
def test_forward_matches_definition_and_gradients(case, impl):
    rng = np.random.default_rng(len(str(case)))
    f = _filter(case["f"], rng)
    x = randn(rng, 2, 3, 5, 6)
    fn = lambda x: upfirdn2d(x, f, up=case["up"], down=case["down"], padding=case["pad"],
                             flip_filter=case["flip"], gain=1.7)
    y = fn(ns.Tensor(x)).data
    ref = reference_upfirdn2d(x, None if f is None else np.asarray(f, np.float64), case["up"],
                              case["down"], case["pad"], case["flip"], 1.7)
    np.testing.assert_allclose(y, ref, rtol=1e-12, atol=1e-12)
    check_both_orders(fn, [x])


def test_setup_filter_and_resampling_helpers_keep_levels():
    f = setup_filter([1, 3, 3, 1])
    assert f.shape == (4, 4) and f.dtype == np.float32 and abs(f.sum() - 1) < 1e-6
    rng = np.random.default_rng(3)
    x = ns.Tensor(np.full((1, 1, 8, 8), 0.5) + 0 * randn(rng, 1, 1, 8, 8))
    f64 = setup_filter([1, 3, 3, 1], dtype=np.float64)
    up = upsample2d(x, f64)
    down = downsample2d(x, f64)
    same = filter2d(x, f64)
    assert up.shape == (1, 1, 16, 16) and down.shape == (1, 1, 4, 4) and same.shape == (1, 1, 8, 8)
    # a constant image stays constant away from the borders
    np.testing.assert_allclose(up.data[0, 0, 4:-4, 4:-4], 0.5, rtol=1e-12)
    np.testing.assert_allclose(down.data[0, 0, 1:-1, 1:-1], 0.5, rtol=1e-12)


def test_float32_stays_float32():
    x = ns.Tensor(np.random.default_rng(0).standard_normal((1, 2, 4, 4)).astype(np.float32))
    assert upfirdn2d(x, setup_filter([1, 3, 3, 1]), up=2, padding=(2, 1, 2, 1)).dtype == np.float32


@pytest.mark.parametrize("bad, match", [
    (lambda: upfirdn2d(ns.Tensor(np.zeros((2, 3, 4))), None), "4-D"),
    (lambda: upfirdn2d(ns.Tensor(np.zeros((1, 1, 4, 4), np.int32)), None), "float"),
    (lambda: upfirdn2d(ns.Tensor(np.zeros((1, 1, 4, 4), np.float16)), None), "float"),
    (lambda: upfirdn2d(ns.Tensor(np.zeros((1, 1, 2, 2))), np.ones((4, 4)), padding=-1), "empty"),
    (lambda: upfirdn2d(ns.Tensor(np.zeros((1, 1, 4, 4))), None, up=0), "up"),
])
def test_bad_arguments(bad, match):
    with pytest.raises(ValueError, match=match):
        bad()


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("band_max_width", [0, 5, 80])
def test_fast_path_matches_the_reference(case, band_max_width):
    """The fast path with no bands (the per-tap 1-D passes), with the row pass banded only (the
    images are 6 wide and 5 tall) and with both banded, against the reference."""
    rng = np.random.default_rng(len(str(case)) + band_max_width)
    f = _filter(case["f"], rng)
    x = randn(rng, 2, 3, 5, 6)
    args = (f, case["up"], case["down"], case["pad"], case["flip"], 1.7)
    np.testing.assert_allclose(_upfirdn2d_cpu.upfirdn2d(x, *args, band_max_width=band_max_width),
                               IMPLEMENTATIONS["ref"](x, *args), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("shape", [(1, 2, 90, 6), (1, 2, 6, 90)])
def test_tall_or_wide_images_mix_the_banded_and_direct_passes(shape):
    rng = np.random.default_rng(11)
    f = setup_filter([1, 3, 3, 1], dtype=np.float64)
    x = randn(rng, *shape)
    for up, down, pad in ((2, 1, (2, 1, 2, 1)), (1, 2, (1, 1, 1, 1))):
        y = upfirdn2d(ns.Tensor(x), f, up=up, down=down, padding=pad).data
        np.testing.assert_allclose(y, reference_upfirdn2d(x, f, up, down, pad, False, 1.0), rtol=1e-12, atol=1e-12)


def test_filters_that_differ_in_values_gain_flip_or_dtype_each_get_their_own_passes():
    """Filters of one shape that differ only in their values, and calls that differ only in gain,
    flip or dtype, against the definition, twice over (nothing may carry from one call to the next)."""
    rng = np.random.default_rng(23)
    x = randn(rng, 2, 3, 7, 8)
    f1 = setup_filter(rng.uniform(0.1, 1.0, 4), separable=True, dtype=np.float64)
    f2 = setup_filter(rng.uniform(0.1, 1.0, 4), separable=True, dtype=np.float64)
    calls = [(f1, 1.0, False), (f2, 1.0, False), (f1, 2.5, False), (f1, 1.0, True), (f2, 2.5, True)]
    for _ in range(2):
        for f, gain, flip in calls:
            y = upfirdn2d(ns.Tensor(x), f, up=2, down=1, padding=(2, 1, 1, 2), flip_filter=flip, gain=gain).data
            ref = reference_upfirdn2d(x, f, 2, 1, (2, 1, 1, 2), flip, gain)
            np.testing.assert_allclose(y, ref, rtol=1e-12, atol=1e-12)
    y32 = upfirdn2d(ns.Tensor(x.astype(np.float32)), f1, up=2, padding=(2, 1, 1, 2)).data
    assert y32.dtype == np.float32
    np.testing.assert_allclose(y32, reference_upfirdn2d(x, f1, 2, 1, (2, 1, 1, 2), False, 1.0), rtol=1e-5, atol=1e-5)
