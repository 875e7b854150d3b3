"""blas.gemm (direct calls into NumPy's own OpenBLAS) against NumPy's matmul, on the strided
windows and accumulations the shifted-window convolutions use, and its argument errors."""
import numpy as np
import pytest

from nanostyle import blas

pytestmark = pytest.mark.skipif(not blas.available(np.float32),
                                reason="no direct BLAS found in numpy.libs (the im2col path runs instead)")


@pytest.mark.parametrize("dtype, rtol", [(np.float32, 1e-5), (np.float64, 1e-13)])
@pytest.mark.parametrize("trans_a, trans_b", [(False, False), (True, False), (False, True), (True, True)])
def test_gemm_matches_matmul_on_windows_and_accumulates(dtype, rtol, trans_a, trans_b):
    rng = np.random.default_rng(5)
    m, k, n = 7, 5, 11
    flat = rng.standard_normal((k if not trans_b else n, 40)).astype(dtype)
    b = flat[:, 3:3 + (n if not trans_b else k)]          # a window: row stride 40, not n
    a = rng.standard_normal((k, m) if trans_a else (m, k)).astype(dtype)
    c0 = rng.standard_normal((m, n)).astype(dtype)
    op = lambda t, flag: t.T if flag else t
    expected = op(a, trans_a).astype(np.float64) @ op(b, trans_b).astype(np.float64)
    c = c0.copy()
    blas.gemm(a, b, c, trans_a=trans_a, trans_b=trans_b)
    np.testing.assert_allclose(c, expected, rtol=rtol, atol=rtol * 10)
    c = c0.copy()
    blas.gemm(a, b, c, beta=1.0, trans_a=trans_a, trans_b=trans_b)
    np.testing.assert_allclose(c, expected + c0, rtol=rtol, atol=rtol * 10)


def test_gemm_writes_into_a_window_of_a_larger_output():
    rng = np.random.default_rng(6)
    a, b = rng.standard_normal((4, 3)), rng.standard_normal((3, 6))
    big = rng.standard_normal((4, 10))
    before = big.copy()
    blas.gemm(a, b, big[:, 2:8])
    np.testing.assert_allclose(big[:, 2:8], a @ b, rtol=1e-13)
    np.testing.assert_array_equal(big[:, :2], before[:, :2])
    np.testing.assert_array_equal(big[:, 8:], before[:, 8:])


@pytest.mark.parametrize("a, b, c, match", [
    (np.ones((2, 3)), np.ones((4, 2)), np.ones((2, 2)), "do not chain"),
    (np.ones((2, 3)), np.ones((3, 2)), np.ones((2, 3)), "do not chain"),
    (np.ones((2, 3), np.float32), np.ones((3, 2)), np.ones((2, 2)), "dtypes differ"),
    (np.ones((3, 2)).T, np.ones((3, 2)), np.ones((2, 2)), "unit stride"),
    (np.ones((2, 3)), np.ones((3, 2)), np.ones((2, 2))[:, ::1][::-1], "unit stride"),
])
def test_gemm_rejects_bad_operands_by_name(a, b, c, match):
    with pytest.raises(ValueError, match=match):
        blas.gemm(a, b, c)


def test_core_name_and_the_advice_on_a_pinned_kernel_set():
    core = blas.core_name()
    if core is None:
        pytest.skip("NumPy's BLAS is not an OpenBLAS that names its kernels")
    assert core and core.isprintable()
    avx512 = {"avx512f", "avx512bw", "avx512vl", "avx2"}
    advice = blas.kernel_advice("Haswell", avx512, {"OPENBLAS_CORETYPE": "Haswell"})
    assert "OPENBLAS_CORETYPE=Haswell" in advice and "unset OPENBLAS_CORETYPE" in advice
    assert blas.kernel_advice("Haswell", avx512, {}) is None                 # not pinned: OpenBLAS chose
    assert blas.kernel_advice("SkylakeX", avx512, {"OPENBLAS_CORETYPE": "SkylakeX"}) is None
    assert blas.kernel_advice("Haswell", {"avx2", "fma"}, {"OPENBLAS_CORETYPE": "Haswell"}) is None   # no AVX-512
