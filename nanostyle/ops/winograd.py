"""Winograd F(2x2, 3x3): the CPU path for 3x3, stride-1 convolutions (NumPy only).

Lavin and Gray, "Fast Algorithms for Convolutional Neural Networks" (CVPR 2016). Each 2x2 block
of outputs comes from a 4x4 tile of the input (tiles overlap by 2):

    Y = A^T [ (G w G^T) (.) (B^T d B) ] A          (. is the elementwise product)

so the 16 elementwise products per tile become 16 GEMMs [O, C] x [C, tiles], with 16 multiplies
per 4 outputs instead of 36: 2.25x fewer than im2col + GEMM, and the transformed input is 4x the
input's size instead of im2col's 9x. The three functions below are the three faces of a
convolution, so the autograd Functions in conv2d.py use them unchanged:

    winograd_conv2d(x, w, padding)                         y  = corr(x, w)           (forward)
    winograd_conv2d_input_grad(g, w, x_shape, padding)     gx = corr(g, flip(w)^T)   (its adjoint in x)
    winograd_conv2d_weight_grad(x, g, padding)             gw = sum over tiles G^T [(A g A^T) (.) V] G

The weight gradient differentiates the forward formula through U = G w G^T, so it needs the same
transformed input V and the output gradient transformed by A (2x2 -> 4x4). Convolutions are
correlations here, as everywhere in nanostyle. Odd output sizes are handled by padding to whole
tiles and cropping. Float32 error is a few ulps of the im2col result (the transforms only add
and halve); tests compare the two paths on random data in float32 and float64.
"""
import os

import numpy as np

# NANOSTYLE_WINOGRAD=1 turns this path on. Off by default until benchmarks/RESULTS.md shows it
# faster than im2col + GEMM in a whole training step (the work in progress of issue 7)
ENABLED = os.environ.get("NANOSTYLE_WINOGRAD", "0") == "1"

__all__ = ["winograd_applies", "winograd_conv2d", "winograd_conv2d_input_grad", "winograd_conv2d_weight_grad"]

_G = np.array([[1.0, 0.0, 0.0],
               [0.5, 0.5, 0.5],
               [0.5, -0.5, 0.5],
               [0.0, 0.0, 1.0]])                               # weight transform, 4x3


def winograd_applies(x, kernel_shape, stride, padding):
    """True when this path computes the convolution: a NumPy array, 3x3 kernel, stride 1,
    padding 0..2 on each axis (the adjoint then pads by 2 - p >= 0)."""
    return (ENABLED and isinstance(x, np.ndarray) and tuple(kernel_shape) == (3, 3) and tuple(stride) == (1, 1)
            and all(0 <= p <= 2 for p in padding))


_BT = np.array([[1.0, 0.0, -1.0, 0.0],
                [0.0, 1.0, 1.0, 0.0],
                [0.0, -1.0, 1.0, 0.0],
                [0.0, 1.0, 0.0, -1.0]])                         # input transform, 4x4
_AT = np.array([[1.0, 1.0, 1.0, 0.0],
                [0.0, 1.0, -1.0, -1.0]])                        # output transform, 2x4
# the 2-D transforms as matrices on a tile's flattened pixels (row-major): V = K_in d, Y = K_out M
_K_IN = np.kron(_BT, _BT)                                       # [16 (a, b), 16 (r, s)]
_K_OUT = np.kron(_AT, _AT)                                      # [4 (p, q), 16 (a, b)]


def _tile_counts(out_h, out_w):
    return (out_h + 1) // 2, (out_w + 1) // 2


def _transform_input(x, padding, tiles):
    """x [N, C, H, W] -> V [4, 4, C, N*th*tw]: B^T d B for every 4x4 input tile d (stride 2).

    One strided copy gathers the tiles as [16 (r, s), C, N, th, tw] (4x the input, where im2col
    gathers 9x), then one GEMM with the 16x16 matrix kron(B^T, B^T) transforms them all."""
    N, C, H, W = x.shape
    py, px = padding
    th, tw = tiles
    padded = np.zeros((N, C, 2 * th + 2, 2 * tw + 2), dtype=x.dtype)
    padded[:, :, py:py + H, px:px + W] = x
    sN, sC, sH, sW = padded.strides
    tiles_view = np.lib.stride_tricks.as_strided(
        padded, shape=(4, 4, C, N, th, tw), strides=(sH, sW, sC, sN, 2 * sH, 2 * sW))
    d = np.ascontiguousarray(tiles_view).reshape(16, -1)
    return (_K_IN.astype(x.dtype) @ d).reshape(4, 4, C, N * th * tw)


