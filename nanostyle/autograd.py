"""A small reverse-mode autograd that differentiates its own backward pass.

`Tensor` wraps an ndarray (NumPy or CuPy). Every differentiable operation is a `Function`:
`forward` works on raw arrays, and `backward` is written with Tensor operations, so when
`grad(..., create_graph=True)` runs a backward pass, that pass records a graph of its own and
can be differentiated again. That single rule gives StyleGAN2's R1 penalty (the gradient of
|dD(x)/dx|^2 with respect to D's weights) with no second-order code per op.

Functions learn through `self.needs_input_grad` which inputs need a gradient in the pass being
run, so e.g. R1's inner gradient computes no weight gradients.

The graph holds no reference cycles: a Function keeps its inputs, outputs keep their Function,
and a Function refers to its outputs only weakly. Dropping the output frees the graph.
"""
import contextlib
import threading
import weakref

import numpy as np

from . import backend

# Whether operations record a graph, per thread: the training loop runs halves of a batch on two
# threads at once (parallel.split_batch), and one half's no_grad() must not switch off the
# other's graph.
_mode = threading.local()


def is_grad_enabled():
    return getattr(_mode, "enabled", True)


@contextlib.contextmanager
def set_grad_enabled(mode):
    previous, _mode.enabled = is_grad_enabled(), bool(mode)
    try:
        yield
    finally:
        _mode.enabled = previous


def no_grad():
    """Context manager: operations inside record no graph (sampling, EMA, optimiser steps)."""
    return set_grad_enabled(False)


def enable_grad():
    return set_grad_enabled(True)


class Tensor:
    """An ndarray with an optional gradient and the Function that produced it."""

    __slots__ = ("data", "grad", "requires_grad", "_ctx", "_index", "name", "__weakref__")
    __array_priority__ = 1000  # so ndarray <op> Tensor defers to Tensor's reflected operator

    def __init__(self, data, requires_grad=False, name=None):
        if isinstance(data, Tensor):
            data = data.data
        if type(data) is not np.ndarray and not hasattr(data, "__array_interface__") \
                and not backend.is_cuda_array(data):           # (hasattr costs a dict per call)
            data = np.asarray(data)
            if data.dtype.kind in "iub":
                data = data.astype(np.float32)
            elif data.dtype == np.float16:
                data = data.astype(np.float32)
        self.data = data
        self.grad = None
        self.requires_grad = bool(requires_grad)
        self._ctx = None  # the Function that produced this tensor (None for leaves)
        self._index = 0   # which output of that Function this is
        self.name = name

    # ---- array-like facts -------------------------------------------------------------
    @property
    def shape(self):
        return self.data.shape

    @property
    def ndim(self):
        return self.data.ndim

    @property
    def dtype(self):
        return self.data.dtype

    @property
    def size(self):
        return self.data.size

    @property
    def xp(self):
        return backend.get_array_module(self.data)

    @property
    def is_leaf(self):
        return self._ctx is None

    def __len__(self):
        return len(self.data)

    def numpy(self):
        return backend.to_numpy(self.data)

    def item(self):
        return float(self.numpy().reshape(-1)[0]) if self.size == 1 else _raise_item(self)

    def detach(self):
        return Tensor(self.data)

    def __repr__(self):
        grad = ", requires_grad=True" if self.requires_grad else ""
        return f"Tensor(shape={tuple(self.shape)}, dtype={self.dtype}{grad})"

    # ---- autograd entry point -----------------------------------------------------------
    def backward(self, gradient=None, create_graph=False):
        """Accumulate d(self)/d(leaf) into `.grad` of every leaf with requires_grad."""
        if gradient is None:
            if self.size != 1:
                raise ValueError(f"backward() on a tensor of shape {self.shape} needs a "
                                 "`gradient` of the same shape (or call .sum() first)")
            gradient = Tensor(self.xp.ones_like(self.data))
        _run_backward([self], [_as_tensor(gradient, self)], targets=None, create_graph=create_graph)

    # ---- operators ------------------------------------------------------------------------
    def __add__(self, other):
        return Add.apply(self, _as_tensor(other, self))

    def __radd__(self, other):
        return Add.apply(_as_tensor(other, self), self)

    def __sub__(self, other):
        return Sub.apply(self, _as_tensor(other, self))

    def __rsub__(self, other):
        return Sub.apply(_as_tensor(other, self), self)

    def __mul__(self, other):
        return Mul.apply(self, _as_tensor(other, self))

    def __rmul__(self, other):
        return Mul.apply(_as_tensor(other, self), self)

    def __truediv__(self, other):
        return Div.apply(self, _as_tensor(other, self))

    def __rtruediv__(self, other):
        return Div.apply(_as_tensor(other, self), self)

    def __matmul__(self, other):
        return MatMul.apply(self, _as_tensor(other, self))

    def __rmatmul__(self, other):
        return MatMul.apply(_as_tensor(other, self), self)

    def __pow__(self, exponent):
        if isinstance(exponent, Tensor):
            raise TypeError("Tensor ** Tensor is not supported; use exp(log(a) * b)")
        return Pow.apply(self, exponent=float(exponent))

    def __neg__(self):
        return Neg.apply(self)

    def __getitem__(self, index):
        if isinstance(index, Tensor):
            index = index.data
        return GetItem.apply(self, index=index)

    # ---- shape and reductions ----------------------------------------------------------
    def reshape(self, *shape):
        if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
            shape = tuple(shape[0])
        return Reshape.apply(self, shape=tuple(int(s) for s in shape))

    def transpose(self, *axes):
        if len(axes) == 1 and isinstance(axes[0], (tuple, list)):
            axes = tuple(axes[0])
        if not axes:
            axes = tuple(reversed(range(self.ndim)))
        return Transpose.apply(self, axes=tuple(int(a) for a in axes))

    @property
    def T(self):
        return self.transpose()

    def sum(self, axis=None, keepdims=False):
        return Sum.apply(self, axis=_norm_axis(axis, self.ndim), keepdims=keepdims)

    def mean(self, axis=None, keepdims=False):
        axis = _norm_axis(axis, self.ndim)
        count = self.size if axis is None else int(np.prod([self.shape[a] for a in axis]))
        return self.sum(axis=axis, keepdims=keepdims) * (1.0 / max(count, 1))

    def square(self):
        return self * self

    def sqrt(self):
        return Pow.apply(self, exponent=0.5)

    def rsqrt(self):
        return Pow.apply(self, exponent=-0.5)

    def exp(self):
        return Exp.apply(self)

    def log(self):
        return Log.apply(self)

    def broadcast_to(self, shape):
        return BroadcastTo.apply(self, shape=tuple(shape))

    def astype(self, dtype):
        return Cast.apply(self, dtype=np.dtype(dtype))


