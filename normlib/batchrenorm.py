"""Batch renormalization: BatchNorm whose training output already is its eval() output.

Ioffe (2017), "Batch Renormalization: Towards Reducing Minibatch Dependence in
Batch-Normalized Models" (NeurIPS 2017, arXiv:1702.03275; the book's ``ioffe2017batch``). BatchNorm normalizes with the
batch's statistics in training and with the running ones in ``eval()``: the network is
trained on one function and evaluated on another, and the two differ most when batches
are small or not i.i.d. Batch renormalization keeps BatchNorm's training step and adds a
per-channel correction from the batch's normalization to the running one::

    r = clip(sigma_B / sigma, 1 / r_max, r_max)
    d = clip((mu_B - running_mean) / sigma, -d_max, d_max)
    x_hat = (x - mu_B) / sigma_B * r + d,        y = gamma * x_hat + beta

with sigma_B = sqrt(var_B + eps) (biased batch variance) and sigma = sqrt(running_var + eps).
r and d are constants for the backward pass (computed under ``torch.no_grad``): the
gradient still flows through mu_B and sigma_B as in BatchNorm. Unclipped, the correction
is exact, x_hat = (x - running_mean) / sigma: the output eval() gives with the running
statistics from before this step's update; the clipping keeps a step from trusting running
statistics that are still far off. The running statistics are then updated exactly as
BatchNorm updates them, so eval() after the step normalizes with the moved statistics and
gives a different output for the same batch.

The paper starts training with r_max = 1 and d_max = 0 (plain BatchNorm) and relaxes them
gradually to 3 and 5 (its ImageNet schedule). Here ``r_max`` and ``d_max`` are plain
attributes, read at every forward pass: a training loop ramps them by assignment
(``layer.r_max = ...``). The defaults are the paper's final values.
"""

from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import Tensor

from . import functional as F
from .batchnorm import _expect_rank, _NormBase

__all__ = ["BatchRenorm1d", "BatchRenorm2d", "batch_renorm", "renorm_correction"]


def _check_batch_renorm(input, tensors, eps, r_max, d_max) -> None:
    """batch_norm's checks in training, and the limits: r_max >= 1 and d_max >= 0."""
    running_mean, running_var, weight, bias = tensors
    if r_max < 1.0 or d_max < 0.0:
        raise ValueError(f"batch_renorm: expected r_max >= 1 and d_max >= 0, got r_max={r_max}, d_max={d_max}")
    F._check_floating(input, "batch_renorm")
    if input.dim() < 2:
        raise ValueError(f"batch_renorm: expected an input of shape (N, C, *), got {input.dim()}D input")
    F._check_batch_norm_eps(input, True, eps)
    F._check_channel_vectors(input, running_mean=running_mean, running_var=running_var, weight=weight, bias=bias)


# The two functions below are what a chapter shows (viz.show_source): keep
# their lines within 79 characters, the width of a code box in the book.
@torch.no_grad()
def renorm_correction(
    batch_mean: Tensor,
    batch_var: Tensor,
    running_mean: Tensor,
    running_var: Tensor,
    eps: float,
    r_max: float,
    d_max: float,
) -> Tuple[Tensor, Tensor]:
    """Batch renormalization's ``(r, d)``: from the batch's normalization to
    the running one.

    r = clip(sigma_B / sigma, 1 / r_max, r_max) and
    d = clip((mu_B - running_mean) / sigma, -d_max, d_max), with
    sigma_B = sqrt(batch_var + eps) and sigma = sqrt(running_var + eps).
    All four tensors broadcast against each other. The result is in the batch
    statistics' dtype (float32 for half-precision inputs) and carries no
    gradient: r and d are constants for the backward pass.
    """
    running_mean = running_mean.to(batch_mean.dtype)
    running_std = torch.sqrt(running_var.to(batch_var.dtype) + eps)
    r = torch.sqrt(batch_var + eps) / running_std
    d = (batch_mean - running_mean) / running_std
    return r.clamp(1.0 / r_max, r_max), d.clamp(-d_max, d_max)


def batch_renorm(
    input: Tensor,
    running_mean: Tensor,
    running_var: Tensor,
    weight: Optional[Tensor] = None,
    bias: Optional[Tensor] = None,
    training: bool = False,
    momentum: float = 0.1,
    eps: float = 1e-5,
    r_max: float = 3.0,
    d_max: float = 5.0,
) -> Tensor:
    """Batch renormalization of a channels-first input ``(N, C, *)`` (Ioffe, 2017).

    The arguments of :func:`normlib.functional.batch_norm`, plus ``r_max``
    and ``d_max``; the running statistics are required (the correction
    needs them). In training the batch's statistics normalize the input,
    corrected by :func:`renorm_correction`; then the running statistics are
    updated in place as BatchNorm updates them (PyTorch's momentum
    convention, unbiased variance). Otherwise this is BatchNorm's inference,
    ``batch_norm(..., training=False)``.
    """
    if running_mean is None or running_var is None:
        raise RuntimeError("batch_renorm needs running_mean and running_var")
    tensors = (running_mean, running_var, weight, bias)  # batch_norm's order
    if not training:  # BatchNorm's inference
        return F.batch_norm(input, *tensors, training=False, eps=eps)
    _check_batch_renorm(input, tensors, eps, r_max, d_max)
    shape = F._channel_shape(input)  # (1, C, 1, ...)
    # Half precision: statistics, r, d and x_hat in float32.
    x = input.to(F._compute_dtype(input.dtype))
    # Steps 1-3 of the recipe with the batch's statistics: BatchNorm's x_hat.
    dims = F.norm_dims("bn", x.dim())
    x_hat, batch_mean, batch_var = F.normalize(x, dims, eps)
    # Batch renormalization's step: towards the running statistics, with
    # r and d held constant.
    r, d = renorm_correction(
        batch_mean,
        batch_var,
        running_mean.reshape(shape),
        running_var.reshape(shape),
        eps,
        r_max,
        d_max,
    )
    x_hat = x_hat * r + d
    # Step 4: scale and shift.
    gamma, beta = F._reshape(weight, shape), F._reshape(bias, shape)
    y = F._scale_shift(x_hat, gamma, beta)
    # Then, as BatchNorm, update the running statistics (an empty batch has
    # none). r and d used the ones before this step.
    if input.numel() > 0:
        F._update_running_stats(
            running_mean,
            running_var,
            batch_mean.flatten(),
            batch_var.flatten(),
            input.numel() // input.shape[1],  # values per statistic
            momentum,
        )
    return y.to(input.dtype)


