"""Differentiable ops, one file per kernel family (NumPy forward/backward and the CUDA launcher).

NCHW layout; each op follows the StyleGAN2-ADA op of the same name.
"""