def _raise_item(tensor):
    raise ValueError(f"item() needs a tensor with one element, got shape {tensor.shape}")


def _as_tensor(value, like=None):
    """Wrap constants as Tensors with the dtype and device of `like` (no upcasting)."""
    if isinstance(value, Tensor):
        return value
    if like is not None:
        xp = like.xp
        return Tensor(xp.asarray(value, dtype=like.dtype))
    return Tensor(value)


def tensor(data, requires_grad=False, dtype=None):
    if dtype is not None:
        data = backend.get_array_module(data).asarray(data, dtype=dtype)
    return Tensor(data, requires_grad=requires_grad)


def _norm_axis(axis, ndim):
    if axis is None:
        return None
    if isinstance(axis, int):
        axis = (axis,)
    return tuple(sorted(int(a) % ndim for a in axis))


# =====================================================================================
# Function: the unit of differentiation
# =====================================================================================

class Function:
    """Subclass and define `forward(self, *arrays, **kwargs)` (raw arrays in, array or tuple
    of arrays out) and `backward(self, *grad_outputs)` (Tensors in, one Tensor or None per
    input out), written with Tensor operations so that it is differentiable itself.

    In backward, `self.inputs` are the input Tensors, `self.needs_input_grad` says which need
    a gradient, and anything forward stored on `self` is available.
    """

    num_outputs = 1

    @classmethod
    def apply(cls, *inputs, **kwargs):
        fn = cls()
        tensors = tuple(x if isinstance(x, Tensor) or x is None else Tensor(x) for x in inputs)
        raw = fn.forward(*(t.data if t is not None else None for t in tensors), **kwargs)
        multiple = isinstance(raw, tuple)
        raw_outputs = raw if multiple else (raw,)
        record = is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)
        outputs = tuple(Tensor(a) for a in raw_outputs)
        if record:
            fn.inputs = tensors
            fn._outputs = tuple(weakref.ref(o) for o in outputs)
            fn._output_meta = tuple((a.shape, a.dtype) for a in raw_outputs)
            for i, o in enumerate(outputs):
                o.requires_grad = True
                o._ctx = fn
                o._index = i
        return outputs if multiple else outputs[0]

    def forward(self, *arrays, **kwargs):
        raise NotImplementedError

    def backward(self, *grad_outputs):
        raise NotImplementedError