def _transform_weight(w):
    """w [O, C, 3, 3] -> U [4, 4, O, C] = G w G^T per (o, c)."""
    G = _G.astype(w.dtype)
    return np.ascontiguousarray(np.einsum("ar,ocrs,bs->aboc", G, w, G, optimize=True))


def _transform_output(M, N, out_h, out_w, tiles):
    """M [4, 4, O, N*th*tw] -> y [N, O, out_h, out_w]: A^T m A per tile (one GEMM with the 4x16
    matrix kron(A^T, A^T)), then one strided copy puts each tile's 2x2 outputs in place."""
    O = M.shape[2]
    th, tw = tiles
    Y = (_K_OUT.astype(M.dtype) @ M.reshape(16, -1)).reshape(2, 2, O, N, th, tw)
    y = np.empty((N, O, th, 2, tw, 2), dtype=M.dtype)
    y[...] = Y.transpose(3, 2, 4, 0, 5, 1)
    y = y.reshape(N, O, 2 * th, 2 * tw)
    if (2 * th, 2 * tw) != (out_h, out_w):
        y = np.ascontiguousarray(y[:, :, :out_h, :out_w])
    return y


def _transform_output_grad(g, tiles):
    """g [N, O, Ho, Wo] -> Z [4, 4, O, N*th*tw] = A g A^T per 2x2 block (the adjoint of
    _transform_output: one strided copy, one GEMM with kron(A^T, A^T)^T)."""
    N, O, Ho, Wo = g.shape
    th, tw = tiles
    if (2 * th, 2 * tw) != (Ho, Wo):
        g = np.pad(g, ((0, 0), (0, 0), (0, 2 * th - Ho), (0, 2 * tw - Wo)))
    blocks = np.ascontiguousarray(g.reshape(N, O, th, 2, tw, 2).transpose(3, 5, 1, 0, 2, 4)).reshape(4, -1)
    return (_K_OUT.T.astype(g.dtype) @ blocks).reshape(4, 4, O, N * th * tw)


def winograd_conv2d(x, w, padding):
    """Correlation of x [N, C, H, W] with w [O, C, 3, 3], stride 1 -> [N, O, Ho, Wo]."""
    N, C, H, W = x.shape
    O = w.shape[0]
    out_h, out_w = H + 2 * padding[0] - 2, W + 2 * padding[1] - 2
    tiles = _tile_counts(out_h, out_w)
    V = _transform_input(x, padding, tiles)
    U = _transform_weight(w)
    M = np.empty((4, 4, O, V.shape[-1]), dtype=np.result_type(x, w))
    for a in range(4):
        for b in range(4):
            np.matmul(U[a, b], V[a, b], out=M[a, b])
    return _transform_output(M, N, out_h, out_w, tiles)


def winograd_conv2d_input_grad(g, w, x_shape, padding):
    """The adjoint of winograd_conv2d in x: g [N, O, Ho, Wo] -> [N, C, H, W]. A stride-1
    correlation's adjoint is the correlation of g with the weights turned 180 degrees and
    in/out channels swapped, padded by 2 - p."""
    flipped = np.ascontiguousarray(w[:, :, ::-1, ::-1].transpose(1, 0, 2, 3))
    gx = winograd_conv2d(g, flipped, (2 - padding[0], 2 - padding[1]))
    assert gx.shape == tuple(x_shape), (gx.shape, x_shape)
    return gx


def winograd_conv2d_weight_grad(x, g, padding):
    """The adjoint of winograd_conv2d in w: (x [N, C, H, W], g [N, O, Ho, Wo]) -> [O, C, 3, 3]."""
    C, O = x.shape[1], g.shape[1]
    tiles = _tile_counts(*g.shape[2:])
    V = _transform_input(x, padding, tiles)
    Z = _transform_output_grad(g, tiles)
    dU = np.empty((4, 4, O, C), dtype=np.result_type(x, g))
    for a in range(4):
        for b in range(4):
            np.matmul(Z[a, b], V[a, b].T, out=dU[a, b])
    G = _G.astype(dU.dtype)
    return np.einsum("ar,aboc,bs->ocrs", G, dU, G, optimize=True)
