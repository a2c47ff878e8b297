"""Build a normalization layer by name, so an experiment can sweep normalizers.

``make_norm("gn", 64)`` and ``make_norm("bn", 64)`` take the same arguments in the same
order (channels first), as timm's norm layers do.
"""

from __future__ import annotations

from typing import Optional

from torch import nn

from .batchnorm import BatchNorm1d, BatchNorm2d, BatchNorm3d, InstanceNorm1d, InstanceNorm2d, InstanceNorm3d
from .batchrenorm import BatchRenorm1d, BatchRenorm2d
from .ibn import IBNorm
from .normalization import GroupNorm, LayerNorm, RMSNorm
from .switchnorm import SwitchNorm1d, SwitchNorm2d

__all__ = ["make_norm", "NORM_NAMES", "default_num_groups"]

#: The names :func:`make_norm` accepts.
NORM_NAMES = ("bn", "ln", "in", "gn", "ibn", "rms", "brn", "sn", "none")

_BATCH_NORMS = {0: BatchNorm1d, 1: BatchNorm1d, 2: BatchNorm2d, 3: BatchNorm3d}
_INSTANCE_NORMS = {1: InstanceNorm1d, 2: InstanceNorm2d, 3: InstanceNorm3d}
# Batch renormalization and switchable normalization exist for (N, C), (N, C, L), (N, C, H, W).
_RENORMS = {0: BatchRenorm1d, 1: BatchRenorm1d, 2: BatchRenorm2d}
_SWITCH_NORMS = {0: SwitchNorm1d, 1: SwitchNorm1d, 2: SwitchNorm2d}


def default_num_groups(num_channels: int, max_groups: int = 32, min_group_size: int = 2) -> int:
    """The number of groups ``make_norm("gn", C)`` uses: the largest divisor G of ``num_channels``
    with ``G <= max_groups`` (the GN paper's G = 32) and at least ``min_group_size`` channels per
    group, and never one of GroupNorm's two ends.

    ``torch.nn.GroupNorm`` has no default G. A bare "largest divisor up to 32" rule returns
    G = C for every C <= 32, i.e. InstanceNorm, and G = 1 (LayerNorm) for a prime C > 32;
    this function refuses both. With the defaults: 64 channels give 32 groups of 2, 32
    channels 16 groups, 16 channels 8 groups. Where only G = 1 or G = C is possible (C = 1,
    2, 3, a prime C, or ``min_group_size`` too large) it raises a ``ValueError``: pass
    ``num_groups`` yourself (1 for LayerNorm's statistics, C for InstanceNorm's).
    """
    if num_channels < 1 or max_groups < 1 or min_group_size < 1:
        raise ValueError(
            "default_num_groups: num_channels, max_groups and min_group_size must be positive, got "
            f"{num_channels}, {max_groups}, {min_group_size}"
        )
    candidates = [
        g
        for g in range(2, min(num_channels - 1, max_groups) + 1)
        if num_channels % g == 0 and num_channels // g >= min_group_size
    ]
    if not candidates:
        raise ValueError(
            f"default_num_groups: no G with 1 < G < C = {num_channels}, G <= {max_groups} and at least "
            f"{min_group_size} channels per group divides {num_channels}; GroupNorm would be LayerNorm "
            "(G = 1) or InstanceNorm (G = C). Pass num_groups explicitly."
        )
    return max(candidates)


def make_norm(
    name: str,
    num_channels: int,
    *,
    spatial_dims: int = 2,
    num_groups: Optional[int] = None,
    eps: float = 1e-5,
    affine: bool = True,
) -> nn.Module:
    """A normalization layer for channels-first features with ``num_channels`` channels.

    ``spatial_dims`` is the number of dims after the channels: 0 for (N, C) features,
    1 for (N, C, L), 2 for (N, C, H, W), 3 for (N, C, D, H, W).

    - ``"bn"``: BatchNorm1d/2d/3d; ``"in"``: InstanceNorm1d/2d/3d with ``affine``.
    - ``"gn"``: GroupNorm; ``num_groups`` defaults to :func:`default_num_groups`.
    - ``"ln"``: LayerNorm(C) on (N, C) features; on feature maps GroupNorm(1, C), i.e.
      LayerNorm over ``(C, *spatial)`` with per-channel gamma/beta, as in the GN paper.
    - ``"ibn"``: :class:`IBNorm` on (N, C, H, W) only: InstanceNorm on the first half of
      the channels, BatchNorm on the rest (IBN-Net).
    - ``"rms"``: RMSNorm(C) on (N, C) features only.
    - ``"brn"``: BatchRenorm1d/2d (batch renormalization, default r_max and d_max);
      ``"sn"``: SwitchNorm1d/2d (switchable normalization; on (N, C) features a mix of
      LayerNorm and BatchNorm only). Neither exists for 3 spatial dims.
    - ``"none"``: ``nn.Identity()``.
    """
    key = name.lower()
    if key not in NORM_NAMES:
        raise ValueError(f"make_norm: unknown normalization {name!r}; expected one of {', '.join(NORM_NAMES)}")
    if spatial_dims not in (0, 1, 2, 3):
        raise ValueError(f"make_norm: spatial_dims must be 0, 1, 2 or 3, got {spatial_dims}")
    if key == "none":
        return nn.Identity()
    if key == "bn":
        return _BATCH_NORMS[spatial_dims](num_channels, eps=eps, affine=affine)
    if key == "in":
        if spatial_dims == 0:
            raise ValueError("make_norm: 'in' needs spatial dims; (N, C) features have one value per channel")
        return _INSTANCE_NORMS[spatial_dims](num_channels, eps=eps, affine=affine)
    if key == "gn":
        groups = default_num_groups(num_channels) if num_groups is None else num_groups
        return GroupNorm(groups, num_channels, eps=eps, affine=affine)
    if key == "ln":
        if spatial_dims == 0:
            return LayerNorm(num_channels, eps=eps, elementwise_affine=affine)
        return GroupNorm(1, num_channels, eps=eps, affine=affine)
    if key == "ibn":
        if spatial_dims != 2:
            raise ValueError("make_norm: 'ibn' (IBNorm) is defined for (N, C, H, W) feature maps only (spatial_dims=2)")
        return IBNorm(num_channels, eps=eps, affine=affine)
    if key in ("brn", "sn"):
        table = _RENORMS if key == "brn" else _SWITCH_NORMS
        if spatial_dims not in table:
            raise ValueError(
                f"make_norm: {key!r} is defined for (N, C), (N, C, L) and (N, C, H, W) input (spatial_dims 0-2)"
            )
        return table[spatial_dims](num_channels, eps=eps, affine=affine)
    if spatial_dims != 0:
        raise ValueError("make_norm: 'rms' normalizes the last dim and is supported for (N, C) features only")
    return RMSNorm(num_channels, eps=eps, elementwise_affine=affine)