# =====================================================================================
# The backward pass
# =====================================================================================

def _topological_order(roots):
    """Functions reachable from `roots`, each after every Function that feeds it."""
    order, visited = [], set()
    stack = [(t._ctx, False) for t in roots if t._ctx is not None]
    while stack:
        fn, expanded = stack.pop()
        if expanded:
            order.append(fn)
            continue
        if id(fn) in visited:
            continue
        visited.add(id(fn))
        stack.append((fn, True))
        for inp in fn.inputs:
            if inp is not None and inp._ctx is not None and id(inp._ctx) not in visited:
                stack.append((inp._ctx, False))
    return order


def _run_backward(outputs, grad_outputs, targets, create_graph):
    """Propagate gradients from `outputs`. `targets` is a list of Tensors whose gradients are
    returned; with targets=None every leaf with requires_grad gets its `.grad` accumulated."""
    target_ids = None if targets is None else {id(t) for t in targets}

    def is_target(t):
        if t is None or not t.requires_grad:
            return False
        return t._ctx is None if target_ids is None else id(t) in target_ids

    order = _topological_order(outputs)
    # An input needs a gradient when it is a target or some target lies upstream of it; a
    # Function is "needed" when any of its inputs does.
    needs, needed = {}, {}
    for fn in order:
        needs[id(fn)] = tuple(
            is_target(inp) or (inp is not None and inp._ctx is not None and needed.get(id(inp._ctx), False))
            for inp in fn.inputs)
        needed[id(fn)] = any(needs[id(fn)])

    grads = {}
    keep_alive = []  # tensors whose id() keys `grads` must not be reused mid-pass

    def accumulate(t, g):
        key = id(t)
        if key in grads:
            grads[key] = grads[key] + g
        else:
            grads[key] = g
            keep_alive.append(t)

    for out, g in zip(outputs, grad_outputs):
        if g.shape != out.shape:
            raise ValueError(f"grad_outputs shape {g.shape} does not match output shape {out.shape}")
        accumulate(out, g)

    with set_grad_enabled(create_graph):
        for fn in reversed(order):
            if not needed[id(fn)]:
                continue
            outs = [ref() for ref in fn._outputs]
            gouts = [grads.get(id(o)) if o is not None else None for o in outs]
            if all(g is None for g in gouts):
                continue
            if len(gouts) > 1:
                xp = backend.get_array_module(next(g for g in gouts if g is not None).data)
                gouts = [g if g is not None else Tensor(xp.zeros(shape, dtype=dtype))
                         for g, (shape, dtype) in zip(gouts, fn._output_meta)]
            fn.needs_input_grad = needs[id(fn)]
            gins = fn.backward(*gouts)
            if not isinstance(gins, tuple):
                gins = (gins,)
            if len(gins) != len(fn.inputs):
                raise RuntimeError(f"{type(fn).__name__}.backward returned {len(gins)} gradients "
                                   f"for {len(fn.inputs)} inputs")
            for inp, gin, need in zip(fn.inputs, gins, fn.needs_input_grad):
                if gin is None or not need:
                    continue
                if not isinstance(gin, Tensor):
                    gin = Tensor(gin)
                if gin.shape != inp.shape:
                    raise RuntimeError(f"{type(fn).__name__}.backward gave a gradient of shape "
                                       f"{gin.shape} for an input of shape {inp.shape}")
                accumulate(inp, gin)

    if targets is not None:
        return [grads.get(id(t)) for t in targets]
    # Tensor.backward(): accumulate into leaves.
    for fn in order:
        for inp in fn.inputs:
            if is_target(inp) and id(inp) in grads:
                g = grads.pop(id(inp))
                if not create_graph:
                    g = Tensor(g.data)
                inp.grad = g if inp.grad is None else inp.grad + g
    return None


