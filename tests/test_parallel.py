"""The thread-pool paths (nanostyle.parallel) give the same bits as the inline ones.

Small arrays run inline (below parallel.MIN_ELEMENTS), so each test lowers the threshold and
asks for more threads than the batch splits evenly into (5 samples -> chunks 2, 2, 1)."""
import importlib

import numpy as np
import pytest

import nanostyle as ns
from nanostyle import parallel
from nanostyle.ops import bias_act, setup_filter, upfirdn2d


def inline_and_threaded(monkeypatch, compute):
    monkeypatch.setattr(parallel, "THREADS", 1)
    inline = compute()
    monkeypatch.setattr(parallel, "THREADS", 3)
    monkeypatch.setattr(parallel, "MIN_ELEMENTS", 0)
    return inline, compute()


@pytest.mark.parametrize("stride, padding", [((1, 1), (1, 1)), ((2, 2), (0, 1))])
def test_im2col_and_col2im(monkeypatch, stride, padding):
    conv = importlib.import_module("nanostyle.ops.conv2d")
    x = np.random.default_rng(1).standard_normal((5, 3, 9, 8))
    cols = conv._im2col(x, 3, 3, stride, padding)
    inline, threaded = inline_and_threaded(monkeypatch, lambda: (
        conv._im2col(x, 3, 3, stride, padding), conv._col2im(cols, x.shape, 3, 3, stride, padding)))
    for a, b in zip(inline, threaded):
        assert np.array_equal(a, b)


@pytest.mark.parametrize("up, down", [(2, 1), (1, 2), (1, 1)])
def test_upfirdn2d(monkeypatch, up, down):
    x = ns.Tensor(np.random.default_rng(2).standard_normal((5, 3, 8, 7)))
    f = setup_filter([1, 3, 3, 1])
    inline, threaded = inline_and_threaded(monkeypatch, lambda: upfirdn2d(x, f, up=up, down=down, padding=1).data)
    assert np.array_equal(inline, threaded)


def test_bias_act_lrelu_forward_and_gradient(monkeypatch):
    rng = np.random.default_rng(3)
    x, b, g = rng.standard_normal((5, 4, 6, 6)), rng.standard_normal(4), rng.standard_normal((5, 4, 6, 6))

    def compute():
        xt, bt = ns.Tensor(x, requires_grad=True), ns.Tensor(b, requires_grad=True)
        y = bias_act(xt, bt, act="lrelu")
        gx, gb = ns.grad(y, [xt, bt], grad_outputs=ns.Tensor(g))
        return y.data, gx.data, gb.data
    inline, threaded = inline_and_threaded(monkeypatch, compute)
    for a, c in zip(inline, threaded):
        assert np.array_equal(a, c)


def test_shifted_window_grid_pack_and_unpack(monkeypatch):
    conv = importlib.import_module("nanostyle.ops._conv2d_cpu")
    x = np.random.default_rng(4).standard_normal((5, 3, 6, 7))
    grid = conv._Grid(5, 6, 7, 3)

    def compute():
        packed = grid.pack(x)
        return packed, grid.unpack(grid.blocks(packed).reshape(3, -1))
    inline, threaded = inline_and_threaded(monkeypatch, compute)
    for a, b in zip(inline, threaded):
        assert np.array_equal(a, b)
    assert np.array_equal(inline[1], x)
    assert np.count_nonzero(inline[0]) == x.size    # zeros everywhere but the pixels


def test_phase_grid_pack_and_unpack(monkeypatch):
    conv = importlib.import_module("nanostyle.ops._conv2d_cpu")
    x = np.random.default_rng(5).standard_normal((5, 3, 9, 8))
    grid = conv._PhaseGrid(x.shape, 3, 2, 1)

    def compute():
        phases = grid.pack(x)
        return phases, grid.unpack(grid.computed(phases))
    inline, threaded = inline_and_threaded(monkeypatch, compute)
    for a, b in zip(inline, threaded):
        assert np.array_equal(a, b)
    assert np.array_equal(inline[1], x)               # every pixel is in exactly one phase
    assert np.count_nonzero(inline[0]) == x.size


@pytest.mark.parametrize("ufunc", [np.add, np.subtract, np.multiply, np.divide])
@pytest.mark.parametrize("shape_a, shape_b", [
    ((5, 4, 6, 7), (5, 4, 1, 1)),      # per sample and channel (demodulation, modulation)
    ((5, 4, 6, 7), (5, 1, 6, 7)),      # noise shared over the channels
    ((5, 4, 6, 7), (4, 1, 1)),         # per channel (a bias), fewer dimensions
    ((1, 4, 6, 7), (5, 4, 6, 7)),      # the larger operand second
    ((5, 3), ()),                      # a 0-d array
])
def test_binary_ops(monkeypatch, ufunc, shape_a, shape_b):
    rng = np.random.default_rng(3)
    a = rng.standard_normal(shape_a).astype(np.float32)
    b = rng.standard_normal(shape_b)                      # float64: the result is float64, as with the operator
    inline, threaded = inline_and_threaded(monkeypatch, lambda: parallel.binary(ufunc, a, b))
    expected = ufunc(a, b)
    for result in (inline, threaded):
        assert result.dtype == expected.dtype and result.shape == expected.shape
        assert np.array_equal(result, expected)
    assert np.array_equal(parallel.binary(ufunc, b.astype(np.float32), a), ufunc(b.astype(np.float32), a))


def test_binary_keeps_scalars_and_other_arrays_on_the_operator(monkeypatch):
    monkeypatch.setattr(parallel, "THREADS", 3)
    monkeypatch.setattr(parallel, "MIN_ELEMENTS", 0)
    a = np.arange(12.0).reshape(4, 3)
    assert np.array_equal(parallel.binary(np.multiply, a, 2.0), a * 2.0)
    assert parallel.binary(np.add, 2, 3) == 5


def test_split_batch_runs_every_part_with_the_fine_splitting_inline(monkeypatch):
    import threading
    monkeypatch.setattr(parallel, "THREADS", 2)
    monkeypatch.setattr(parallel, "MIN_ELEMENTS", 0)
    both_started = threading.Barrier(2, timeout=10)    # times out unless the parts run at once

    def part(i):
        both_started.wait()
        chunks = parallel.batch_parallel(lambda rows: rows, 8, 1 << 30)
        return i, parallel._inline(), chunks

    assert parallel.split_batch(part, 2) == [(0, True, [slice(0, 8)]), (1, True, [slice(0, 8)])]
    assert not parallel._inline()                      # the calling thread is itself again
    assert len(parallel.batch_parallel(lambda rows: rows, 8, 1 << 30)) == 2


def test_split_batch_raises_a_part_s_error_after_all_parts_end(monkeypatch):
    monkeypatch.setattr(parallel, "THREADS", 2)
    finished = []

    def part(i):
        if i == 1:
            raise ValueError("part 1 failed")
        finished.append(i)
        return i

    with pytest.raises(ValueError, match="part 1 failed"):
        parallel.split_batch(part, 2)
    assert finished == [0]


def test_grad_mode_is_per_thread():
    # one half of a batch generating fakes under no_grad must not stop the other half's graph
    import threading
    from nanostyle.autograd import Tensor, no_grad
    inside, done = threading.Event(), threading.Event()

    def other():
        with no_grad():
            inside.set()
            done.wait(10)

    thread = threading.Thread(target=other)
    thread.start()
    inside.wait(10)
    x = Tensor(np.ones(3), requires_grad=True)
    recorded = (x * 2).requires_grad
    done.set()
    thread.join()
    assert recorded
