"""NumPy reference implementations: the math with no autograd, for chapters and exercises.

Forward functions return ``(y, cache)``; backward functions take the upstream gradient
and that cache and return ``(dx, dgamma, dbeta)``. One pair of generic functions does the
work (:func:`affine_norm_forward`, :func:`affine_norm_backward`); BatchNorm and
LayerNorm only choose the axes and the shape of gamma/beta.
"""

from __future__ import annotations

from typing import Sequence, Tuple

import numpy as np

__all__ = [
    "normalize",
    "affine_norm_forward",
    "affine_norm_backward",
    "batch_norm_forward",
    "batch_norm_backward",
    "layer_norm_forward",
    "layer_norm_backward",
]


def normalize(x: np.ndarray, axes: Sequence[int], eps: float = 1e-5):
    """Standardize over ``axes`` with the biased variance; returns ``(y, mean, var)`` (kept dims)."""
    axes = tuple(axes)
    mean = x.mean(axis=axes, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=axes, keepdims=True)
    return (x - mean) / np.sqrt(var + eps), mean, var


def _sum_to_shape(a: np.ndarray, shape: Tuple[int, ...]) -> np.ndarray:
    """Sum ``a`` over the axes along which an array of ``shape`` was broadcast."""
    axes = tuple(i for i, (n, s) in enumerate(zip(a.shape, shape)) if s == 1 and n != 1)
    return a.sum(axis=axes, keepdims=True)


def affine_norm_forward(x, gamma, beta, axes, eps=1e-5):
    """y = gamma * normalize(x, axes) + beta, with gamma/beta already broadcastable to x."""
    x_hat, mean, var = normalize(x, axes, eps)
    inv_std = 1.0 / np.sqrt(var + eps)
    return gamma * x_hat + beta, (x_hat, inv_std, gamma, tuple(axes))


def affine_norm_backward(dy, cache):
    """Closed form: dx = inv_std/m * (m*g - sum(g) - x_hat*sum(g*x_hat)), g = dy*gamma."""
    x_hat, inv_std, gamma, axes = cache
    m = x_hat.size // inv_std.size
    g = dy * gamma
    dx = inv_std / m * (m * g - g.sum(axis=axes, keepdims=True) - x_hat * (g * x_hat).sum(axis=axes, keepdims=True))
    dgamma = _sum_to_shape(dy * x_hat, np.shape(gamma))
    dbeta = _sum_to_shape(dy, np.shape(gamma))
    return dx, dgamma, dbeta


def _channel_shape(x: np.ndarray) -> Tuple[int, ...]:
    return (1, x.shape[1]) + (1,) * (x.ndim - 2)


def batch_norm_forward(x, gamma, beta, eps=1e-5):
    """Training-mode BatchNorm of ``(N, C, *)`` input; gamma, beta have shape (C,)."""
    shape = _channel_shape(x)
    axes = (0,) + tuple(range(2, x.ndim))
    return affine_norm_forward(x, gamma.reshape(shape), beta.reshape(shape), axes, eps)


def batch_norm_backward(dy, cache):
    """Gradients of :func:`batch_norm_forward`; dgamma, dbeta have shape (C,)."""
    dx, dgamma, dbeta = affine_norm_backward(dy, cache)
    return dx, dgamma.reshape(-1), dbeta.reshape(-1)


def layer_norm_forward(x, gamma, beta, eps=1e-5):
    """LayerNorm over the last ``gamma.ndim`` axes of x; gamma, beta have that trailing shape."""
    axes = tuple(range(x.ndim - gamma.ndim, x.ndim))
    # Pad gamma/beta with leading 1s to x's rank so the backward pass knows which axes to sum.
    shape = (1,) * (x.ndim - gamma.ndim) + gamma.shape
    return affine_norm_forward(x, gamma.reshape(shape), beta.reshape(shape), axes, eps)


def layer_norm_backward(dy, cache):
    """Gradients of :func:`layer_norm_forward`; dgamma, dbeta have gamma's shape."""
    dx, dgamma, dbeta = affine_norm_backward(dy, cache)
    x_hat, _, _, axes = cache
    gamma_shape = tuple(x_hat.shape[a] for a in axes)
    return dx, dgamma.reshape(gamma_shape), dbeta.reshape(gamma_shape)
