"""gamma and beta as module parameters: the one place every layer creates and resets them."""

from __future__ import annotations

import torch
from torch import nn


def register_affine(module: nn.Module, shape, weight: bool, bias, factory_kwargs) -> None:
    """Register ``weight`` (gamma) and ``bias`` (beta) of ``shape``; an absent one is ``None``.

    There is no beta without a gamma (``bias`` only counts when ``weight`` is true), and the
    names and order match torch.nn, so state-dict keys are identical. ``bias=None`` registers
    no ``bias`` at all, for layers that never have one (RMSNorm), as in torch.nn.
    """
    gamma = nn.Parameter(torch.empty(shape, **factory_kwargs)) if weight else None
    beta = nn.Parameter(torch.empty(shape, **factory_kwargs)) if weight and bias else None
    module.register_parameter("weight", gamma)
    if bias is not None:
        module.register_parameter("bias", beta)


def reset_affine(module: nn.Module) -> None:
    """gamma = 1 and beta = 0: a fresh layer's step 4 is the identity."""
    if module.weight is not None:
        nn.init.ones_(module.weight)
    if getattr(module, "bias", None) is not None:
        nn.init.zeros_(module.bias)
