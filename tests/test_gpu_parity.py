"""GPU parity: every op on CuPy (hand-written kernels) against the reference, which the CPU runs
under ns.ops.use_impl("ref"): forward, backward and double backward. Relative error
||gpu - cpu|| / ||cpu|| below 1e-10 in float64 and 1e-5 in float32. Kernel outputs are allocated
filled with NaN, so an unwritten element fails. Odd sizes (not multiples of the block size), 1x1
images and batch 1 included. Run with `pytest -m gpu`; skipped, with the reason, where no GPU
answers."""
import numpy as np
import pytest

import nanostyle as ns
from nanostyle import backend

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not backend.gpu_available(), reason=backend.gpu_unavailable_reason() or "no GPU")]

TOLERANCE = {np.float64: 1e-10, np.float32: 1e-5}


@pytest.fixture(autouse=True)
def poison_outputs(monkeypatch):
    from nanostyle import cuda
    monkeypatch.setattr(cuda, "POISON_OUTPUTS", True)
    monkeypatch.setattr(cuda, "SYNC_AFTER_LAUNCH", True)


def _relative_error(gpu, cpu):
    gpu = backend.to_numpy(gpu).astype(np.float64)
    cpu = np.asarray(cpu, dtype=np.float64)
    assert np.all(np.isfinite(gpu)), "unwritten (NaN) or non-finite elements in the GPU result"
    return np.linalg.norm(gpu - cpu) / max(np.linalg.norm(cpu), 1e-30)


def _run(fn, arrays, to_device):
    """outputs, first-order grads and second-order grads (along fixed random directions)."""
    rng = np.random.default_rng(123)
    tensors = [ns.Tensor(to_device(a), requires_grad=True) for a in arrays]
    out = fn(*tensors)
    gy = ns.Tensor(to_device(rng.standard_normal(out.shape).astype(arrays[0].dtype)))
    grads = ns.grad(out, tensors, gy, create_graph=True, allow_unused=False)
    directions = [ns.Tensor(to_device(rng.standard_normal(a.shape).astype(a.dtype))) for a in arrays]
    inner = sum(((g * d).sum() for g, d in zip(grads, directions)), ns.Tensor(to_device(np.zeros((), arrays[0].dtype))))
    second = ns.grad(inner, tensors, allow_unused=False)
    return [out] + list(grads) + list(second)


def assert_parity(fn, arrays):
    """GPU against CPU in the same precision. In float32 a derivative may differ by more than 1e-5
    where the op is ill-conditioned (minibatch_std's second derivative divides by a small
    std): there the bound is 3x the CPU's own float32 error against float64, so the GPU must be
    about as accurate as the CPU, and a wrong kernel (an error near 1) still fails."""
    import cupy
    with ns.ops.use_impl("ref"):
        cpu = _run(fn, arrays, lambda a: a)
    gpu = _run(fn, arrays, cupy.asarray)
    tolerance = TOLERANCE[arrays[0].dtype.type]
    exact = None
    for i, (g, c) in enumerate(zip(gpu, cpu)):
        error = _relative_error(g.data, c.data)
        bound = tolerance
        if error >= tolerance and arrays[0].dtype == np.float32 and i > 0:   # derivatives only
            with ns.ops.use_impl("ref"):
                exact = exact or _run(fn, [a.astype(np.float64) for a in arrays], lambda a: a)
            bound = max(tolerance, 3 * _relative_error(c.data, exact[i].data))
        assert error < bound, f"result {i}: relative error {error:.3g} (tolerance {bound:.3g})"


DTYPES = [np.float64, np.float32]


