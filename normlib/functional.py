"""Normalization as one recipe.

Every normalization layer in this package is the same four steps:

1. choose the axes (``dims``) that share one set of statistics;
2. compute the mean and the (biased) variance over those axes;
3. standardize: subtract the mean, divide by ``sqrt(var + eps)``;
4. scale and shift with the learned ``weight`` (gamma) and ``bias`` (beta).

:func:`normalize` is the one core: ``dims`` is step 1, and it calls one small helper
per remaining step (``_moments``, ``_standardize``, ``_scale_shift``).
Each public function below calls it and only says which axes it uses and how its
parameters are shaped, with the signature and semantics of the matching function in
:mod:`torch.nn.functional`.

The layers call it through ``_normalize_layer`` (and BatchNorm through
:class:`BatchNormFunction`), which in eager mode runs the same four steps in an autograd
Function written for speed: fewer passes over memory, steps 3 and 4 in place, a
closed-form backward pass ("the fast path" below; Chapter 11 measures it). On a CPU with
Numba installed, LayerNorm, RMSNorm, GroupNorm and InstanceNorm run that Function as
compiled loops, one per statistic (:mod:`normlib.kernels`). Under ``torch.compile`` and
``torch.func`` they run :func:`normalize` itself.

Half-precision inputs (float16, bfloat16) are computed in float32 and returned in
the input's dtype, as PyTorch does. Nothing here calls PyTorch's own normalization
kernels: they serve as the reference in the tests, never as the implementation.
"""

from __future__ import annotations

import math
import numbers
from typing import NamedTuple, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor
from torch.utils.checkpoint import checkpoint

from . import kernels as _kernels

__all__ = [
    "normalize",
    "norm_dims",
    "batch_norm",
    "batch_norm_backward",
    "BatchNormFunction",
    "layer_norm",
    "group_norm",
    "instance_norm",
    "rms_norm",
    "adain",
]

Dims = Union[int, Sequence[int]]


# --------------------------------------------------------------------------- helpers


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """Half-precision statistics lose too many digits: accumulate them in float32."""
    if dtype in (torch.float16, torch.bfloat16):
        return torch.float32
    return dtype


def _check_floating(x: Tensor, where: str) -> None:
    if not x.is_floating_point():
        # PyTorch's type for this (its kernels are "not implemented" for integer dtypes).
        raise NotImplementedError(
            f'"{where}" not implemented for {x.dtype}: normalization needs a floating-point input'
        )


def _as_dims(dims: Dims, ndim: int) -> Tuple[int, ...]:
    """Turn ``dims`` into a sorted tuple of non-negative axes, rejecting bad ones."""
    if isinstance(dims, numbers.Integral):
        dims = (int(dims),)
    dims = tuple(int(d) for d in dims)
    if not dims:
        raise ValueError("normalize: dims must name at least one dimension")
    out = []
    for d in dims:
        if not -ndim <= d < ndim:
            raise IndexError(
                f"normalize: dimension {d} is out of range for a {ndim}-D input "
                f"(expected to be in range of [{-ndim}, {ndim - 1}])"
            )
        out.append(d % ndim)
    if len(set(out)) != len(out):
        raise ValueError(f"normalize: dims {dims} name the same dimension twice")
    return tuple(sorted(out))


def _channel_shape(x: Tensor) -> Tuple[int, ...]:
    """Shape that broadcasts a per-channel vector over a channels-first tensor."""
    return (1, x.shape[1]) + (1,) * (x.dim() - 2)


# The device types on which torch.autocast runs layer_norm and group_norm in float32 (PyTorch's AMP
# op reference, "CUDA ops that can autocast to float32"); on the CPU it leaves them in the input's
# dtype. torch's policy, mirrored: the one device name in normlib outside normlib.device().
_AUTOCAST_FLOAT32_DEVICES = frozenset({"cuda"})


def _autocast_on(device_type: str) -> bool:
    try:
        return torch.is_autocast_enabled(device_type)
    except TypeError:  # torch < 2.4 asks the CPU's flag by its own name, the GPU's by default
        return torch.is_autocast_cpu_enabled() if device_type == "cpu" else torch.is_autocast_enabled()


def _autocast_float32(input: Tensor, *tensors: Optional[Tensor]):
    """Inside torch.autocast, cast ``layer_norm``'s and ``group_norm``'s half-precision tensors to
    float32 where autocast does (see ``_AUTOCAST_FLOAT32_DEVICES``), so the output dtype is torch's."""
    if input.device.type not in _AUTOCAST_FLOAT32_DEVICES or not _autocast_on(input.device.type):
        return (input,) + tensors
    up = lambda t: t.float() if t is not None and t.dtype in (torch.float16, torch.bfloat16) else t  # noqa: E731
    return (up(input),) + tuple(up(t) for t in tensors)


def _channels_last_format(x: Tensor) -> Optional[torch.memory_format]:
    """``torch.channels_last(_3d)`` when x is stored channels-last (and not also contiguous), else None.

    For such an input torch's BatchNorm and GroupNorm return a channels-last output, and so do ours.
    """
    fmt = {4: torch.channels_last, 5: torch.channels_last_3d}.get(x.dim())
    if fmt is not None and not x.is_contiguous() and x.is_contiguous(memory_format=fmt):
        return fmt
    return None


def _reshape(t: Optional[Tensor], shape) -> Optional[Tensor]:
    return None if t is None else t.reshape(shape)


def _check_channel_vectors(input: Tensor, **vectors: Optional[Tensor]) -> None:
    """Per-channel tensors (running stats, gamma, beta) must hold one value per input channel."""
    num_channels = input.shape[1]
    for name, t in vectors.items():
        if t is not None and t.numel() != num_channels:
            raise RuntimeError(
                f"{name} should contain {num_channels} elements not {t.numel()} "
                f"(one per channel: the input has {num_channels} channels in dim 1)"
            )


# --------------------------------------------------------------------------- the core


# The four functions below are shown on the page of chapter 1 (viz.show_source):
# keep their lines within 79 characters, the width of a code box in the book.
def _moments(x: Tensor, dims: Dims, center: bool = True):
    """Step 2: mean and biased variance over ``dims``.

    Uncentered (``center=False``): no mean; the mean square for the variance.
    """
    dims = _as_dims(dims, x.dim())
    x = x.to(_compute_dtype(x.dtype))
    if not center:
        return x, None, x.square().mean(dim=dims, keepdim=True)
    mean = x.mean(dim=dims, keepdim=True)
    # Two passes (mean first, then squared deviations) avoid the cancellation
    # of E[x^2] - E[x]^2. Dividing by the count m, not m - 1, is the *biased*
    # variance.
    var = (x - mean).square().mean(dim=dims, keepdim=True)
    return x, mean, var