class _BatchRenorm(_NormBase):
    """Batch renormalization's module: _NormBase's parameters and buffers, plus r_max and d_max."""

    __constants__ = _NormBase.__constants__ + ["r_max", "d_max"]
    r_max: float
    d_max: float

    def __init__(
        self,
        num_features: int,
        eps: float = 1e-5,
        momentum: Optional[float] = 0.1,
        r_max: float = 3.0,
        d_max: float = 5.0,
        affine: bool = True,
        device=None,
        dtype=None,
    ) -> None:
        # Always tracked: the correction r, d is measured against the running statistics.
        super().__init__(num_features, eps, momentum, affine, True, device=device, dtype=dtype)
        self.r_max = r_max
        self.d_max = d_max

    def extra_repr(self) -> str:
        return (
            f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, "
            f"r_max={self.r_max}, d_max={self.d_max}, affine={self.affine}"
        )

    def forward(self, input: Tensor) -> Tensor:
        self._check_input_dim(input)
        average_factor = 0.0 if self.momentum is None else self.momentum
        if self.training:
            # BatchNorm's checks before any state changes, so a rejected input counts no batch.
            F._check_batch_norm_eps(input, True, self.eps)
            self.num_batches_tracked.add_(1)
            if self.momentum is None:  # a cumulative (equal-weight) average of every batch seen
                average_factor = 1.0 / float(self.num_batches_tracked)
        return batch_renorm(
            input,
            self.running_mean,
            self.running_var,
            self.weight,
            self.bias,
            self.training,
            average_factor,
            self.eps,
            self.r_max,
            self.d_max,
        )


class BatchRenorm1d(_BatchRenorm):
    """Batch renormalization of (N, C) or (N, C, L) input: one correction per channel C.

    In training, BatchNorm's output with the batch's statistics, corrected per channel
    towards the running statistics: ``x_hat = (x - mu_B) / sigma_B * r + d`` with
    ``r = clip(sigma_B / sigma, 1/r_max, r_max)``, ``d = clip((mu_B - running_mean) / sigma,
    -d_max, d_max)`` (sigma_B, sigma: batch and running ``sqrt(var + eps)``; r and d are
    constants for the gradient), then ``y = gamma * x_hat + beta``; the running statistics
    are updated afterwards exactly as BatchNorm1d's. In ``eval()``, BatchNorm1d's output with
    the running statistics. Unclipped, the training output equals the output of ``eval()``
    with the running statistics from before this step's update (not after it: the update
    moves them).

    Args:
        num_features: C, the number of channels (dim 1 of the input).
        eps: added to both variances (default 1e-5).
        momentum: running-statistics momentum, PyTorch's convention (weight of the new
            batch, default 0.1); ``None`` averages all batches equally.
        r_max: the clip of r (default 3, the paper's final value; 1 with ``d_max=0`` is
            BatchNorm). A plain attribute: assign it to ramp it during training.
        d_max: the clip of d (default 5, the paper's final value).
        affine: learned gamma (``weight``) and beta (``bias``), one per channel (default True).

    Holds ``weight``, ``bias``, ``running_mean``, ``running_var`` and
    ``num_batches_tracked``, torch's BatchNorm1d's state-dict keys: its checkpoints load.
    ``track_running_stats`` is always True (the correction needs the running statistics).
    """

    def _check_input_dim(self, input: Tensor) -> None:
        _expect_rank(input, (2, 3))


class BatchRenorm2d(_BatchRenorm):
    """Batch renormalization of (N, C, H, W) input: one correction per channel, over N, H, W.

    The same layer as :class:`BatchRenorm1d` (see there for the math and arguments) for
    feature maps: in training BatchNorm2d's batch-statistics output corrected by r and d
    towards the running statistics, which are then updated as BatchNorm2d's; in ``eval()``
    BatchNorm2d's output with the running statistics. Holds ``weight``, ``bias``,
    ``running_mean``, ``running_var`` and ``num_batches_tracked``, so a torch BatchNorm2d
    checkpoint loads into it. ``track_running_stats`` is always True.
    """

    def _check_input_dim(self, input: Tensor) -> None:
        _expect_rank(input, (4,))