def grad(outputs, inputs, grad_outputs=None, create_graph=False, allow_unused=True):
    """Gradients of `outputs` with respect to `inputs`: a list with one Tensor per input.

    An input that no output depends on gets None, or zeros with allow_unused=False. With
    create_graph=True the returned gradients carry a graph and can be differentiated again
    (R1, gradient checks of second order).
    """
    single_output = isinstance(outputs, Tensor)
    outputs = [outputs] if single_output else list(outputs)
    single_input = isinstance(inputs, Tensor)
    inputs = [inputs] if single_input else list(inputs)
    if grad_outputs is None:
        grad_outputs = [None] * len(outputs)
    elif isinstance(grad_outputs, Tensor) or not isinstance(grad_outputs, (list, tuple)):
        grad_outputs = [grad_outputs]
    gouts = []
    for out, g in zip(outputs, grad_outputs):
        if g is None:
            if out.size != 1:
                raise ValueError(f"grad(): output of shape {out.shape} needs a grad_output "
                                 "(or reduce it to a scalar first)")
            g = Tensor(out.xp.ones_like(out.data))
        gouts.append(_as_tensor(g, out))
    for t in inputs:
        if not isinstance(t, Tensor):
            raise TypeError(f"grad(): inputs must be Tensors, got {type(t).__name__}")
    live_outputs = [(o, g) for o, g in zip(outputs, gouts) if o.requires_grad]
    if not live_outputs:
        result = [None] * len(inputs)
    else:
        result = _run_backward([o for o, _ in live_outputs], [g for _, g in live_outputs],
                               targets=inputs, create_graph=create_graph)
    if not allow_unused:
        result = [r if r is not None else Tensor(t.xp.zeros_like(t.data))
                  for r, t in zip(result, inputs)]
    return result


# =====================================================================================
# Elementary Functions (each backward is written in Tensor ops, hence differentiable)
# =====================================================================================

def _unbroadcast(g, shape):
    """Sum a broadcast gradient back to `shape`."""
    if g.shape == tuple(shape):
        return g
    extra = g.ndim - len(shape)
    axes = tuple(range(extra)) + tuple(i + extra for i, s in enumerate(shape)
                                       if s == 1 and g.shape[i + extra] != 1)
    if axes:
        g = g.sum(axis=axes, keepdims=True)
    return g.reshape(shape)


class Add(Function):
    def forward(self, a, b):
        return a + b

    def backward(self, g):
        a, b = self.inputs
        ga = _unbroadcast(g, a.shape) if self.needs_input_grad[0] else None
        gb = _unbroadcast(g, b.shape) if self.needs_input_grad[1] else None
        return ga, gb


class Sub(Function):
    def forward(self, a, b):
        return a - b

    def backward(self, g):
        a, b = self.inputs
        ga = _unbroadcast(g, a.shape) if self.needs_input_grad[0] else None
        gb = _unbroadcast(-g, b.shape) if self.needs_input_grad[1] else None
        return ga, gb


class Mul(Function):
    def forward(self, a, b):
        return a * b

    def backward(self, g):
        a, b = self.inputs
        ga = _unbroadcast(g * b, a.shape) if self.needs_input_grad[0] else None
        gb = _unbroadcast(g * a, b.shape) if self.needs_input_grad[1] else None
        return ga, gb


class Div(Function):
    def forward(self, a, b):
        return a / b

    def backward(self, g):
        a, b = self.inputs
        ga = _unbroadcast(g / b, a.shape) if self.needs_input_grad[0] else None
        gb = _unbroadcast(-g * a / (b * b), b.shape) if self.needs_input_grad[1] else None
        return ga, gb


class Neg(Function):
    def forward(self, a):
        return -a

    def backward(self, g):
        return -g


class Pow(Function):
    def forward(self, a, exponent):
        self.exponent = exponent
        xp = backend.get_array_module(a)
        if exponent == 0.5:
            return xp.sqrt(a)
        if exponent == 2.0:
            return a * a
        return a ** a.dtype.type(exponent)

    def backward(self, g):
        (a,) = self.inputs
        e = self.exponent
        if e == 2.0:
            return g * a * 2.0
        return g * e * a ** (e - 1.0)


class Exp(Function):
    def forward(self, a):
        return backend.get_array_module(a).exp(a)

    def backward(self, g):
        (a,) = self.inputs
        return g * a.exp()


class Log(Function):
    def forward(self, a):
        return backend.get_array_module(a).log(a)

    def backward(self, g):
        (a,) = self.inputs
        return g / a


class Cast(Function):
    def forward(self, a, dtype):
        self.source_dtype = a.dtype
        return a.astype(dtype)

    def backward(self, g):
        return g.astype(self.source_dtype)


