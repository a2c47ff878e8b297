"""Switchable normalization: a learned mixture of InstanceNorm, LayerNorm and BatchNorm statistics.

Luo, Ren, Peng, Zhang and Li, "Differentiable Learning-to-Normalize via Switchable
Normalization" (arXiv:1806.10779, 2018; ICLR 2019; the book's ``luo2019switchable``). Instead of choosing a normalizer, let
each layer learn one: compute the three sets of statistics of the recipe::

    IN: mean/var per (n, c) over the spatial axes,
    LN: per n over (C, spatial),
    BN: per c over (N, spatial),

and normalize with their softmax-weighted mixtures::

    mean = sum_k softmax(mean_weight)_k mu_k,
    var  = sum_k softmax(var_weight)_k sigma2_k,        k in (IN, LN, BN),
    y    = gamma * (x - mean) / sqrt(var + eps) + beta.

``mean_weight`` and ``var_weight`` are three logits each, in that order, learned with the
network; they start equal (ones), so each statistic starts with weight 1/3.

LN's and BN's statistics are computed from IN's, as in the paper (one pass over the input
instead of three). Every IN group has the same size, so the mean of the IN means is the
LN (BN) mean, and the variance combines exactly by the law of total variance,
var_LN = mean_c(var_IN) + mean_c((mean_IN - mean_LN)^2): the mean of the within-group
variances plus the variance of the group means, both small non-negative sums, which avoids
the cancellation of E[x^2] - E[x]^2. All three variances are *biased* (divided by the
number of values), as every normalization layer in PyTorch and normlib uses. The authors'
reference code (github.com/switchablenorms/Switchable-Normalization) differs there: it
takes IN's variance with ``Tensor.var``, whose default is the unbiased estimate (divided by
m - 1), and derives LN's and BN's from it with var_IN + mean_IN^2 - mean^2; so its mixture
is not exactly any of the three layers. The authors' running statistics also use the other
momentum convention (0.997 or 0.9 weighs the old value); here they follow PyTorch's BatchNorm.
"""

from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import Tensor, nn

from . import functional as F
from .batchnorm import _expect_rank, _NormBase

__all__ = ["SwitchNorm1d", "SwitchNorm2d", "switch_norm", "switch_moments", "SWITCH_NAMES"]

#: The order of the statistics in ``mean_weight``, ``var_weight`` and the mixing weights.
SWITCH_NAMES = ("in", "ln", "bn")

Moments = Tuple[Tensor, Tensor]


def _check_switch_norm(input, mean_weights, var_weights, tensors, training) -> None:
    running_mean, running_var, weight, bias = tensors
    F._check_floating(input, "switch_norm")
    if input.dim() < 2:
        raise ValueError(f"switch_norm: expected an input of shape (N, C, *), got {input.dim()}D input")
    for name, w in (("mean_weights", mean_weights), ("var_weights", var_weights)):
        if w.shape != (3,):
            raise ValueError(f"switch_norm: {name} must hold 3 weights (IN, LN, BN), got shape {tuple(w.shape)}")
    if training:  # BN's batch statistics: BatchNorm's check
        F._verify_batch_size(input.size())
    elif running_mean is None or running_var is None:
        raise RuntimeError("switch_norm: running_mean and running_var must be defined when not training")
    F._check_channel_vectors(input, running_mean=running_mean, running_var=running_var, weight=weight, bias=bias)


# The two functions below are what a chapter shows (viz.show_source): keep
# their lines within 79 characters, the width of a code box in the book.
def switch_moments(x: Tensor) -> Tuple[Moments, Moments, Moments]:
    """IN's, LN's and BN's ``(mean, biased var)`` of a channels-first ``x``.

    Returns ``((mean_in, var_in), (mean_ln, var_ln), (mean_bn, var_bn))``,
    keeping the reduced dims: shapes (N, C, 1, ...), (N, 1, 1, ...) and
    (1, C, 1, ...), so they broadcast against ``x``. LN's and BN's come from
    IN's by the law of total variance (see the module's docstring). An (N, C)
    input has one value per instance: IN's mean is that value, its variance
    0. Computed in float32 for half-precision inputs.
    """
    if x.dim() < 2:
        got = f"got {x.dim()}D input"
        raise ValueError(f"switch_moments: expected (N, C, *) input, {got}")
    if x.dim() > 2:  # IN: per sample and channel, over the spatial dims
        _, mean_in, var_in = F._moments(x, F.norm_dims("in", x.dim()))
    else:
        mean_in = x.to(F._compute_dtype(x.dtype))
        var_in = torch.zeros_like(mean_in)

    def combine(dim: int) -> Moments:
        """Average IN's statistics over ``dim``: over C for LN, N for BN."""
        mean = mean_in.mean(dim, keepdim=True)
        # mean of the variances + variance of the means: no cancellation
        between = (mean_in - mean).square().mean(dim, keepdim=True)
        return mean, var_in.mean(dim, keepdim=True) + between

    return (mean_in, var_in), combine(1), combine(0)


