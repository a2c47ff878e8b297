"""The invariance table of Ba et al. (2016, Table 1), checked numerically.

Take one layer's summed inputs ``a = x W^T`` (no bias before the norm) for a batch ``x``
of shape ``(N, inputs)`` and a weight matrix ``W`` of shape ``(units, inputs)``, and
normalize them:

* ``"bn"``: BatchNorm in training mode -- per unit, over the batch (dim 0);
* ``"wn"``: WeightNorm with gain 1 -- ``a_i / ||w_i||``, no statistics at all;
* ``"ln"``: LayerNorm -- per sample, over the units (dim 1);
* ``"rms"``: RMSNorm -- per sample, divide by the root mean square over the units.

A method is *invariant* to a transformation of ``W`` or ``x`` when the normalized
outputs do not change. :data:`TRANSFORMATIONS` lists the six of the paper; each is a
function ``(W, x, generator) -> (W', x')``. :func:`invariance_table` applies every one of
them to random ``W`` and ``x`` and reports, for every method, the largest change of the
normalized outputs: zero (up to rounding) is a check mark, anything else a cross.
``eps`` is 0 by default: the invariances are exact statements about
``(a - mean) / std``, and ``eps > 0`` breaks re-scaling invariance by a relative
``O(eps / var)``.
"""

from __future__ import annotations

from typing import Callable, Dict, Sequence, Tuple

import torch
from torch import Tensor

from ..functional import normalize

__all__ = ["INVARIANCE_METHODS", "TRANSFORMATIONS", "BA2016_TABLE", "normalized_summed_inputs", "invariance_table"]

#: The methods of the table (BatchNorm, WeightNorm, LayerNorm and RMSNorm).
INVARIANCE_METHODS = ("bn", "wn", "ln", "rms")

Transformation = Callable[[Tensor, Tensor, torch.Generator], Tuple[Tensor, Tensor]]


def _positive(generator: torch.Generator, *shape, dtype) -> Tensor:
    """Factors in [0.5, 3): positive, and far enough from 1 that a change shows."""
    return 0.5 + 2.5 * torch.rand(shape, generator=generator, dtype=dtype)


def _vector(generator: torch.Generator, size: int, dtype) -> Tensor:
    return 2 * torch.randn(size, generator=generator, dtype=dtype)


#: The six transformations of Ba et al.'s table by name; each maps ``(W, x, generator)`` to
#: the transformed ``(W, x)``.
#:
#: :meta hide-value:
TRANSFORMATIONS: Dict[str, Transformation] = {
    # W -> delta * W: every weight scaled by one number.
    "weight matrix re-scaling": lambda W, x, g: (_positive(g, dtype=W.dtype) * W, x),
    # W -> W + 1 v^T: the same vector v (Ba et al.'s gamma) added to every unit's incoming
    # weights, so every summed input of a sample moves by the same amount v . x.
    "weight matrix re-centering": lambda W, x, g: (W + _vector(g, W.shape[1], W.dtype), x),
    # w_i -> delta_i * w_i: each unit's incoming weights scaled by its own number.
    "weight vector re-scaling": lambda W, x, g: (_positive(g, W.shape[0], 1, dtype=W.dtype) * W, x),
    # x -> delta * x for every training case.
    "dataset re-scaling": lambda W, x, g: (W, _positive(g, dtype=x.dtype) * x),
    # x -> x + v for every training case (v: a vector, Ba et al.'s gamma).
    "dataset re-centering": lambda W, x, g: (W, x + _vector(g, x.shape[1], x.dtype)),
    # x_0 -> delta * x_0 for one training case only.
    "single training case re-scaling": lambda W, x, g: (
        W,
        torch.cat([_positive(g, dtype=x.dtype) * x[:1], x[1:]]),
    ),
}

# Ba et al. (2016), Table 1: True is a check mark (invariant). RMSNorm is not in the
# paper; its column follows from Zhang & Sennrich (2019): like LN it is invariant to
# re-scaling the summed inputs of a sample, but nothing removes a common shift.
#: The expected table, transformation -> method -> invariant (True) or not.
#:
#: :meta hide-value:
BA2016_TABLE: Dict[str, Dict[str, bool]] = {
    "weight matrix re-scaling": {"bn": True, "wn": True, "ln": True, "rms": True},
    "weight matrix re-centering": {"bn": False, "wn": False, "ln": True, "rms": False},
    "weight vector re-scaling": {"bn": True, "wn": True, "ln": False, "rms": False},
    "dataset re-scaling": {"bn": True, "wn": False, "ln": True, "rms": True},
    "dataset re-centering": {"bn": True, "wn": False, "ln": False, "rms": False},
    "single training case re-scaling": {"bn": False, "wn": False, "ln": True, "rms": True},
}


def normalized_summed_inputs(method: str, W: Tensor, x: Tensor, eps: float = 0.0) -> Tensor:
    """The layer's normalized summed inputs, shape ``(N, units)``, before gain and bias."""
    if method == "wn":
        return x @ (W / torch.linalg.vector_norm(W, dim=1, keepdim=True)).T
    a = x @ W.T
    if method == "bn":
        return normalize(a, dims=0, eps=eps)[0]
    if method == "ln":
        return normalize(a, dims=1, eps=eps)[0]
    if method == "rms":
        return normalize(a, dims=1, eps=eps, center=False)[0]
    raise ValueError(f"unknown method {method!r}; expected one of {INVARIANCE_METHODS}")


def invariance_table(
    methods: Sequence[str] = INVARIANCE_METHODS,
    batch: int = 16,
    inputs: int = 10,
    units: int = 8,
    seed: int = 0,
    eps: float = 0.0,
    dtype: torch.dtype = torch.float64,
) -> Dict[str, Dict[str, float]]:
    """``{transformation: {method: largest |change| of the normalized outputs}}``.

    One random ``W`` and ``x`` (seeded) are shared by all methods; each transformation
    draws its own factors. A change below ~1e-12 (float64) means invariant.
    """
    generator = torch.Generator().manual_seed(seed)
    W = torch.randn(units, inputs, generator=generator, dtype=dtype)
    x = torch.randn(batch, inputs, generator=generator, dtype=dtype) + 0.5
    table = {}
    for name, transform in TRANSFORMATIONS.items():
        W2, x2 = transform(W, x, generator)
        table[name] = {
            method: float(
                (normalized_summed_inputs(method, W2, x2, eps) - normalized_summed_inputs(method, W, x, eps))
                .abs()
                .max()
            )
            for method in methods
        }
    return table