class MatMul(Function):
    """a @ b for 2-D operands (batched leading axes broadcast as in NumPy)."""

    def forward(self, a, b):
        if a.ndim < 2 or b.ndim < 2:
            raise ValueError(f"matmul: operands must be at least 2-D, got {a.shape} @ {b.shape}")
        return a @ b

    def backward(self, g):
        a, b = self.inputs
        ga = _unbroadcast(g @ _swap_last(b), a.shape) if self.needs_input_grad[0] else None
        gb = _unbroadcast(_swap_last(a) @ g, b.shape) if self.needs_input_grad[1] else None
        return ga, gb


def _swap_last(t):
    axes = list(range(t.ndim))
    axes[-1], axes[-2] = axes[-2], axes[-1]
    return t.transpose(axes)


class Sum(Function):
    def forward(self, a, axis, keepdims):
        self.axis, self.keepdims, self.in_shape = axis, keepdims, a.shape
        return a.sum(axis=axis, keepdims=keepdims)

    def backward(self, g):
        if not self.keepdims and self.axis is not None:
            shape = list(self.in_shape)
            for ax in self.axis:
                shape[ax] = 1
            g = g.reshape(shape)
        elif not self.keepdims:
            g = g.reshape((1,) * len(self.in_shape))
        return g.broadcast_to(self.in_shape)


class BroadcastTo(Function):
    def forward(self, a, shape):
        self.in_shape = a.shape
        xp = backend.get_array_module(a)
        return xp.ascontiguousarray(xp.broadcast_to(a, shape))

    def backward(self, g):
        return _unbroadcast(g, self.in_shape)


class Reshape(Function):
    def forward(self, a, shape):
        self.in_shape = a.shape
        return a.reshape(shape)

    def backward(self, g):
        return g.reshape(self.in_shape)


class Transpose(Function):
    def forward(self, a, axes):
        self.axes = axes
        return a.transpose(axes)

    def backward(self, g):
        return g.transpose(tuple(np.argsort(self.axes)))


class GetItem(Function):
    def forward(self, a, index):
        self.index, self.in_shape = index, a.shape
        return a[index]

    def backward(self, g):
        return ScatterAdd.apply(g, index=self.index, shape=self.in_shape)


class ScatterAdd(Function):
    """zeros(shape)[index] += g: the transpose of indexing (its own gradient is indexing);
    ops/scatter_add.py holds the reference and the CUDA kernel's launcher."""

    def forward(self, g, index, shape):
        self.index = index
        return scatter_add(g, index, shape)

    def backward(self, gg):
        return gg[self.index]


class Concat(Function):
    def forward(self, *arrays, axis):
        self.axis = axis
        self.sizes = [a.shape[axis] for a in arrays]
        return backend.get_array_module(*arrays).concatenate(arrays, axis=axis)

    def backward(self, g):
        out, start = [], 0
        for size in self.sizes:
            index = [slice(None)] * g.ndim
            index[self.axis] = slice(start, start + size)
            out.append(g[tuple(index)])
            start += size
        return tuple(out)


def concat(tensors, axis=0):
    tensors = [_as_tensor(t) for t in tensors]
    axis = axis % tensors[0].ndim
    return Concat.apply(*tensors, axis=axis)


def stack(tensors, axis=0):
    tensors = [_as_tensor(t) for t in tensors]
    axis = axis % (tensors[0].ndim + 1)
    expanded = [t.reshape(t.shape[:axis] + (1,) + t.shape[axis:]) for t in tensors]
    return concat(expanded, axis=axis)


class Where(Function):
    """where(condition, a, b) with a constant boolean condition."""

    def forward(self, a, b, condition):
        self.condition = condition
        return backend.get_array_module(a).where(condition, a, b)

    def backward(self, g):
        a, b = self.inputs
        zero = Tensor(g.xp.zeros((), dtype=g.dtype))
        cond = self.condition
        ga = _unbroadcast(where(cond, g, zero), a.shape) if self.needs_input_grad[0] else None
        gb = _unbroadcast(where(cond, zero, g), b.shape) if self.needs_input_grad[1] else None
        return ga, gb


def where(condition, a, b):
    like = a if isinstance(a, Tensor) else b
    return Where.apply(_as_tensor(a, like), _as_tensor(b, like), condition=condition)


# ops/ builds on the Functions above, so it is imported once they exist
from .ops.scatter_add import scatter_add  # noqa: E402
