"""Weight normalization as a parametrization: w = g * v / ||v||.

Like :func:`torch.nn.utils.parametrizations.weight_norm`: the module keeps the
magnitude ``g`` (``parametrizations.<name>.original0``) and the direction ``v``
(``...original1``) as parameters, and recomputes ``w`` from them when it is used.
The norm of ``v`` is taken over every dim except ``dim`` (for a Linear or Conv
weight with ``dim=0``: one norm per output unit).
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize

__all__ = ["weight_norm", "norm_except_dim"]


def norm_except_dim(v: Tensor, dim: int) -> Tensor:
    """L2 norm of ``v`` over every dim but ``dim``, keeping dims (shape (out, 1, 1, ...) for dim=0).

    ``dim=-1`` means "no dim is kept": one norm for the whole tensor (PyTorch's convention
    for ``weight_norm(..., dim=None)``).
    """
    if dim == -1:
        return torch.linalg.vector_norm(v)
    if not -v.dim() <= dim < v.dim():
        raise IndexError(
            f"Dimension out of range (expected to be in range of [{-v.dim()}, {v.dim() - 1}], but got {dim}): "
            f"weight_norm's dim must name a dim of the {v.dim()}-D weight"
        )
    reduced = [d for d in range(v.dim()) if d != dim % v.dim()]
    if not reduced:  # a 1-D tensor normalized along its only dim: each entry is its own vector
        return v.abs()
    return torch.linalg.vector_norm(v, dim=reduced, keepdim=True)


class _WeightNorm(nn.Module):
    def __init__(self, dim: Optional[int] = 0) -> None:
        super().__init__()
        self.dim = -1 if dim is None else dim

    def forward(self, weight_g: Tensor, weight_v: Tensor) -> Tensor:
        return weight_v * (weight_g / norm_except_dim(weight_v, self.dim))

    def right_inverse(self, weight: Tensor):
        # Start from the current weight: g = ||w|| and v = w reproduce it exactly.
        return norm_except_dim(weight, self.dim), weight


def _legacy_keys_hook(module: nn.Module, name: str):
    """Accept checkpoints saved with the old torch.nn.utils.weight_norm (<name>_g, <name>_v)."""

    def hook(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs):
        g_key, v_key = f"{prefix}{name}_g", f"{prefix}{name}_v"
        if g_key in state_dict and v_key in state_dict:
            state_dict[f"{prefix}parametrizations.{name}.original0"] = state_dict.pop(g_key)
            state_dict[f"{prefix}parametrizations.{name}.original1"] = state_dict.pop(v_key)

    return hook


def weight_norm(module: nn.Module, name: str = "weight", dim: Optional[int] = 0) -> nn.Module:
    """Reparametrize ``module.<name>`` as ``g * v / ||v||`` and return the module.

    Same state-dict keys as PyTorch's parametrization, so checkpoints load both ways.
    Undo it with ``torch.nn.utils.parametrize.remove_parametrizations(module, name)``.
    """
    if not isinstance(getattr(module, name, None), Tensor):
        raise ValueError(f"weight_norm: module {type(module).__name__} has no tensor attribute {name!r}")
    parametrize.register_parametrization(module, name, _WeightNorm(dim), unsafe=True)
    module._register_load_state_dict_pre_hook(_legacy_keys_hook(module, name))
    return module