def _standardize(
    x: Tensor,
    mean: Optional[Tensor],
    var: Tensor,
    eps: float,
) -> Tensor:
    """Step 3: (x - mean) / sqrt(var + eps), in the statistics' dtype.

    Without a mean (uncentered): x / sqrt(var + eps).
    """
    x = x.to(var.dtype)
    if mean is not None:
        x = x - mean
    return x * torch.rsqrt(var + eps)


def _scale_shift(
    y: Tensor,
    weight: Optional[Tensor],
    bias: Optional[Tensor],
) -> Tensor:
    """Step 4: y * gamma + beta; gamma and beta already broadcast against y."""
    if weight is not None:
        y = y * weight.to(y.dtype)
    if bias is not None:
        y = y + bias.to(y.dtype)
    return y


def normalize(
    x: Tensor,
    dims: Dims,
    eps: float = 1e-5,
    *,
    weight: Optional[Tensor] = None,
    bias: Optional[Tensor] = None,
    center: bool = True,
) -> Tuple[Tensor, Optional[Tensor], Tensor]:
    """The recipe: standardize ``x`` over ``dims``, then scale by ``weight``
    and shift by ``bias``.

    Returns ``(y, mean, var)``. ``y`` has the shape and dtype of ``x``;
    ``mean`` and ``var`` keep the reduced dimensions (size 1), so
    ``mean.numel()`` is the number of statistics computed and they broadcast
    back against ``x``. The variance is the biased one (divide by the number
    of values m), as PyTorch's layers use when they normalize with the
    statistics of their input. ``weight`` (gamma) and ``bias`` (beta) are
    optional and must broadcast against ``x``. With ``center=False`` nothing
    is subtracted, ``mean`` is ``None`` and ``var`` is the mean square (the
    statistic RMSNorm uses).

    >>> x = torch.randn(8, 3, 4, 4)
    >>> y, mean, var = normalize(x, dims=(0, 2, 3))  # as BatchNorm2d
    >>> mean.shape
    torch.Size([1, 3, 1, 1])
    """
    _check_floating(x, "normalize")
    # Step 1 is the choice of dims.
    xc, mean, var = _moments(x, dims, center)  # step 2
    y = _standardize(xc, mean, var, eps)  # step 3
    y = _scale_shift(y, weight, bias)  # step 4
    return y.to(x.dtype), mean, var


_METHODS = ("bn", "ln", "in", "gn")


def norm_dims(method: str, ndim: int) -> Tuple[int, ...]:
    """The axes each method reduces over, for a channels-first input of rank ``ndim``.

    ``"bn"``: every axis but the channels, ``(0, 2, 3, ...)``; ``"ln"``: every axis but
    the batch, ``(1, 2, ...)``; ``"in"``: the spatial axes ``(2, 3, ...)``; ``"gn"``:
    the axes ``(2, 3, ...)`` of the grouped view ``(N, G, C // G, *spatial)``, whose
    rank is ``ndim + 1``.
    """
    if method not in _METHODS:
        raise ValueError(f"norm_dims: unknown method {method!r}; expected one of {_METHODS}")
    if ndim < 2:
        raise ValueError(f"norm_dims: expected a channels-first input of rank >= 2, got rank {ndim}")
    if method == "bn":
        return (0,) + tuple(range(2, ndim))
    if method == "ln":
        return tuple(range(1, ndim))
    if method == "in":
        if ndim < 3:
            raise ValueError("norm_dims: InstanceNorm needs at least one spatial dim (rank >= 3)")
        return tuple(range(2, ndim))
    return tuple(range(2, ndim + 1))


# --------------------------------------------------------------------------- the fast path
#
# The layers compute the same four steps, in eager mode through one autograd Function written
# for speed (Chapter 11, "Normalization at speed"). Normalization is memory-bound: every pass
# over a full-size tensor costs about as much as copying it, and every fresh full-size buffer
# costs more than rewriting one in place. So the Function
#   - makes the passes eager PyTorch cannot avoid and no others: a mean, one write of the
#     deviations x - mean into the buffer that becomes the output, one read for the variance,
#     then steps 3 and 4 in place on that buffer;
#   - folds gamma into 1/sqrt(var + eps) where both are per channel (one small multiply);
#   - differentiates in closed form, with one full-size buffer, instead of replaying each step.
# On a CPU where Numba is installed, the Function's forward and backward for LayerNorm,
# RMSNorm, GroupNorm and InstanceNorm (float32, float64) instead run compiled loops, one
# iteration per statistic, that keep each row or group in the cache: normlib.kernels.
# Under torch.compile the compiler fuses the readable `normalize` by itself, and torch.func
# transforms need out-of-place ops, so there the layers call `normalize` directly.


def _fused_allowed() -> bool:
    """The hand-fused Function runs in plain eager mode; the compiler and torch.func get ``normalize``."""
    return not (torch.compiler.is_compiling() or torch._C._are_functorch_transforms_active())


class _View(NamedTuple):
    """How the fused path sees an input: a contiguous-order view ``(A, B, K, S)``.

    One statistic per ``(a, b)`` over ``(K, S)``, or per ``b`` over ``(A, K, S)`` when
    ``over_batch`` (BatchNorm). gamma/beta are either per channel, shaped ``(1, B or 1, K, 1)``,
    or per element of the last axis, shaped ``(1, 1, 1, S)`` (LayerNorm, RMSNorm).
    """

    shape: Tuple[int, int, int, int]
    over_batch: bool
    per_element: bool
    affine_shape: Tuple[int, int, int, int]