def switch_norm(
    input: Tensor,
    mean_weights: Tensor,
    var_weights: Tensor,
    running_mean: Optional[Tensor] = None,
    running_var: Optional[Tensor] = None,
    weight: Optional[Tensor] = None,
    bias: Optional[Tensor] = None,
    training: bool = False,
    momentum: float = 0.1,
    eps: float = 1e-5,
) -> Tensor:
    """Switchable normalization of ``input`` ``(N, C, *)`` with explicit mixing
    weights.

    ``mean_weights`` and ``var_weights`` hold three weights each, for IN's,
    LN's and BN's statistics in that order (:data:`SWITCH_NAMES`); the layers
    pass the softmax of their logits, and ``[1, 0, 0]`` gives InstanceNorm
    exactly. ``weight`` and ``bias`` (gamma, beta) are per channel. BN's
    statistics follow :func:`normlib.functional.batch_norm`: with
    ``training`` the batch's, and the running statistics, if given, are
    updated in place (PyTorch's momentum convention, unbiased variance);
    otherwise the running ones. IN's and LN's always come from ``input``.
    """
    tensors = (running_mean, running_var, weight, bias)
    _check_switch_norm(input, mean_weights, var_weights, tensors, training)
    shape = F._channel_shape(input)  # (1, C, 1, ...)
    # Half precision: everything below in float32.
    x = input.to(F._compute_dtype(input.dtype))
    (mean_in, var_in), (mean_ln, var_ln), (mean_bn, var_bn) = switch_moments(x)
    if not training:  # BN's part from the running statistics
        mean_bn = running_mean.reshape(shape).to(x.dtype)
        var_bn = running_var.reshape(shape).to(x.dtype)
    elif running_mean is not None and input.numel() > 0:
        F._update_running_stats(
            running_mean,
            running_var,
            mean_bn.flatten(),
            var_bn.flatten(),
            input.numel() // input.shape[1],  # values per statistic
            momentum,
        )
    wm, wv = mean_weights.to(x.dtype), var_weights.to(x.dtype)
    mean = wm[0] * mean_in + wm[1] * mean_ln + wm[2] * mean_bn
    var = wv[0] * var_in + wv[1] * var_ln + wv[2] * var_bn
    y = F._standardize(x, mean, var, eps)  # step 3, the mixed statistics
    gamma, beta = F._reshape(weight, shape), F._reshape(bias, shape)
    y = F._scale_shift(y, gamma, beta)  # step 4
    return y.to(input.dtype)