def _rand(rng, dtype, *shape):
    return rng.standard_normal(shape).astype(dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("act", ["linear", "relu", "lrelu", "tanh", "sigmoid", "elu", "selu", "softplus", "swish"])
def test_bias_act(dtype, act):
    rng = np.random.default_rng(0)
    x, b = _rand(rng, dtype, 3, 5, 7, 9), _rand(rng, dtype, 5)
    assert_parity(lambda x, b: ns.ops.bias_act(x, b, act=act, clamp=2.5), [x, b])
    assert_parity(lambda x: ns.ops.bias_act(x, act=act), [x[:1, :, :1, :1]])


@pytest.mark.parametrize("dtype", DTYPES)
def test_linear_softplus_noise(dtype):
    rng = np.random.default_rng(1)
    assert_parity(lambda x, w, b: ns.ops.linear(x, w, b, lr_mul=0.01, activation="lrelu"),
                  [_rand(rng, dtype, 3, 7), _rand(rng, dtype, 5, 7) * 100, _rand(rng, dtype, 5)])
    assert_parity(lambda x: ns.ops.softplus(x * 20), [_rand(rng, dtype, 1001)])
    assert_parity(lambda x, n, s: ns.ops.noise_injection(x, n, s),
                  [_rand(rng, dtype, 2, 3, 5, 7), _rand(rng, dtype, 2, 1, 5, 7), _rand(rng, dtype, 1)])
    assert_parity(lambda x: ns.ops.minibatch_std(x, group_size=2), [_rand(rng, dtype, 4, 3, 5, 5)])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("up, down, padding", [(1, 1, 1), (2, 1, (2, 1, 2, 1)), (1, 2, 1), (2, 2, (-1, 2, 0, 1))])
def test_upfirdn2d(dtype, up, down, padding):
    rng = np.random.default_rng(2)
    f = ns.ops.setup_filter([1, 3, 3, 1], dtype=dtype)
    assert_parity(lambda x: ns.ops.upfirdn2d(x, f, up=up, down=down, padding=padding), [_rand(rng, dtype, 2, 3, 7, 9)])
    f2 = rng.uniform(0.1, 1, (3, 2)).astype(dtype)
    assert_parity(lambda x: ns.ops.upfirdn2d(x, f2, up=up, down=down, padding=padding, flip_filter=True),
                  [_rand(rng, dtype, 1, 2, 5, 6)])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("k, padding, stride, hw", [(3, 1, 1, (7, 9)), (3, 0, 2, (9, 7)), (1, 0, 1, (1, 1)), (3, 1, 2, (5, 5))])
def test_conv2d(dtype, k, padding, stride, hw):
    rng = np.random.default_rng(3)
    assert_parity(lambda x, w: ns.ops.conv2d(x, w, padding=padding, stride=stride),
                  [_rand(rng, dtype, 1, 3, *hw), _rand(rng, dtype, 5, 3, k, k)])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("k, up, down, demodulate", [(3, 1, 1, True), (3, 2, 1, True), (3, 1, 2, True), (1, 1, 1, False)])
def test_modulated_conv2d(dtype, k, up, down, demodulate):
    rng = np.random.default_rng(4)
    f = ns.ops.setup_filter([1, 3, 3, 1], dtype=dtype)
    assert_parity(lambda x, w, s: ns.ops.modulated_conv2d(x, w, s, up=up, down=down, padding=k // 2,
                                                          resample_filter=f, demodulate=demodulate),
                  [_rand(rng, dtype, 3, 5, 6, 6), _rand(rng, dtype, 7, 5, k, k), _rand(rng, dtype, 3, 5)])


@pytest.mark.parametrize("dtype", DTYPES)
def test_gather_with_repeated_indices(dtype):
    # the augmentation's translation: per-sample reflected rows and columns, so indices repeat and
    # the backward (autograd's ScatterAdd, kernels/scatter_add.cu on the GPU) must add them up
    rng = np.random.default_rng(6)
    N, C, H, W = 3, 2, 5, 6
    rows, cols = rng.integers(0, H, (N, H)), rng.integers(0, W, (N, W))

    def gather(x):
        xp = backend.get_array_module(x.data)
        return x[xp.asarray(np.arange(N)[:, None, None]), :, xp.asarray(rows[:, :, None]), xp.asarray(cols[:, None, :])]
    assert_parity(gather, [_rand(rng, dtype, N, C, H, W)])
    picks = rng.integers(0, 7, 50)   # drawn once: the CPU and GPU runs must gather the same elements
    assert_parity(lambda v: v[backend.get_array_module(v.data).asarray(picks)], [_rand(rng, dtype, 7)])


def test_gradients_are_the_same_bits_on_every_run():
    # sums over many blocks (the noise strength) and over many repeated indices: with atomic adds
    # the order, and so the low bits, change from run to run, and a resumed run drifts off
    import cupy
    rng = np.random.default_rng(7)
    x = cupy.asarray(rng.standard_normal((16, 64, 32, 32)).astype(np.float32))
    noise = cupy.asarray(rng.standard_normal((16, 1, 32, 32)).astype(np.float32))
    strength = cupy.asarray(np.array([0.3], np.float32))
    vector = cupy.asarray(rng.standard_normal(1000).astype(np.float32))
    index = cupy.asarray(rng.integers(0, 1000, 1_000_000))
    gy = cupy.asarray(rng.standard_normal(1_000_000).astype(np.float32))

    def gradients():
        tensors = [ns.Tensor(a, requires_grad=True) for a in (x, strength, vector)]
        out = ns.ops.noise_injection(tensors[0], ns.Tensor(noise), tensors[1])
        g_strength = ns.grad(out.sum(), [tensors[1]])[0]
        g_vector = ns.grad(tensors[2][index], [tensors[2]], ns.Tensor(gy))[0]
        return [cupy.asnumpy(g.data) for g in (g_strength, g_vector)]
    first = gradients()
    for _ in range(3):
        for a, b in zip(first, gradients()):
            assert np.array_equal(a, b)


@pytest.mark.parametrize("dtype", DTYPES)
def test_adam_step(dtype):
    import cupy
    from nanostyle.ops.adam import adam_step
    rng = np.random.default_rng(5)
    arrays = [rng.standard_normal(1001).astype(dtype) for _ in range(2)] + [np.zeros(1001, dtype), np.zeros(1001, dtype)]
    cpu = [a.copy() for a in arrays]
    gpu = [cupy.asarray(a) for a in arrays]
    for step in (1, 2, 3):
        with ns.ops.use_impl("ref"):
            adam_step(*cpu, lr=0.01, beta1=0.5, beta2=0.99, eps=1e-8, step=step)
        adam_step(*gpu, lr=0.01, beta1=0.5, beta2=0.99, eps=1e-8, step=step)
    for g, c in zip(gpu, cpu):
        assert _relative_error(g, c) < TOLERANCE[np.dtype(dtype).type]