def _fused_view(shape, dims: Tuple[int, ...], affine: Optional[Tensor], other: Optional[Tensor]) -> Optional[_View]:
    """The (A, B, K, S) view for normalizing ``shape`` over ``dims``, or None (then the plain path runs).

    Supported: ``dims`` a trailing block of axes (LN, IN, GN's grouped view, RMSNorm), or that
    block plus axis 0 (BN); gamma/beta of one of the two shapes described in :class:`_View`.
    """
    n = len(shape)
    over_batch = n >= 2 and dims[0] == 0 and dims[1:] == tuple(range(2, n))
    start = 2 if over_batch else (dims[0] if dims == tuple(range(dims[0], n)) else -1)
    if start < 0:
        return None
    lead = tuple(shape[1:start]) if start >= 1 else ()
    trail = tuple(shape[start:])
    A = shape[0] if start >= 1 else 1
    B, T = math.prod(lead), math.prod(trail)
    if affine is None:
        return _View((A, B, 1, T), over_batch, False, (1, 1, 1, 1))
    if other is not None and other.shape != affine.shape:
        return None
    if affine.dim() > n:
        return None
    w = (1,) * (n - affine.dim()) + tuple(affine.shape)
    w_lead, w_trail = w[1:start] if start >= 1 else (), w[start:]
    if start >= 1 and w[0] != 1:
        return None
    if all(s == 1 for s in w_lead) and w_trail == trail and not over_batch:
        return _View((A * B, 1, 1, T), False, True, (1, 1, 1, T))  # per element of the last axes
    if w_lead == lead:
        Bw = B
    elif all(s == 1 for s in w_lead):
        Bw = 1
    else:
        return None
    # gamma may vary along the first j trailing axes (GN's channels in a group), then is constant
    j = len(trail)
    while j > 0 and w_trail[j - 1] == 1:
        j -= 1
    if w_trail[:j] != trail[:j]:
        return None
    K = math.prod(trail[:j])
    return _View((A, B, K, T // K if K else 0), over_batch, False, (1, Bw, K, 1))


def _kernel_statistics(view: _View) -> int:
    """How many statistics :mod:`normlib.kernels` computes for ``view`` (0: it does not take it;
    BatchNorm's statistics over the batch stay with PyTorch operations, already faster)."""
    A, B, K, S = view.shape
    return 0 if view.over_batch else A * B


def _kernel_forward(x: Tensor, view: _View, weight, bias, eps: float, center: bool):
    """``_fused_forward`` by the compiled loops of :mod:`normlib.kernels`: one pass per statistic."""
    A, B, K, S = view.shape
    out = torch.empty(x.shape, dtype=x.dtype)  # in x's shape: not a view (see _fused_forward)
    if view.per_element:  # rows of S values, gamma/beta per value (LayerNorm, RMSNorm)
        mean, var = _kernels.rows_forward(x.reshape(A * B, K * S), weight, bias, eps, center, out)
    else:
        mean, var = _kernels.groups_forward(
            x.reshape(A * B, K, S), weight, bias, B, view.affine_shape[1], eps, center, out
        )
    return out, mean.reshape(A, B, 1, 1), var.reshape(A, B, 1, 1)


def _kernel_backward(
    dy: Tensor, x: Tensor, view: _View, weight, mean, var, eps: float, center, needs_weight, needs_bias
):
    """``_fused_backward`` by the compiled loops of :mod:`normlib.kernels`."""
    A, B, K, S = view.shape
    grad_input = torch.empty(x.shape, dtype=x.dtype)
    needs_weight = needs_weight and weight is not None
    if view.per_element:
        grad_weight, grad_bias = _kernels.rows_backward(
            dy, x.reshape(A * B, S), weight, mean, var, eps, center, needs_weight, needs_bias, grad_input
        )
    else:
        rows = view.affine_shape[1]
        dots, dy_sums = _kernels.groups_backward(
            dy.reshape(A * B, K, S), x.reshape(A * B, K, S), weight, B, rows, mean, var, eps, center, grad_input
        )
        inv_std = torch.rsqrt(var.to(torch.float64).reshape(A, B, 1) + eps)
        # per channel: sums over the samples (and over the groups when gamma is shared by them)
        grad_weight = (dots.reshape(A, B, K) * inv_std).sum(0).sum_to_size(rows, K) if needs_weight else None
        grad_bias = dy_sums.reshape(A, B, K).sum(0).sum_to_size(rows, K) if needs_bias else None
    if grad_weight is not None:
        grad_weight = grad_weight.to(weight.dtype)
    return grad_input, grad_weight, grad_bias


def _fused_forward(x: Tensor, view: _View, weight: Optional[Tensor], bias: Optional[Tensor], eps: float, center: bool):
    """Steps 2-4 with at most five full-size operations (8 tensor-sized reads and writes with
    gamma and beta, fewer without them; PyTorch's fused kernel needs 2); returns (y, mean, var),
    the statistics shaped (A or 1, B, 1, 1)."""
    if _kernels.usable(x, _kernel_statistics(view)):
        return _kernel_forward(x, view, weight, bias, eps, center)
    A, B, K, S = view.shape
    dtype = _compute_dtype(x.dtype)
    xv = x.reshape(view.shape)
    stat_dims = (0, 2, 3) if view.over_batch else (2, 3)
    m = K * S * (A if view.over_batch else 1)  # values per statistic
    # The output is allocated in x's own shape and the passes below write into a view of it:
    # the Function must return a tensor that is not a view of one made inside it, or autograd
    # forbids in-place ops on the result (ReLU(inplace=True), out += identity).
    out = torch.empty(x.shape, dtype=dtype, device=x.device)
    y = out.view(view.shape)
    # Step 2. Pass 1: the mean. Pass 2: the deviations, written once, into the buffer that
    # becomes y. Pass 3: their sum of squares (a vector norm over the contiguous last axes is
    # one fast read). Two passes over x, so no cancellation (Chapter 11). torch.var_mean is
    # as safe (Welford's update inside PyTorch), but on the CPU it applies that update one
    # value at a time: 5-50x slower than these vectorized passes (2-core AMD EPYC, torch 2.13,
    # depending on the shape; Chapter 11 measures it on the reader's machine).
    if center:
        mean = xv.mean(dim=stat_dims, keepdim=True, dtype=dtype)
        torch.sub(xv, mean, out=y)  # in the computation dtype
        deviations = y
    else:
        mean = None
        deviations = xv
    if view.over_batch and K * S == 1:  # (M, C) rows, as BatchNorm1d sees them: one norm per column
        square_sums = torch.linalg.vector_norm(deviations, dim=0, keepdim=True, dtype=dtype)
    else:
        square_sums = torch.linalg.vector_norm(deviations.reshape(A, B, 1, K * S), dim=-1, keepdim=True, dtype=dtype)
    square_sums = square_sums.square_()
    if view.over_batch:
        square_sums = square_sums.sum(dim=0, keepdim=True)
    var = square_sums.div_(m)  # the biased variance: divide by m
    inv_std = torch.rsqrt(var + eps)
    # Steps 3 and 4, in place. Per-channel gamma folds into 1/std (a few numbers, not a pass).
    scale = inv_std
    if weight is not None and not view.per_element:
        scale = inv_std * weight.reshape(view.affine_shape).to(dtype)
    if center:
        y.mul_(scale)
    else:
        torch.mul(xv, scale, out=y)  # RMSNorm: the first write of the output
    if view.per_element and weight is not None:
        w = weight.reshape(view.affine_shape).to(dtype)
        if bias is not None:
            torch.addcmul(bias.reshape(view.affine_shape).to(dtype), y, w, out=y)
        else:
            y.mul_(w)
    elif bias is not None:
        y.add_(bias.reshape(view.affine_shape).to(dtype))
    if mean is None:
        mean = torch.zeros_like(var)
    return (out if out.dtype == x.dtype else out.to(x.dtype)), mean, var


def _fused_backward(
    dy: Tensor,
    x: Tensor,
    view: _View,
    weight: Optional[Tensor],
    mean: Tensor,
    var: Tensor,
    eps: float,
    center: bool,
    needs_weight: bool,
    needs_bias: bool,
):
    """Closed-form gradients with one full-size buffer (LayerNorm, RMSNorm) or two (per channel).
    With g = dy * gamma, x_hat the standardized x and sums over each statistic's m values::

        dx = (g - sum(g) / m - x_hat * sum(g * x_hat) / m) / std
        dgamma = sum over the batch-like axes of dy * x_hat
        dbeta = the same sum of dy

    (RMSNorm has no sum(g) term.)
    """
    if _kernels.usable(x, _kernel_statistics(view)):
        return _kernel_backward(dy, x, view, weight, mean, var, eps, center, needs_weight, needs_bias)
    A, B, K, S = view.shape
    dtype = _compute_dtype(x.dtype)
    m = K * S * (A if view.over_batch else 1)
    inv_std = torch.rsqrt(var + eps)
    grad_weight = grad_bias = None
    if view.per_element:  # rows of S values, one statistic per row: work on (rows, S) matrices
        xv, dyv = x.reshape(-1, S), dy.reshape(-1, S).to(dtype)
        inv_std, mean = inv_std.reshape(-1, 1), mean.reshape(-1, 1)
        w = None if weight is None else weight.reshape(S).to(dtype)
        # The one buffer: first dy * (x - mean), summed into the statistics below; then dx.
        buffer = xv - mean if center else xv.to(dtype, copy=True)
        buffer.mul_(dyv)
        if needs_weight and w is not None:  # sum over rows of dy * x_hat, as a vector-matrix product
            grad_weight = inv_std.reshape(1, -1) @ buffer
        dot = (buffer @ w if w is not None else buffer.sum(1)).unsqueeze(1)  # sum(g * (x - mean))
        if needs_bias:
            grad_bias = dyv.sum(0)
        g = torch.mul(dyv, w, out=buffer) if w is not None else buffer.copy_(dyv)
        g_sum = g.sum(1, keepdim=True)
        g.mul_(inv_std)  # the buffer now holds g / std
        # dx = g/std + k * x + c, assembled from x itself (one pass fewer), as PyTorch's CPU
        # LayerNorm kernel does: x * k and mean * k round like x itself does in its dtype, an
        # error of about u * |mean| / std with u the unit roundoff. The variance is another
        # matter: from E[x^2] - E[x]^2 its error would grow like u * (mean / std)^2 (Chapter 11).
        k = dot.mul_(inv_std.pow(3)).mul_(-1.0 / m)
        g.addcmul_(xv.to(dtype), k)
        if center:
            g.sub_(torch.addcmul(g_sum.mul_(inv_std / m), k, mean))
    else:
        # Per channel (BatchNorm, InstanceNorm, GroupNorm): the deviations x - mean stay for
        # dx = k * (x - mean) + dy * gamma / std + c, as in PyTorch's BatchNorm kernel. Built from
        # x itself, dx would lose about u * |mean| / std to cancellation (u the unit roundoff):
        # with few values per statistic far from 0, up to hundreds of times torch's error.
        xv, dyv = x.reshape(view.shape), dy.reshape(view.shape).to(dtype)
        w = None if weight is None else weight.reshape(view.affine_shape).to(dtype)
        deviations = xv - mean if center else xv
        # Sums over S (BatchNorm: over A and S) of dy * (x - mean) and of dy, kept (A or 1, B, K, 1).
        # The products only feed the sums: they go through a small scratch buffer, a block of
        # samples at a time, that stays in the processor's cache, not a full-size tensor.
        per_channel_dot = _sums_of_products(deviations, dyv, view.over_batch)
        per_channel_dy = dyv.sum((0, 3) if view.over_batch else 3, keepdim=True)
        if needs_weight and w is not None:
            grad_weight = (per_channel_dot * inv_std).sum(0, keepdim=True)
            if grad_weight.shape != view.affine_shape:  # gamma shared along B
                grad_weight = grad_weight.sum_to_size(view.affine_shape)
        if needs_bias:
            grad_bias = per_channel_dy.sum(0, keepdim=True)
            if grad_bias.shape != view.affine_shape:
                grad_bias = grad_bias.sum_to_size(view.affine_shape)
        if w is not None:  # per statistic: sum(g * (x - mean)) and sum(g), g = dy * gamma
            per_channel_dot, per_channel_dy = per_channel_dot * w, per_channel_dy * w
        k = per_channel_dot.sum(2, keepdim=True).mul_(inv_std.pow(3)).mul_(-1.0 / m)
        scale = inv_std if w is None else inv_std * w  # gamma / std, per channel
        if center:
            g = deviations.mul_(k)
            g.addcmul_(dyv, scale)
            g.sub_(per_channel_dy.sum(2, keepdim=True).mul_(inv_std / m))
        else:
            g = torch.mul(dyv, scale)
            g.addcmul_(xv.to(dtype), k)
    grad_input = g.to(x.dtype).reshape(x.shape)
    if grad_weight is not None:
        grad_weight = grad_weight.to(weight.dtype)
    return grad_input, grad_weight, grad_bias


# Elements per block of _sums_of_products: 1 MiB of float32, within a core's L2 cache.
_SCRATCH_ELEMENTS = 1 << 18


def _sums_of_products(a: Tensor, b: Tensor, over_batch: bool) -> Tensor:
    """``(a * b).sum(3, keepdim=True)`` for (A, B, K, S) tensors (``.sum((0, 3), keepdim=True)``
    when ``over_batch``), without a full-size product: blocks of samples share one small buffer."""
    dims = (0, 3) if over_batch else 3
    A = a.shape[0]
    step = max(1, _SCRATCH_ELEMENTS // max(1, a.numel() // max(A, 1)))
    if step >= A:
        return (a * b).sum(dims, keepdim=True)
    scratch = torch.empty((step,) + tuple(a.shape[1:]), dtype=torch.result_type(a, b), device=a.device)
    sums = []
    for start in range(0, A, step):
        stop = min(start + step, A)
        block = torch.mul(a[start:stop], b[start:stop], out=scratch[: stop - start])
        sums.append(block.sum(dims, keepdim=True))
    return torch.cat(sums).sum(0, keepdim=True) if over_batch else torch.cat(sums)


def _plain_backward(dy: Tensor, x: Tensor, view: _View, weight: Optional[Tensor], eps: float, center: bool):
    """The same closed form in plain, out-of-place tensor ops, with the statistics recomputed from x:
    differentiable again (second derivatives) and usable under torch.func transforms."""
    dims = (0, 2, 3) if view.over_batch else (2, 3)
    xv = x.reshape(view.shape)
    xc, mean, var = _moments(xv, dims, center)
    inv_std = torch.rsqrt(var + eps)
    x_hat = ((xc - mean) if center else xc) * inv_std
    dyv = dy.reshape(view.shape).to(x_hat.dtype)
    g = dyv if weight is None else dyv * weight.reshape(view.affine_shape).to(x_hat.dtype)
    grad_input = g - x_hat * (g * x_hat).mean(dim=dims, keepdim=True)
    if center:
        grad_input = grad_input - g.mean(dim=dims, keepdim=True)
    grad_input = (grad_input * inv_std).to(x.dtype).reshape(x.shape)
    grad_weight = None if weight is None else (dyv * x_hat).sum_to_size(view.affine_shape).to(weight.dtype)
    grad_bias = dyv.sum_to_size(view.affine_shape)
    return grad_input, grad_weight, grad_bias


def _backward(ctx, dy: Tensor, x: Tensor, view: _View, weight: Optional[Tensor], mean, var, center: bool):
    """The backward pass of both Functions below: closed form with one buffer in plain eager mode;
    under create_graph=True or torch.func, plain ops with the statistics recomputed from x, so
    that autograd also sees how they depend on x and second derivatives are exact."""
    if _autocast_on(dy.device.type):
        # backward() called inside an autocast region: keep the float32 statistics out of it
        # (it would run the matrix products below in half precision).
        with torch.autocast(dy.device.type, enabled=False):
            return _backward(ctx, dy, x, view, weight, mean, var, center)
    if torch.is_grad_enabled() or not _fused_allowed():
        return _plain_backward(dy, x, view, weight, ctx.eps, center)
    needs_weight, needs_bias = ctx.needs_input_grad[1], ctx.needs_input_grad[2]
    return _fused_backward(dy, x, view, weight, mean, var, ctx.eps, center, needs_weight, needs_bias)


def _save_for_backward(ctx, x: Tensor, weight: Optional[Tensor], bias: Optional[Tensor], eps: float, output) -> None:
    """What both Functions below keep for their backward pass: x, gamma and the statistics (the
    outputs mean and var, not differentiable), eps, and the dtype the bias gradient returns in."""
    _, mean, var = output
    ctx.eps = eps
    ctx.bias_dtype = None if bias is None else bias.dtype
    ctx.save_for_backward(x, weight, mean, var)
    ctx.mark_non_differentiable(mean, var)


class _NormalizeFunction(torch.autograd.Function):
    """``normalize`` for the layers: fused forward and closed-form backward (see above).

    ``apply(x, weight, bias, eps, view, center)`` returns ``(y, mean, var)``: ``y`` in x's
    shape, the statistics on the view (not differentiable). ``x``, ``weight`` and ``bias`` come
    in their own shapes, which reshape to ``view.shape`` and ``view.affine_shape``: the
    reshapes happen in here, so autograd records no view operations around the Function.
    """

    generate_vmap_rule = True

    @staticmethod
    def forward(x: Tensor, weight: Optional[Tensor], bias: Optional[Tensor], eps: float, view: _View, center: bool):
        if _fused_allowed():
            return _fused_forward(x, view, weight, bias, eps, center)
        dims = (0, 2, 3) if view.over_batch else (2, 3)
        weight, bias = _reshape(weight, view.affine_shape), _reshape(bias, view.affine_shape)
        y, mean, var = normalize(x.reshape(view.shape), dims, eps, weight=weight, bias=bias, center=center)
        return y.reshape(x.shape), (torch.zeros_like(var) if mean is None else mean), var

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, weight, bias, eps, view, center = inputs
        ctx.view, ctx.center = view, center
        ctx.bias_shape = None if bias is None else bias.shape
        _save_for_backward(ctx, x, weight, bias, eps, output)

    @staticmethod
    def backward(ctx, grad_output, _grad_mean, _grad_var):
        x, weight, mean, var = ctx.saved_tensors
        grad_input, grad_weight, grad_bias = _backward(ctx, grad_output, x, ctx.view, weight, mean, var, ctx.center)
        if grad_weight is not None:
            grad_weight = grad_weight.reshape(weight.shape)
        if grad_bias is not None and ctx.bias_dtype is not None:
            grad_bias = grad_bias.reshape(ctx.bias_shape).to(ctx.bias_dtype)
        else:
            grad_bias = None
        return grad_input, grad_weight, grad_bias, None, None, None


# Function.apply binds its arguments to forward's signature with inspect on every call (for
# torch.func); outside torch.func transforms that costs more than a small layer's arithmetic.
# The fused path runs only there (_fused_allowed), so it calls the C++ apply directly.
_C_APPLY = getattr(torch._C, "_FunctionBase", object).__dict__.get("apply")


def _apply(function, *args):
    if _C_APPLY is None or torch._C._are_functorch_transforms_active():
        return function.apply(*args)
    return _C_APPLY.__get__(None, function)(*args)


def _run_fused(x: Tensor, view: _View, eps: float, weight: Optional[Tensor], bias: Optional[Tensor], center: bool):
    """The layers' eager path: ``(y, mean, var)`` of the fused Function on ``x`` seen as ``view``
    (y in x's shape, the statistics on the view), or None where it does not apply (under the
    compiler or torch.func, or for an empty input): then the caller runs :func:`normalize`."""
    if x.numel() == 0 or not _fused_allowed():
        return None
    return _apply(_NormalizeFunction, x, weight, bias, eps, view, center)


def _normalize_layer(
    x: Tensor,
    dims: Tuple[int, ...],
    eps: float,
    weight: Optional[Tensor] = None,
    bias: Optional[Tensor] = None,
    center: bool = True,
):
    """What LayerNorm, GroupNorm, InstanceNorm and RMSNorm call: ``normalize(x, dims, eps,
    weight=..., bias=...)`` with the same ``(y, mean, var)``, run by the fused Function in eager
    mode when ``dims`` and gamma/beta have a shape it handles, else by ``normalize`` itself."""
    dims = _as_dims(dims, x.dim())
    view = _fused_view(
        tuple(x.shape), dims, weight if weight is not None else bias, bias if weight is not None else None
    )
    if torch.compiler.is_compiling() and torch.is_grad_enabled():
        # Under the compiler, keep only the inputs for the backward pass and recompute the
        # statistics there (where x is read anyway): saved statistics would be extra outputs
        # of the forward kernel, and the CPU compiler then splits its one pass per row in three.
        return checkpoint(normalize, x, dims, eps, weight=weight, bias=bias, center=center, use_reentrant=False)
    if view is None or not _fused_allowed():
        return normalize(x, dims, eps, weight=weight, bias=bias, center=center)
    y, mean, var = _apply(_NormalizeFunction, x, weight, bias, eps, view, center)
    keepdim = tuple(1 if d in dims else s for d, s in enumerate(x.shape))
    return y, (mean.reshape(keepdim) if center else None), var.reshape(keepdim)


# --------------------------------------------------------------------------- BatchNorm


def batch_norm_backward(
    grad_output: Tensor,
    x_hat: Tensor,
    inv_std: Tensor,
    weight: Optional[Tensor],
    dims: Tuple[int, ...],
) -> Tuple[Tensor, Optional[Tensor], Tensor]:
    """Closed-form gradients of batch normalization in training mode.

    With m values per statistic, x_hat = (x - mu) * inv_std and y = gamma * x_hat + beta::

        dbeta  = sum(dy)
        dgamma = sum(dy * x_hat)
        dx     = gamma * inv_std / m
                 * (m * dy - sum(dy) - x_hat * sum(dy * x_hat))

    where every sum runs over ``dims``. ``x_hat`` and ``inv_std`` are those of the
    forward pass (inv_std keeps the reduced dims). Returns ``(dx, dweight, dbias)``
    in the dtype of ``x_hat``; ``dweight`` is ``None`` when ``weight`` is.
    """
    dy = grad_output.to(x_hat.dtype)  # half-precision gradients are summed in float32
    m = x_hat.numel() // inv_std.numel()
    sum_dy = dy.sum(dim=dims, keepdim=True)
    sum_dy_xhat = (dy * x_hat).sum(dim=dims, keepdim=True)
    scale = inv_std if weight is None else inv_std * weight.reshape(inv_std.shape).to(x_hat.dtype)
    grad_input = scale / m * (m * dy - sum_dy - x_hat * sum_dy_xhat)
    grad_weight = None if weight is None else sum_dy_xhat.reshape(weight.shape)
    return grad_input, grad_weight, sum_dy.flatten()


def _batch_view(x: Tensor) -> _View:
    """BatchNorm's view of (N, C, *spatial): one statistic per channel over (N, spatial)."""
    return _View((x.shape[0], x.shape[1], 1, math.prod(x.shape[2:])), True, False, (1, x.shape[1], 1, 1))


class BatchNormFunction(torch.autograd.Function):
    """Training-mode batch norm with the backward pass written out in closed form.

    ``BatchNormFunction.apply(x, weight, bias, eps)`` returns ``(y, mean, var)``;
    mean and var are the batch statistics (shape ``(C,)``, not differentiable).
    The forward pass is :func:`normalize` over ``(0, 2, 3, ...)``, fused as described in
    "the fast path" above; the backward pass is the closed form of :func:`batch_norm_backward`
    with one full-size buffer. Under ``create_graph=True`` the backward pass recomputes the
    statistics from x in plain differentiable ops, so second derivatives are exact, and
    ``torch.func`` transforms work (``setup_context`` and a generated vmap rule).
    """

    generate_vmap_rule = True

    @staticmethod
    def forward(x: Tensor, weight: Optional[Tensor], bias: Optional[Tensor], eps: float):
        view = _batch_view(x)
        y, mean, var = _NormalizeFunction.forward(x, weight, bias, eps, view, True)
        return y, mean.flatten(), var.flatten()

    @staticmethod
    def setup_context(ctx, inputs, output):
        _save_for_backward(ctx, *inputs, output)

    @staticmethod
    def backward(ctx, grad_output, _grad_mean, _grad_var):
        x, weight, mean, var = ctx.saved_tensors
        view = _batch_view(x)
        stat_shape = (1, view.shape[1], 1, 1)
        grad_input, grad_weight, grad_bias = _backward(
            ctx, grad_output, x, view, weight, mean.reshape(stat_shape), var.reshape(stat_shape), True
        )
        if grad_weight is not None:  # in gamma's dtype, the view's shape
            grad_weight = grad_weight.reshape(weight.shape)
        grad_bias = None if grad_bias is None or ctx.bias_dtype is None else grad_bias.reshape(-1).to(ctx.bias_dtype)
        return grad_input, grad_weight, grad_bias, None


def _check_batch_norm_eps(input: Tensor, training: bool, eps: float) -> None:
    """torch.nn.functional.batch_norm's own argument checks, in torch's order."""
    if training:
        _verify_batch_size(input.size())
    if training and eps <= 0.0:  # a constant channel would divide by sqrt(0)
        raise ValueError(f"batch_norm eps must be positive during training, but got {eps}")
    if eps < 0.0:
        raise ValueError(f"batch_norm eps must be non-negative, but got {eps}")


def _verify_batch_size(size: torch.Size) -> None:
    values_per_channel = size[0] * math.prod(size[2:])
    if values_per_channel == 1:
        raise ValueError(
            f"Expected more than 1 value per channel when training, got input size {size}: "
            "the batch variance of a single value is 0, so training-mode BatchNorm would normalize it "
            "to 0 and output beta alone"
        )


@torch.no_grad()
def _update_running_stats(
    running_mean: Optional[Tensor],
    running_var: Optional[Tensor],
    batch_mean: Tensor,
    batch_var: Tensor,
    values_per_stat: int,
    momentum: float,
) -> None:
    """PyTorch's convention: running = (1 - momentum) * running + momentum * batch.

    ``momentum`` weighs the *new* value (Keras's momentum weighs the old one). The
    stored variance is the unbiased one: batch_var * m / (m - 1).
    """
    if running_mean is not None:
        running_mean.mul_(1 - momentum).add_(batch_mean.to(running_mean.dtype), alpha=momentum)
    if running_var is not None:
        unbiased = batch_var * (values_per_stat / max(values_per_stat - 1, 1))
        running_var.mul_(1 - momentum).add_(unbiased.to(running_var.dtype), alpha=momentum)


def _normalize_with_running_stats(input, running_mean, running_var, weight, bias, eps) -> Tensor:
    """Inference: steps 3 and 4 with the stored per-channel statistics instead of the input's.

    Everything but x is a per-channel constant, so the two steps fold into one multiply-add,
    y = x * scale + shift with scale = gamma / sqrt(running_var + eps) and
    shift = beta - running_mean * scale: two passes over x instead of four.
    """
    shape = _channel_shape(input)
    dtype = _compute_dtype(input.dtype)
    scale = torch.rsqrt(running_var.reshape(shape).to(dtype) + eps)
    if weight is not None:
        scale = scale * weight.reshape(shape).to(dtype)
    shift = -running_mean.reshape(shape).to(dtype) * scale
    if bias is not None:
        shift = shift + bias.reshape(shape).to(dtype)
    y = input * scale
    y = y.add_(shift) if _fused_allowed() else y + shift
    return y.to(input.dtype)


def batch_norm(
    input: Tensor,
    running_mean: Optional[Tensor],
    running_var: Optional[Tensor],
    weight: Optional[Tensor] = None,
    bias: Optional[Tensor] = None,
    training: bool = False,
    momentum: float = 0.1,
    eps: float = 1e-5,
) -> Tensor:
    """Batch normalization: the core over every axis but the channels ``(0, 2, 3, ...)``.

    Same signature and semantics as :func:`torch.nn.functional.batch_norm`. In training,
    batch statistics normalize the input (biased variance) and, if given, the running
    statistics are updated in place (unbiased variance, PyTorch's momentum convention).
    Otherwise the running statistics normalize the input.
    """
    _check_batch_norm_eps(input, training, eps)
    _check_floating(input, "batch_norm")
    if input.dim() < 2:
        raise ValueError(f"batch_norm: expected an input of shape (N, C, *), got {input.dim()}D input")
    _check_channel_vectors(input, running_mean=running_mean, running_var=running_var, weight=weight, bias=bias)

    if training:
        _verify_batch_size(input.size())
        if _fused_allowed() and _channels_last_format(input) is not None:
            # Channels innermost in memory: the (N * spatial, C) matrix of rows, a view without a
            # copy, is BatchNorm1d's input; its output, viewed back, is channels-last like torch's.
            to_last = (0,) + tuple(range(2, input.dim())) + (1,)
            rows = input.permute(to_last)
            y, mean, var = _apply(BatchNormFunction, rows.reshape(-1, input.shape[1]), weight, bias, eps)
            y = y.reshape(rows.shape).permute(0, input.dim() - 1, *range(1, input.dim() - 1))
        elif _fused_allowed():
            y, mean, var = _apply(BatchNormFunction, input, weight, bias, eps)
        else:  # torch.compile, torch.func: the readable recipe
            shape = _channel_shape(input)
            y, mean, var = normalize(
                input, norm_dims("bn", input.dim()), eps, weight=_reshape(weight, shape), bias=_reshape(bias, shape)
            )
            mean, var = mean.flatten(), var.flatten()
        if input.numel() > 0:  # an empty batch has no statistics: keep the running ones, as PyTorch does
            values_per_stat = input.numel() // input.shape[1]
            _update_running_stats(running_mean, running_var, mean, var, values_per_stat, momentum)
        return y

    if running_mean is None or running_var is None:
        raise RuntimeError("running_mean must be defined in evaluation mode (and running_var too)")
    return _normalize_with_running_stats(input, running_mean, running_var, weight, bias, eps)


# --------------------------------------------------------------------------- LayerNorm & RMSNorm


def _as_shape(normalized_shape) -> Tuple[int, ...]:
    if isinstance(normalized_shape, numbers.Integral):
        return (int(normalized_shape),)
    return tuple(int(s) for s in normalized_shape)


def _check_trailing_shape(
    input: Tensor, shape: Tuple[int, ...], weight: Optional[Tensor], bias: Optional[Tensor]
) -> None:
    k = len(shape)
    if k == 0 or input.dim() < k or tuple(input.shape[input.dim() - k :]) != shape:
        expected = ", ".join(str(s) for s in shape)
        raise RuntimeError(
            f"Given normalized_shape={list(shape)}, expected input with shape [*, {expected}], "
            f"but got input of size{list(input.shape)}"
        )
    for tensor, name in ((weight, "weight"), (bias, "bias")):
        if tensor is not None and tuple(tensor.shape) != shape:
            raise RuntimeError(
                f"Expected {name} to be of same shape as normalized_shape, but got "
                f"{name} of shape {list(tensor.shape)} and normalized_shape = {list(shape)}"
            )


def _last_axes_view(input: Tensor, shape: Tuple[int, ...]) -> _View:
    """LayerNorm's and RMSNorm's view: one statistic per row of the last ``prod(shape)`` values."""
    row = math.prod(shape)
    return _View((input.numel() // row if row else 0, 1, 1, row), False, True, (1, 1, 1, row))


def layer_norm(
    input: Tensor,
    normalized_shape,
    weight: Optional[Tensor] = None,
    bias: Optional[Tensor] = None,
    eps: float = 1e-5,
) -> Tensor:
    """Layer normalization: the core over the last ``len(normalized_shape)`` axes.

    Each sample (and, for sequences, each position) gets its own statistics; gamma and
    beta have the shape ``normalized_shape`` (one per normalized element).
    """
    _check_floating(input, "layer_norm")
    input, weight, bias = _autocast_float32(input, weight, bias)
    shape = _as_shape(normalized_shape)
    _check_trailing_shape(input, shape, weight, bias)
    fused = _run_fused(input, _last_axes_view(input, shape), eps, weight, bias, True)
    if fused is not None:
        return fused[0]
    return _normalize_layer(input, tuple(range(-len(shape), 0)), eps, weight, bias)[0]


def rms_norm(
    input: Tensor,
    normalized_shape,
    weight: Optional[Tensor] = None,
    eps: Optional[float] = None,
) -> Tensor:
    """RMS normalization: the core without centering, over the last axes.

    y = x / sqrt(mean(x^2) + eps) * weight. No mean is subtracted and there is no bias.
    ``eps=None`` uses the machine epsilon of the computation dtype (float32 for half
    precision inputs), as PyTorch does.
    """
    _check_floating(input, "rms_norm")
    shape = _as_shape(normalized_shape)
    _check_trailing_shape(input, shape, weight, None)
    if eps is None:
        eps = torch.finfo(_compute_dtype(input.dtype)).eps
    fused = _run_fused(input, _last_axes_view(input, shape), eps, weight, None, False)
    if fused is not None:
        return fused[0]
    return _normalize_layer(input, tuple(range(-len(shape), 0)), eps, weight, center=False)[0]


# --------------------------------------------------------------------------- GroupNorm & InstanceNorm


def group_norm(
    input: Tensor,
    num_groups: int,
    weight: Optional[Tensor] = None,
    bias: Optional[Tensor] = None,
    eps: float = 1e-5,
) -> Tensor:
    """Group normalization: split the channels into ``num_groups`` groups of
    *consecutive* channels and apply the core over each sample's group.

    GN(G=1) is LayerNorm over (C, H, W); GN(G=C) is InstanceNorm. gamma and beta are
    per channel.
    """
    _check_floating(input, "group_norm")
    input, weight, bias = _autocast_float32(input, weight, bias)
    if input.dim() < 2:
        raise RuntimeError(f"Expected at least 2 dimensions for input tensor but received {input.dim()}")
    batch, channels = input.shape[:2]
    if num_groups > 0 and batch * channels // num_groups * math.prod(input.shape[2:]) == 1:
        # PyTorch's first check (before the channel count's): a single sample whose groups
        # hold one value each normalizes to 0.
        raise ValueError(
            f"Expected more than 1 value per channel when training, got input size {input.size()}: "
            f"with num_groups={num_groups} every group holds a single value, whose variance is 0"
        )
    if num_groups <= 0 or channels % num_groups != 0:
        raise RuntimeError(
            "Expected number of channels in input to be divisible by num_groups, but got input "
            f"of shape {list(input.shape)} and num_groups={num_groups}"
        )
    for tensor, name in ((weight, "weight"), (bias, "bias")):
        if tensor is not None and tensor.numel() != channels:
            raise RuntimeError(
                f"Expected {name} to be a vector of size equal to the number of channels in input, "
                f"but got {name} of shape {list(tensor.shape)} and input of shape {list(input.shape)}"
            )
    # (N, C, *spatial) -> (N, G, C // G, *spatial): channels 0..C/G-1 form group 0, and so on.
    # gamma/beta are per channel: in the grouped view, channel c sits at (c // (C/G), c % (C/G)).
    per_group = channels // num_groups
    view = _View(
        (batch, num_groups, per_group, math.prod(input.shape[2:])), False, False, (1, num_groups, per_group, 1)
    )
    fused = _run_fused(input, view, eps, weight, bias, True)
    if fused is not None:
        y = fused[0]
    else:
        grouped = input.reshape(batch, num_groups, per_group, *input.shape[2:])
        per_channel = (1, num_groups, per_group) + (1,) * (input.dim() - 2)
        y, _, _ = _normalize_layer(
            grouped, norm_dims("gn", input.dim()), eps, _reshape(weight, per_channel), _reshape(bias, per_channel)
        )
        y = y.reshape(input.shape)
    memory_format = _channels_last_format(input)
    return y if memory_format is None else y.contiguous(memory_format=memory_format)


def _verify_spatial_size(size: torch.Size) -> None:
    if math.prod(size[2:]) == 1:
        raise ValueError(
            f"Expected more than 1 spatial element when training, got input size {size}: "
            "the variance of a single value is 0"
        )


def instance_norm(
    input: Tensor,
    running_mean: Optional[Tensor] = None,
    running_var: Optional[Tensor] = None,
    weight: Optional[Tensor] = None,
    bias: Optional[Tensor] = None,
    use_input_stats: bool = True,
    momentum: float = 0.1,
    eps: float = 1e-5,
) -> Tensor:
    """Instance normalization: the core over the spatial axes ``(2, 3, ...)`` of each
    sample and channel.

    Same semantics as :func:`torch.nn.functional.instance_norm`. With
    ``use_input_stats`` (the default) each instance uses its own statistics; running
    statistics, if given, are updated with the batch average of the per-instance ones.
    """
    _check_floating(input, "instance_norm")
    if input.dim() < 3:
        raise ValueError(f"instance_norm: expected an input of shape (N, C, *spatial), got {input.dim()}D input")
    if use_input_stats:  # PyTorch checks the spatial size before the per-channel tensors
        _verify_spatial_size(input.size())
    _check_channel_vectors(input, running_mean=running_mean, running_var=running_var, weight=weight, bias=bias)
    shape = _channel_shape(input)

    if use_input_stats:
        channels = input.shape[1]
        view = _View((input.shape[0], channels, 1, math.prod(input.shape[2:])), False, False, (1, channels, 1, 1))
        fused = _run_fused(input, view, eps, weight, bias, True)
        if fused is not None:  # statistics (N, C, 1, 1)
            y, mean, var = fused
        else:
            y, mean, var = _normalize_layer(
                input, norm_dims("in", input.dim()), eps, _reshape(weight, shape), _reshape(bias, shape)
            )
        if input.numel() > 0:  # an empty batch has no statistics: keep the running ones
            # Each instance updates its own copy of the running stats; the copies are averaged.
            values_per_stat = math.prod(input.shape[2:])
            _update_running_stats(
                running_mean,
                running_var,
                mean.mean(dim=0).flatten(),
                var.mean(dim=0).flatten(),
                values_per_stat,
                momentum,
            )
        return y

    if running_mean is None or running_var is None:
        raise RuntimeError("Expected running_mean and running_var to be defined when use_input_stats is false")
    y = _normalize_with_running_stats(input, running_mean, running_var, weight, bias, eps)
    # torch's instance_norm returns a contiguous tensor whatever the input's memory format
    return y if _channels_last_format(y) is None else y.contiguous()


# --------------------------------------------------------------------------- AdaIN


def adain(content: Tensor, style: Tensor, eps: float = 1e-5) -> Tensor:
    """Adaptive instance normalization (Huang & Belongie, 2017): give each
    channel of ``content`` the mean and standard deviation of that channel
    in ``style``::

        adain(x, s) = sqrt(var_s + eps) * (x - mu_x) / sqrt(var_x + eps) + mu_s

    Statistics are per sample and channel, over the spatial axes (2, 3, ...):
    InstanceNorm's sets, biased variance. The content is instance-normalized
    by :func:`normalize`, with the style's statistics as gamma and beta. Both
    standard deviations include ``eps``, so ``adain(x, x)`` is exactly ``x``;
    the output has the style's mean and the variance
    ``(var_s + eps) * var_x / (var_x + eps)``, the style's up to ~eps.

    ``content`` is ``(N, C, *spatial)``; ``style`` is ``(N, C, *spatial')`` or
    ``(1, C, *spatial')``: only its statistics are used, so its spatial size may
    differ, and one style serves a whole batch. Returns ``content``'s shape.
    """
    _check_floating(content, "adain")
    _check_floating(style, "adain")
    if content.dim() < 3 or style.dim() != content.dim():
        raise ValueError(
            "adain: content and style must both be (N, C, *spatial), with at "
            "least one spatial dim and the same rank; got content of shape "
            f"{list(content.shape)} and style of shape {list(style.shape)}"
        )
    if style.shape[1] != content.shape[1]:
        raise ValueError(
            f"adain: content has {content.shape[1]} channels but style has "
            f"{style.shape[1]} (statistics are swapped channel by channel)"
        )
    if style.shape[0] not in (1, content.shape[0]):
        raise ValueError(
            f"adain: style batch size must be 1 or the content's ({content.shape[0]}), got {style.shape[0]}"
        )
    dims = norm_dims("in", content.dim())
    _, style_mean, style_var = _moments(style, dims)
    _verify_spatial_size(content.size())
    y, _, _ = normalize(content, dims, eps, weight=torch.sqrt(style_var + eps), bias=style_mean)
    return y
