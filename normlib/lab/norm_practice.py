"""How normalization is used in Transformers today: small tools to check it.

Chapter 6 measures and checks what current models do with their norms:

* :func:`dispatched_ops` and :func:`kernel_kind` -- which ATen operations a call runs,
  so that a timing compares a fused kernel with a fused kernel (PyTorch 2.13 runs
  ``F.rms_norm`` on the CPU as five composed operations, ``F.layer_norm`` as one);
* :func:`seconds_per_call` -- the fastest of a few timings of forward + backward;
* :func:`attention_logits` -- scaled dot-product logits, optionally with QK-norm
  (queries and keys layer-normalized per head, Dehghani et al. 2023);
* :class:`DynamicTanh` -- ``y = weight * tanh(alpha * x) + bias``, the elementwise
  replacement of a norm of Zhu et al. (2025): no statistics at all;
* :func:`weight_decay_groups` -- the optimizer parameter groups that keep weight decay
  off biases and off the gains and shifts of norms.
"""

from __future__ import annotations

import math
import time
from typing import Callable, Dict, List

import torch
from torch import Tensor, nn
from torch.nn import functional as TF
from torch.utils._python_dispatch import TorchDispatchMode

__all__ = [
    "dispatched_ops",
    "kernel_kind",
    "seconds_per_call",
    "attention_logits",
    "DynamicTanh",
    "weight_decay_groups",
]


class _RecordOps(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.names: List[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.names.append(func.overloadpacket.__name__)
        return func(*args, **(kwargs or {}))


def dispatched_ops(fn: Callable, *args) -> List[str]:
    """Names of the ATen operations ``fn(*args)`` runs, in order (forward only, under
    ``no_grad``). A fused kernel is one operation (``["native_layer_norm"]``); a norm
    composed of tensor operations is several (``["pow", "mean", "add_", "rsqrt", "mul"]``)."""
    recorder = _RecordOps()
    with torch.no_grad(), recorder:
        fn(*args)
    return recorder.names


def kernel_kind(fn: Callable, *args) -> str:
    """``"fused"`` when ``fn(*args)`` runs one ATen operation, ``"composed"`` otherwise."""
    return "fused" if len(dispatched_ops(fn, *args)) == 1 else "composed"


def seconds_per_call(fn: Callable[[Tensor], Tensor], x: Tensor, calls: int = 10, repeats: int = 5) -> float:
    """Fastest of ``repeats`` timings of ``fn(x).sum().backward()``, per call.

    The fastest block is the one least disturbed by other programs; the gradients
    accumulate in ``x.grad`` (and the parameters' ``.grad``), which is harmless here."""
    if calls < 1 or repeats < 1:
        raise ValueError(f"calls and repeats must be >= 1, got {calls}, {repeats}")
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(calls):
            fn(x).sum().backward()
        best = min(best, (time.perf_counter() - start) / calls)
    return best


def attention_logits(
    x: Tensor, w_q: Tensor, w_k: Tensor, num_heads: int, qk_norm: bool = False, eps: float = 1e-5
) -> Tensor:
    """Attention logits ``q . k / sqrt(d_head)`` of tokens ``x`` (N, T, D), shape (N, H, T, T).

    ``q = x @ w_q.T`` and ``k = x @ w_k.T`` are split into ``num_heads`` heads of
    ``d_head = D / num_heads`` features. With ``qk_norm=True`` each head's query and key
    are layer-normalized over their ``d_head`` features (no gain, no shift) before the
    product, so that both have norm at most ``sqrt(d_head)`` and every logit lies in
    ``[-sqrt(d_head), sqrt(d_head)]`` whatever the size of the weights."""
    n, t, d = x.shape
    if d % num_heads:
        raise ValueError(f"D = {d} is not divisible by num_heads = {num_heads}")
    d_head = d // num_heads
    q = (x @ w_q.T).reshape(n, t, num_heads, d_head).transpose(1, 2)
    k = (x @ w_k.T).reshape(n, t, num_heads, d_head).transpose(1, 2)
    if qk_norm:
        q = TF.layer_norm(q, (d_head,), eps=eps)
        k = TF.layer_norm(k, (d_head,), eps=eps)
    return q @ k.transpose(-2, -1) / math.sqrt(d_head)


class DynamicTanh(nn.Module):
    """Dynamic Tanh (Zhu et al., 2025): ``y = weight * tanh(alpha * x) + bias``.

    ``alpha`` is one learned number (initialized to ``alpha_init``), ``weight`` and
    ``bias`` are per feature (the last ``normalized_shape`` dims), like LayerNorm's gamma
    and beta. It computes no mean and no variance: each output value depends on its own
    input value only."""

    def __init__(self, normalized_shape, alpha_init: float = 0.5) -> None:
        super().__init__()
        if isinstance(normalized_shape, int):
            normalized_shape = (normalized_shape,)
        self.normalized_shape = tuple(normalized_shape)
        self.alpha = nn.Parameter(torch.tensor(float(alpha_init)))
        self.weight = nn.Parameter(torch.ones(self.normalized_shape))
        self.bias = nn.Parameter(torch.zeros(self.normalized_shape))

    def extra_repr(self) -> str:
        return f"{self.normalized_shape}, alpha={self.alpha.item():.3g}"

    def forward(self, x: Tensor) -> Tensor:
        return self.weight * torch.tanh(self.alpha * x) + self.bias


def weight_decay_groups(model: nn.Module, weight_decay: float) -> List[Dict]:
    """Parameter groups: decay on weight matrices and embeddings only.

    Every parameter of a normalization layer (its gain and shift, of
    any shape: LayerNorm([C, H, W]) has 3-D ones), every bias and every
    other 0-D or 1-D parameter goes to a group without weight decay.
    Pass the result to an optimizer: ``torch.optim.AdamW(groups, ...)``."""
    norm_types = _norm_types()
    norm_params = {
        id(p) for module in model.modules() if isinstance(module, norm_types) for p in module.parameters(recurse=False)
    }
    decay, no_decay = [], []
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            continue
        spared = id(parameter) in norm_params or parameter.dim() < 2
        (no_decay if spared or name.endswith("bias") else decay).append(parameter)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def _norm_types() -> tuple:
    """The normalization layer classes of torch.nn and of normlib."""
    import normlib

    ours = tuple(
        obj
        for obj in (getattr(normlib, name) for name in normlib.__all__)
        if isinstance(obj, type) and issubclass(obj, nn.Module) and "Norm" in obj.__name__
    )
    return (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm, nn.RMSNorm) + ours
