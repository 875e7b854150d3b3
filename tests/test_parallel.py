"""nanostyle.parallel: split_batch runs every part at once with single-threaded BLAS, returns the
parts' results in order, raises a part's error after all parts end; the autograd's grad mode
is per thread, so the parts' graphs do not disturb each other."""
import threading

import numpy as np
import pytest

from nanostyle import blas, parallel


def test_split_batch_runs_every_part_at_once_with_one_blas_thread():
    both_started = threading.Barrier(2, timeout=10)    # times out unless the parts run at once
    outer = blas.set_local_threads(2)
    try:
        def part(i):
            both_started.wait()
            previous = blas.set_local_threads(1)       # returns the count the part ran with
            blas.set_local_threads(previous)
            return i, previous
        results = parallel.split_batch(part, 2)
        assert blas.set_local_threads(2) == 2          # the caller's count is back
    finally:
        blas.set_local_threads(outer)
    assert [i for i, _ in results] == [0, 1]
    if blas.set_local_threads(1) != 1:                 # an OpenBLAS that takes the setting
        assert all(count == 1 for _, count in results)
    blas.set_local_threads(outer)


def test_split_batch_raises_a_part_s_error_after_all_parts_end():
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
