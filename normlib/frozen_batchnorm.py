"""FrozenBatchNorm2d: BatchNorm2d's eval-mode affine map with everything fixed.

torchvision (``torchvision.ops.FrozenBatchNorm2d``) and detectron2 use this layer to
fine-tune detection backbones whose batches are too small for BatchNorm's statistics. It
keeps ``weight``, ``bias``, ``running_mean`` and ``running_var`` as *buffers* (the same
four ``state_dict`` keys as torchvision's): no optimizer sees them, no forward pass updates
them, and ``model.train()`` changes nothing, because the layer has no training mode to
switch to. It computes ``y = x * scale + shift`` with
``scale = weight / sqrt(running_var + eps)`` and ``shift = bias - running_mean * scale``,
which is :class:`normlib.BatchNorm2d` in ``eval()`` mode.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["FrozenBatchNorm2d"]


class FrozenBatchNorm2d(nn.Module):
    """BatchNorm2d with fixed statistics and affine parameters, all stored as buffers.

    Args:
        num_features: the number of channels C of an (N, C, H, W) input.
        eps: added to ``running_var`` before the square root (default ``1e-5``).

    A checkpoint of a ``BatchNorm2d`` loads into it: its ``num_batches_tracked`` entry is
    dropped (as torchvision does), so ``load_state_dict(bn.state_dict())`` works with
    ``strict=True``. :meth:`from_batchnorm` makes a frozen copy of a trained layer.
    """

    def __init__(self, num_features: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.num_features = num_features
        self.eps = eps
        self.register_buffer("weight", torch.ones(num_features))
        self.register_buffer("bias", torch.zeros(num_features))
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features))

    @classmethod
    def from_batchnorm(cls, batchnorm: nn.Module) -> "FrozenBatchNorm2d":
        """A frozen copy of a ``BatchNorm2d`` (torch's or normlib's) with running statistics.

        Without ``affine``, ``weight`` and ``bias`` stay 1 and 0. The copy holds its own
        tensors (on the layer's device and dtype), so later changes to ``batchnorm`` do not
        reach it."""
        if getattr(batchnorm, "running_mean", None) is None:
            raise ValueError("FrozenBatchNorm2d.from_batchnorm needs a layer with running statistics")
        frozen = cls(batchnorm.num_features, eps=batchnorm.eps).to(batchnorm.running_mean)
        with torch.no_grad():
            frozen.running_mean.copy_(batchnorm.running_mean)
            frozen.running_var.copy_(batchnorm.running_var)
            if batchnorm.weight is not None:
                frozen.weight.copy_(batchnorm.weight)
                frozen.bias.copy_(batchnorm.bias)
        return frozen

    def _load_from_state_dict(
        self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
    ):
        # A BatchNorm2d checkpoint carries a counter this layer does not keep.
        state_dict.pop(prefix + "num_batches_tracked", None)
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )

    def forward(self, x: Tensor) -> Tensor:
        # Reshape once, then one multiply-add per value.
        scale = self.weight * torch.rsqrt(self.running_var + self.eps)
        shift = self.bias - self.running_mean * scale
        return x * scale.reshape(1, -1, 1, 1) + shift.reshape(1, -1, 1, 1)

    def extra_repr(self) -> str:
        return f"{self.num_features}, eps={self.eps}"