class _SwitchNorm(_NormBase):
    """_NormBase's gamma/beta and BN running statistics, plus the two sets of mixing logits."""

    def __init__(
        self,
        num_features: int,
        eps: float = 1e-5,
        momentum: Optional[float] = 0.1,
        affine: bool = True,
        track_running_stats: bool = True,
        device=None,
        dtype=None,
    ) -> None:
        super().__init__(num_features, eps, momentum, affine, track_running_stats, device=device, dtype=dtype)
        # Logits of the IN, LN and BN statistics; equal at the start (softmax 1/3 each).
        self.mean_weight = nn.Parameter(torch.ones(3, device=device, dtype=dtype))
        self.var_weight = nn.Parameter(torch.ones(3, device=device, dtype=dtype))

    def reset_parameters(self) -> None:
        super().reset_parameters()
        for logits in (getattr(self, "mean_weight", None), getattr(self, "var_weight", None)):
            if logits is not None:  # absent while _NormBase.__init__ runs
                nn.init.ones_(logits)

    def mixing_weights(self, input_dim: Optional[int] = None) -> Tuple[Tensor, Tensor]:
        """The weights of the IN, LN and BN statistics: softmax of ``mean_weight`` and of ``var_weight``.

        For a 2-D (N, C) input (``input_dim=2``) IN's weight is 0 and the softmax runs over the
        LN and BN logits only (InstanceNorm is undefined with one value per instance).
        """
        weights = []
        for logits in (self.mean_weight, self.var_weight):
            logits = logits.to(F._compute_dtype(logits.dtype))
            if input_dim == 2:
                weights.append(torch.cat([torch.zeros_like(logits[:1]), torch.softmax(logits[1:], 0)]))
            else:
                weights.append(torch.softmax(logits, 0))
        return weights[0], weights[1]

    def extra_repr(self) -> str:
        return (
            f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, affine={self.affine}, "
            f"track_running_stats={self.track_running_stats}"
        )

    def forward(self, input: Tensor) -> Tensor:
        self._check_input_dim(input)
        # BN's statistics: the batch's in training, and also in eval when no running ones exist.
        use_batch_stats = self.training or not self.track_running_stats
        if use_batch_stats:
            F._verify_batch_size(input.size())  # before any state changes
        average_factor = 0.0 if self.momentum is None else self.momentum
        if self.training and self.track_running_stats:
            self.num_batches_tracked.add_(1)
            if self.momentum is None:  # a cumulative (equal-weight) average of every batch seen
                average_factor = 1.0 / float(self.num_batches_tracked)
        mean_weights, var_weights = self.mixing_weights(input.dim())
        return switch_norm(
            input,
            mean_weights,
            var_weights,
            self.running_mean,
            self.running_var,
            self.weight,
            self.bias,
            use_batch_stats,
            average_factor,
            self.eps,
        )


class SwitchNorm1d(_SwitchNorm):
    """Switchable normalization of (N, C, L) input (or (N, C): see below).

    ``y = gamma * (x - mean) / sqrt(var + eps) + beta`` where ``mean`` and ``var`` mix IN's
    (per sample and channel, over L), LN's (per sample, over C and L) and BN's (per channel,
    over N and L) statistics with the weights ``softmax(mean_weight)`` and
    ``softmax(var_weight)`` (logits in the order IN, LN, BN; see :meth:`mixing_weights`).
    All variances are biased. In training BN's statistics are the batch's and the running
    statistics are updated as BatchNorm1d's (PyTorch's momentum convention, unbiased
    running_var); in ``eval()`` BN's part uses the running statistics, while IN's and LN's
    always come from the input. With ``track_running_stats=False``, the batch's in eval too.

    On (N, C) input InstanceNorm is undefined (one value per instance), so the layer drops
    it: IN's weight is 0 and the softmax runs over the LN and BN logits only, a mixture of
    LayerNorm over C and BatchNorm1d. (The authors' SwitchNorm1d is this (N, C) layer, with
    two logits.) ``mean_weight[0]`` and ``var_weight[0]`` then get zero gradients.

    Args:
        num_features: C, the number of channels (dim 1 of the input).
        eps: added to the mixed variance (default 1e-5).
        momentum: momentum of BN's running statistics, PyTorch's convention (default 0.1);
            ``None`` averages all batches equally.
        affine: learned per-channel gamma (``weight``) and beta (``bias``) (default True).
        track_running_stats: keep BN's running statistics for eval (default True).

    Holds ``weight``, ``bias``, ``mean_weight``, ``var_weight`` (3 logits each, initialized
    to ones: weight 1/3 per statistic), ``running_mean``, ``running_var`` and
    ``num_batches_tracked``.
    """

    def _check_input_dim(self, input: Tensor) -> None:
        _expect_rank(input, (2, 3))


class SwitchNorm2d(_SwitchNorm):
    """Switchable normalization of (N, C, H, W) input.

    ``y = gamma * (x - mean) / sqrt(var + eps) + beta`` where ``mean`` and ``var`` mix IN's
    (per sample and channel, over H, W), LN's (per sample, over C, H, W) and BN's (per
    channel, over N, H, W) statistics with the weights ``softmax(mean_weight)`` and
    ``softmax(var_weight)`` (logits in the order IN, LN, BN). The same layer as
    :class:`SwitchNorm1d` (see there for the arguments, training vs ``eval()`` and the state).
    One-hot weights give InstanceNorm2d, LayerNorm over (C, H, W) with per-channel gamma/beta
    (GroupNorm(1, C)) and BatchNorm2d.
    """

    def _check_input_dim(self, input: Tensor) -> None:
        _expect_rank(input, (4,))
