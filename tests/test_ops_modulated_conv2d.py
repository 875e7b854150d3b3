"""modulated_conv2d: forward against the per-sample definition (modulate, demodulate, convolve),
first/second-order gradients for every variant, argument errors."""
import numpy as np
import pytest

import nanostyle as ns
from nanostyle.ops import modulated_conv2d, setup_filter
from helpers import check_both_orders, randn
from test_ops_conv2d import reference_conv2d_resample


def reference_modulated_conv2d(x, weight, styles, noise, up, down, padding, f, demodulate):
    out = []
    for n in range(x.shape[0]):
        w = weight * styles[n][None, :, None, None]                   # modulation
        if demodulate:
            w = w / np.sqrt((w ** 2).sum(axis=(1, 2, 3)) + 1e-8)[:, None, None, None]
        out.append(reference_conv2d_resample(x[n:n + 1], w, f, up, down, padding)[0])
    out = np.stack(out)
    return out if noise is None else out + noise


@pytest.mark.parametrize("k, up, down, demodulate, with_noise, batch", [
    (3, 1, 1, True, True, 3), (3, 2, 1, True, False, 1), (1, 1, 1, False, False, 2),
    (3, 1, 2, True, False, 2), (3, 2, 1, False, True, 2), (1, 2, 1, True, False, 1),
])
def test_forward_matches_definition_and_gradients(k, up, down, demodulate, with_noise, batch):
    rng = np.random.default_rng(k + 3 * up + 5 * down + 7 * demodulate + 11 * with_noise + batch)
    f = setup_filter([1, 3, 3, 1], dtype=np.float64)
    x, w, s = randn(rng, batch, 3, 6, 6), randn(rng, 4, 3, k, k), randn(rng, batch, 3)
    size = 6 * up // down
    noise = randn(rng, batch, 1, size, size) if with_noise else None
    fn = lambda x, w, s, n=None: modulated_conv2d(x, w, s, noise=n, up=up, down=down, padding=k // 2,
                                                  resample_filter=f, demodulate=demodulate)
    inputs = [x, w, s] + ([noise] if with_noise else [])
    y = fn(*[ns.Tensor(a) for a in inputs]).data
    ref = reference_modulated_conv2d(x, w, s, noise, up, down, k // 2, f, demodulate)
    np.testing.assert_allclose(y, ref, rtol=1e-10, atol=1e-10)
    check_both_orders(fn, inputs)


def test_demodulated_output_has_unit_scale():
    rng = np.random.default_rng(5)
    x = ns.Tensor(randn(rng, 4, 16, 8, 8))
    y = modulated_conv2d(x, ns.Tensor(randn(rng, 16, 16, 3, 3)), ns.Tensor(randn(rng, 4, 16) * 5), padding=1)
    assert 0.5 < float(y.data[:, :, 1:-1, 1:-1].std()) < 2.0


@pytest.mark.parametrize("shapes, match", [
    (((2, 3, 4, 4), (4, 3, 3, 3), (2, 5)), "mismatch"),
    (((2, 3, 4), (4, 3, 3, 3), (2, 3)), "expected"),
    (((2, 3, 4, 4), (4, 2, 3, 3), (2, 3)), "mismatch"),
])
def test_bad_arguments(shapes, match):
    x, w, s = (ns.Tensor(np.ones(sh)) for sh in shapes)
    with pytest.raises(ValueError, match=match):
        modulated_conv2d(x, w, s)
