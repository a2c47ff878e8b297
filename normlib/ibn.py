"""IBNorm: InstanceNorm on some channels, BatchNorm on the others (IBN-Net's IBN-a layer).

Pan et al. (2018) observed that InstanceNorm makes features invariant to appearance
(contrast, colour, style) while BatchNorm keeps the content information a classifier
needs, and combined them in one layer: the first ``int(C * ratio)`` channels are
instance-normalized, the remaining ones batch-normalized. This module is exactly that
split, built from :class:`normlib.InstanceNorm2d` and :class:`normlib.BatchNorm2d`.

The child modules are named ``IN`` and ``BN``, as in the authors' code, so the
``state_dict`` keys (``IN.weight``, ``BN.running_mean``, ...) match IBN-Net checkpoints.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor, nn

from .batchnorm import BatchNorm2d, InstanceNorm2d

__all__ = ["IBNorm"]


class IBNorm(nn.Module):
    """Instance-batch normalization of (N, C, H, W) input.

    Channels ``0 .. instance_channels - 1`` go through ``InstanceNorm2d`` (per sample and
    channel statistics, the same in training and ``eval()``); channels
    ``instance_channels .. C - 1`` go through ``BatchNorm2d`` (batch statistics in training,
    running statistics in ``eval()`` when ``track_running_stats``). ``instance_channels`` is
    ``int(num_channels * ratio)``, as in IBN-Net, and both halves must be non-empty.

    Args:
        num_channels: C, the number of input channels.
        ratio: fraction of the channels that are instance-normalized (IBN-Net: 0.5).
        eps: added to the variance in both halves.
        momentum: running-statistics momentum of the BatchNorm half (PyTorch convention).
        affine: learned gamma/beta in both halves (IBN-Net uses them in both).
        track_running_stats: running statistics for the BatchNorm half. The InstanceNorm
            half keeps PyTorch's default and never tracks any.
    """

    __constants__ = ["num_channels", "ratio", "instance_channels", "eps", "affine"]
    num_channels: int
    ratio: float
    instance_channels: int

    def __init__(
        self,
        num_channels: int,
        ratio: float = 0.5,
        eps: float = 1e-5,
        momentum: Optional[float] = 0.1,
        affine: bool = True,
        track_running_stats: bool = True,
        device=None,
        dtype=None,
    ) -> None:
        super().__init__()
        if not 0.0 <= ratio <= 1.0:
            raise ValueError(f"IBNorm: ratio must be between 0 and 1, got {ratio}")
        instance_channels = int(num_channels * ratio)
        if not 0 < instance_channels < num_channels:
            raise ValueError(
                f"IBNorm: int(num_channels * ratio) = int({num_channels} * {ratio}) = {instance_channels} "
                f"instance-normalized channels leaves one half empty; it must be between 1 and "
                f"{num_channels - 1} (use InstanceNorm2d or BatchNorm2d for all channels)"
            )
        self.num_channels = num_channels
        self.ratio = ratio
        self.instance_channels = instance_channels
        self.eps = eps
        self.affine = affine
        factory_kwargs = {"device": device, "dtype": dtype}
        self.IN = InstanceNorm2d(instance_channels, eps=eps, affine=affine, **factory_kwargs)
        self.BN = BatchNorm2d(
            num_channels - instance_channels,
            eps=eps,
            momentum=momentum,
            affine=affine,
            track_running_stats=track_running_stats,
            **factory_kwargs,
        )

    @property
    def batch_channels(self) -> int:
        """Number of batch-normalized channels (the last ones)."""
        return self.num_channels - self.instance_channels

    def forward(self, input: Tensor) -> Tensor:
        if input.dim() != 4:
            raise ValueError(
                f"IBNorm: expected 4D input (N, C, H, W) (got {input.dim()}D input)")
        if input.size(1) != self.num_channels:
            raise ValueError(
                f"IBNorm: expected {self.num_channels} channels in dim 1 "
                f"(num_channels), got input of shape {list(input.shape)}")
        # Channels 0 .. k-1 to InstanceNorm, the others to BatchNorm.
        sizes = [self.instance_channels, self.batch_channels]
        instance_part, batch_part = torch.split(input, sizes, dim=1)
        return torch.cat([self.IN(instance_part), self.BN(batch_part)], dim=1)

    def extra_repr(self) -> str:
        return f"{self.num_channels}, ratio={self.ratio}, instance_channels={self.instance_channels}"
