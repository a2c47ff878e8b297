"""SyncBatchNorm: BatchNorm whose statistics are those of the whole batch across processes.

Under data parallelism each process sees a slice of the batch. Plain BatchNorm normalizes each
slice with its own statistics; :class:`SyncBatchNorm` normalizes every slice with the mean and
variance of the *concatenated* batch, as if one process saw all of it. It costs one collective in
the forward pass and one in the backward pass, each a few numbers per channel.

Forward (one ``all_gather``). Each process p computes, per channel, its count n_p, mean
mu_p and centred sum of squares M2_p = sum (x - mu_p)^2 (two passes, as
:func:`normlib.functional.normalize`). The triples of all processes are gathered (one collective) and combined on every
process in the same order with Chan et al.'s parallel formula::

    n  = sum n_p,
    mu = sum n_p mu_p / n,
    M2 = sum M2_p + sum n_p (mu_p - mu)^2,

a sum of non-negative terms: no E[x^2] - E[x]^2 cancellation. A single ``all_reduce`` of
(n_p, sum x, M2_p) cannot give M2 (it needs every mu_p against the global mu), and reducing the
counts and sums first takes two collectives; the gathered triples are 3 numbers per channel per
process, and every process combines them in rank order, so all get bit-identical statistics and
running statistics.

Backward (one ``all_reduce``). With x_hat = (x - mu) / sqrt(var + eps) and the global sums
S = sum dy and T = sum dy * x_hat over all processes::

    dx = gamma / sqrt(var + eps) * (dy - S / n - x_hat * T / n),

while d gamma = sum dy * x_hat and d beta = sum dy are the *local* sums, as in
``torch.nn.SyncBatchNorm``: DistributedDataParallel then averages them across processes.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.distributed as dist
from torch import Tensor
from torch.autograd.function import once_differentiable

from . import functional as F
from .batchnorm import _BatchNorm

__all__ = ["SyncBatchNorm"]


def _sync_group(process_group):
    """(group, world size) when training must synchronize, else None: no initialized
    ``torch.distributed``, or a group of one process."""
    if not (dist.is_available() and dist.is_initialized()):
        return None
    group = process_group if process_group is not None else dist.group.WORLD
    world_size = dist.get_world_size(group)
    return (group, world_size) if world_size > 1 else None


def _check_backend_device(input: Tensor, group) -> None:
    """A clear error, before any collective, when the group's backend cannot reduce ``input``'s device."""
    backend = str(dist.get_backend(group))
    if ":" in backend:  # "cpu:gloo,<accelerator>:nccl": one backend per device type
        devices = {pair.split(":", 1)[0] for pair in backend.split(",")}
    else:
        devices = set(getattr(dist.Backend, "backend_capability", {}).get(backend.lower(), ()))
    if devices and input.device.type not in devices:
        raise ValueError(
            f"SyncBatchNorm: the process group's backend {backend!r} handles tensors on "
            f"{', '.join(sorted(devices))}, but the input is on {input.device}; move the model and "
            "its inputs to a device of that backend, or initialize the process group with a backend "
            "for this device"
        )


class _SyncBatchNormFunction(torch.autograd.Function):
    """Training-mode batch norm over the batch of all processes of ``group``; see the module doc."""

    @staticmethod
    def forward(ctx, input, weight, bias, running_mean, running_var, eps, momentum, group, world_size):
        dims = (0,) + tuple(range(2, input.dim()))
        shape = (1, input.shape[1]) + (1,) * (input.dim() - 2)
        x = input.to(F._compute_dtype(input.dtype))  # half precision: statistics in float32
        count = input.numel() // input.shape[1]

        # Local (n_p, mu_p, M2_p) per channel; an empty slice has n_p = 0 and contributes nothing.
        if count > 0:
            local_mean = x.mean(dim=dims)
            local_m2 = (x - local_mean.reshape(shape)).square().sum(dim=dims)
        else:
            local_mean = local_m2 = x.new_zeros(input.shape[1])
        local = torch.cat([x.new_full((1,), count), local_mean, local_m2])
        gathered = [torch.empty_like(local) for _ in range(world_size)]
        dist.all_gather(gathered, local, group=group)

        # Chan et al.'s combination, in rank order (the same on every process).
        stats = torch.stack(gathered)  # (world_size, 1 + 2C)
        counts, means, m2s = stats[:, :1], stats[:, 1 : 1 + input.shape[1]], stats[:, 1 + input.shape[1] :]
        n = sum(round(c) for c in counts.flatten().tolist())  # exact integer count
        if n == 1:
            raise ValueError(
                f"Expected more than 1 value per channel when training, got 1 value per channel over all "
                f"{world_size} processes (input size here {tuple(input.shape)}): the batch variance of a "
                "single value is 0, so training-mode BatchNorm would normalize it to 0 and output beta alone"
            )
        mean = (counts * means).sum(dim=0) / max(n, 1)
        var = (m2s.sum(dim=0) + (counts * (means - mean).square()).sum(dim=0)) / max(n, 1)  # biased
        if n > 0:  # all slices empty: no statistics, keep the running ones (as BatchNorm does)
            F._update_running_stats(running_mean, running_var, mean, var, n, momentum)

        invstd = torch.rsqrt(var + eps).reshape(shape)
        mean = mean.reshape(shape)
        y = F._scale_shift((x - mean) * invstd, F._reshape(weight, shape), F._reshape(bias, shape))
        ctx.save_for_backward(input, weight, mean, invstd)
        ctx.count, ctx.group, ctx.bias_dtype = n, group, None if bias is None else bias.dtype
        return y.to(input.dtype)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_output):
        input, weight, mean, invstd = ctx.saved_tensors
        dims = (0,) + tuple(range(2, input.dim()))
        dy = grad_output.to(invstd.dtype)
        x_hat = (input.to(invstd.dtype) - mean) * invstd
        sum_dy = dy.sum(dim=dims)  # local sums: the parameter gradients of this process's part
        sum_dy_xhat = (dy * x_hat).sum(dim=dims)
        grad_input = grad_weight = grad_bias = None
        if ctx.needs_input_grad[0]:
            # One all-reduce of both sums: each slice's dx depends on the whole batch's dy.
            sums = torch.cat([sum_dy, sum_dy_xhat])
            dist.all_reduce(sums, group=ctx.group)
            total_dy, total_dy_xhat = (s.reshape(invstd.shape) / max(ctx.count, 1) for s in sums.chunk(2))
            scale = invstd if weight is None else invstd * weight.reshape(invstd.shape).to(invstd.dtype)
            grad_input = (scale * (dy - total_dy - x_hat * total_dy_xhat)).to(input.dtype)
        if weight is not None and ctx.needs_input_grad[1]:
            grad_weight = sum_dy_xhat.to(weight.dtype)
        if ctx.bias_dtype is not None and ctx.needs_input_grad[2]:
            grad_bias = sum_dy.to(ctx.bias_dtype)
        return grad_input, grad_weight, grad_bias, None, None, None, None, None, None


class SyncBatchNorm(_BatchNorm):
    r"""BatchNorm over N-D input (N, C, \*) whose training statistics span every process of a group.

    Same constructor, parameters, buffers and ``state_dict`` keys as
    :class:`torch.nn.SyncBatchNorm` (and so as BatchNorm1d/2d/3d: a checkpoint of either loads).

    **In training**, with :mod:`torch.distributed` initialized and ``process_group`` (default:
    the whole world) holding more than one process, every process normalizes its slice with the
    mean and biased variance of the batch concatenated over all processes of the group,

    .. math:: y = \frac{x - \mu}{\sqrt{\sigma^2 + \epsilon}} \gamma + \beta,

    with :math:`\mu, \sigma^2` over the batch dim (all processes) and the spatial dims, per channel,
    computed from each process's (count, mean, centred sum of squares) with one ``all_gather``
    and Chan et al.'s parallel combination (no :math:`E[x^2] - E[x]^2` cancellation). Slices may
    differ in size, and a slice may be empty. The running statistics are updated, identically on
    every process, with the global mean and the unbiased global variance
    :math:`\sigma^2 n / (n - 1)` (n: values per channel over all processes). The backward pass
    (one ``all_reduce``) gives each process the input gradient of the *global* loss (the sum of
    the processes' losses); the gradients of :math:`\gamma` and :math:`\beta` are each process's
    own part, which :class:`~torch.nn.parallel.DistributedDataParallel` averages, as with
    torch's layer. Every process of the group must call the layer the same number of times.

    **Without a process group** (``torch.distributed`` not initialized, or a group of one
    process) it computes exactly what BatchNorm computes. **In eval mode** it is BatchNorm in
    eval mode: the running statistics normalize, and nothing is communicated.

    Unlike torch's layer it runs on any device whose tensors the group's backend reduces (``gloo``
    on the CPU, ``nccl`` on GPUs); an input on a device the backend does not handle raises a
    :class:`ValueError` naming both.

    Args:
        num_features: C, the number of channels (dim 1 of the input).
        eps: added to the variance before the square root. Default: 1e-5.
        momentum: weight of the new batch in the running statistics; ``None`` for a cumulative
            average. Default: 0.1.
        affine: learn :math:`\gamma` (init 1) and :math:`\beta` (init 0). Default: ``True``.
        track_running_stats: keep running statistics for eval mode. Default: ``True``.
        process_group: the processes whose batches are combined; ``None`` is the default group
            (``torch.distributed.group.WORLD``). Default: ``None``.

    >>> bn = SyncBatchNorm(3)
    >>> bn(torch.randn(8, 3, 4, 4)).shape  # no process group: BatchNorm2d
    torch.Size([8, 3, 4, 4])
    """

    def __init__(
        self,
        num_features: int,
        eps: float = 1e-5,
        momentum: Optional[float] = 0.1,
        affine: bool = True,
        track_running_stats: bool = True,
        process_group=None,
        device=None,
        dtype=None,
        *,
        bias: bool = True,
    ) -> None:
        super().__init__(
            num_features, eps, momentum, affine, track_running_stats, device=device, dtype=dtype, bias=bias
        )
        self.process_group = process_group

    def _check_input_dim(self, input: Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected at least 2D input (got {input.dim()}D input)")

    def forward(self, input: Tensor) -> Tensor:
        self._check_input_dim(input)
        if input.size(1) == 0:
            raise ValueError("SyncBatchNorm number of input channels should be non-zero")
        # Synchronize only when batch statistics are used in training (eval with no running
        # statistics normalizes each process's own batch, as torch's layer does).
        sync = _sync_group(self.process_group) if self.training else None
        if sync is None:
            return super().forward(input)

        group, world_size = sync
        F._check_floating(input, "sync_batch_norm")
        F._check_channel_vectors(
            input, running_mean=self.running_mean, running_var=self.running_var, weight=self.weight, bias=self.bias
        )
        if self.eps <= 0.0:
            raise ValueError(f"batch_norm eps must be positive during training, but got {self.eps}")
        _check_backend_device(input, group)

        average_factor = 0.0 if self.momentum is None else self.momentum
        if self.track_running_stats and self.num_batches_tracked is not None:
            self.num_batches_tracked.add_(1)
            average_factor = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
        running_mean = self.running_mean if self.track_running_stats else None
        running_var = self.running_var if self.track_running_stats else None
        return _SyncBatchNormFunction.apply(
            input, self.weight, self.bias, running_mean, running_var, self.eps, average_factor, group, world_size
        )

    @classmethod
    def convert_sync_batchnorm(cls, module: torch.nn.Module, process_group=None) -> torch.nn.Module:
        """Replace every BatchNorm1d/2d/3d in ``module`` (torch's and normlib's) by a SyncBatchNorm
        over ``process_group``, in place; return the model (use the return value: a BatchNorm
        ``module`` itself is replaced). torch's name for it; the layers keep their tensors, mode
        and hooks, as with :func:`normlib.convert` (``normlib.convert(model, sync=True)`` also
        converts the model's other torch norm layers to normlib's)."""
        from .convert import convert_sync  # convert imports this module

        return convert_sync(module, process_group, only_batch_norm=True)
