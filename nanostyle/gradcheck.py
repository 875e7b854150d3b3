"""Finite-difference gradient checks, first and second order (public: check your own ops).

Method (as Chainer's gradient_check): draw a random direction d for the inputs, and compare the
analytic directional derivative <grad_x <y, gy>, d> with the central difference
(<y(x + eps d), gy> - <y(x - eps d), gy>) / (2 eps). Done in float64, per input and jointly, along
several directions. The second-order check applies the same test to the function
(x, gy) -> grad_x <y(x), gy> computed with create_graph=True, so it checks every op's backward
pass as a differentiable function in its own right (what R1 needs).

Use random inputs, never zeros or ones, and redraw inputs that land near a kink (lrelu at 0):
a finite difference across a kink measures nothing.
"""
import numpy as np

from . import backend
from .autograd import Tensor, grad, no_grad


class GradientCheckError(AssertionError):
    pass


def _as_outputs(y):
    return list(y) if isinstance(y, (tuple, list)) else [y]


def _inner(outputs, grad_outputs):
    """sum_i <outputs_i, grad_outputs_i> in float64 on raw arrays."""
    total = 0.0
    for y, gy in zip(outputs, grad_outputs):
        total += float(backend.to_numpy((y.data * gy).sum()))
    return total


def check_backward(func, inputs, grad_outputs=None, eps=1e-6, atol=1e-6, rtol=1e-5,
                   num_directions=3, seed=0, verbose=False):
    """Check the first-order gradients of `func` at `inputs` against central differences.

    func: takes Tensors (one per input array), returns a Tensor or a tuple of Tensors.
    inputs: float64 arrays (NumPy or CuPy). Inputs given as None are passed through.
    grad_outputs: arrays like the outputs (random normal if None).
    Raises GradientCheckError with the worst mismatch; returns the largest relative error.
    """
    rng = np.random.default_rng(seed)
    inputs = list(inputs)
    for x in inputs:
        if x is not None and np.dtype(x.dtype) != np.float64:
            raise ValueError(f"check_backward: inputs must be float64 for a meaningful finite "
                             f"difference, got {x.dtype}")
    live = [i for i, x in enumerate(inputs) if x is not None]
    xp = backend.get_array_module(*[inputs[i] for i in live])

    def evaluate(arrays):
        # Inputs require grad so that a `func` which itself takes gradients (the
        # double-backward check) evaluates the same way as at the analytic point.
        return _as_outputs(func(*[Tensor(a, requires_grad=True) if a is not None else None
                                  for a in arrays]))

    tensors = [Tensor(x, requires_grad=True) if x is not None else None for x in inputs]
    outputs = _as_outputs(func(*tensors))
    if grad_outputs is None:
        grad_outputs = [xp.asarray(rng.standard_normal(y.shape)) for y in outputs]
    grad_outputs = list(grad_outputs)
    analytic = grad(outputs, [tensors[i] for i in live],
                    [Tensor(g) for g in grad_outputs], allow_unused=False)
    analytic = [a.data for a in analytic]

    worst = 0.0
    # Per-input directions first (a wrong gradient for one input cannot hide behind another),
    # then joint directions.
    plans = [[i] for i in live] * num_directions + [live] * num_directions
    for plan in plans:
        directions = {i: xp.asarray(rng.standard_normal(inputs[i].shape)) for i in plan}
        expected = sum(float(backend.to_numpy((analytic[live.index(i)] * d).sum()))
                       for i, d in directions.items())
        plus = [x + eps * directions[i] if i in directions else x for i, x in enumerate(inputs)]
        minus = [x - eps * directions[i] if i in directions else x for i, x in enumerate(inputs)]
        numeric = (_inner(evaluate(plus), grad_outputs)
                   - _inner(evaluate(minus), grad_outputs)) / (2 * eps)
        error = abs(expected - numeric)
        relative = error / max(abs(numeric), 1e-12)
        if verbose:
            print(f"inputs {plan}: analytic {expected:.10g} numeric {numeric:.10g} rel {relative:.2e}")
        if error > atol + rtol * abs(numeric):
            raise GradientCheckError(
                f"gradient mismatch for input(s) {plan}: analytic {expected:.12g} vs numeric "
                f"{numeric:.12g} (abs error {error:.3g}, relative {relative:.3g}, "
                f"atol {atol}, rtol {rtol})")
        worst = max(worst, min(relative, error))
    return worst


def check_double_backward(func, inputs, grad_outputs=None, grad_grad_inputs=None, eps=1e-6,
                          atol=1e-6, rtol=1e-5, num_directions=3, seed=0, verbose=False):
    """Check second-order gradients: the backward pass of `func`, built with
    create_graph=True, is itself checked with `check_backward` as a function of (x, gy)."""
    rng = np.random.default_rng(seed + 1)
    inputs = list(inputs)
    live = [i for i, x in enumerate(inputs) if x is not None]
    xp = backend.get_array_module(*[inputs[i] for i in live])
    if grad_outputs is None:
        with no_grad():
            outputs = _as_outputs(func(*[Tensor(x) if x is not None else None for x in inputs]))
        grad_outputs = [xp.asarray(rng.standard_normal(y.shape)) for y in outputs]
    grad_outputs = list(grad_outputs)
    num_inputs = len(inputs)

    def first_order(*args):
        xs, gys = list(args[:num_inputs]), args[num_inputs:]
        ys = _as_outputs(func(*xs))
        return tuple(grad(ys, [xs[i] for i in live], list(gys), create_graph=True,
                          allow_unused=False))

    if grad_grad_inputs is None:
        grad_grad_inputs = [xp.asarray(rng.standard_normal(inputs[i].shape)) for i in live]
    return check_backward(first_order, inputs + grad_outputs, grad_outputs=grad_grad_inputs,
                          eps=eps, atol=atol, rtol=rtol, num_directions=num_directions,
                          seed=seed + 2, verbose=verbose)
