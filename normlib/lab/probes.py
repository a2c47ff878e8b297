"""Measurements of a network in training, for the experiments on *why* normalization helps.

Every function here leaves the model exactly as it found it (parameters, buffers, ``.grad``,
train/eval flags and torch's random state are restored by :func:`normlib.lab.train.sandbox`),
so it can run as a probe inside :func:`normlib.lab.train.fit` without changing the training run.
They run the model in whatever mode it is in (during ``fit`` that is training mode, so
BatchNorm uses batch statistics, as the optimizer sees it), and compute gradients even when
called under ``torch.no_grad()`` (as ``fit`` calls its probes).

* :func:`distribution_shift` -- how far the distribution of each unit moved between two
  batches of activations, in units of its own spread (Wasserstein-1 over standard deviation).
* :func:`layer_input_shift` -- that shift for the inputs of chosen layers across one SGD
  step: "internal covariate shift" as a change of distribution (Ioffe & Szegedy 2015).
* :func:`gradient_ics` -- internal covariate shift as Santurkar et al. (2018, Definition 2.1)
  measure it: how much a layer's gradient changes when the layers before it take their step.
* :func:`along_gradient` -- loss and gradient at ``w - eta * grad`` for a range of step sizes
  (Santurkar et al. 2018, section 3.1): the variation of the loss, the change of the gradient
  and the "effective beta-smoothness".
* :func:`gradient_norms` -- the norm of the loss gradient with respect to each layer's weight.
"""

from __future__ import annotations

from typing import Callable, Dict, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .train import capture, sandbox

__all__ = [
    "distribution_shift",
    "layer_input_shift",
    "gradient_ics",
    "along_gradient",
    "gradient_norms",
    "weight_layers",
]

LossFn = Callable[[Tensor, Tensor], Tensor]
_WEIGHT_LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


def _per_unit(t: Tensor) -> Tensor:
    """(N, C, *) or (N, C) -> (values, C): one column per unit (feature or channel)."""
    if t.dim() == 1:
        return t[:, None]
    channels = t.shape[1]
    return t.transpose(0, 1).reshape(channels, -1).T


def distribution_shift(before: Tensor, after: Tensor) -> float:
    """How far each unit's distribution moved, relative to its spread, summed over units::

        D = sum_j EMD(before_j, after_j) / sum_j std(before_j)

    ``before`` and ``after`` are activations of the same inputs, shape ``(N, C, *)``; unit ``j``
    is feature (or channel) ``j``, its values are taken over the batch (and positions).
    ``EMD`` is the Wasserstein-1 (earth mover's) distance between the two sets of values; for
    two sets of equal size it is the mean absolute difference of the sorted values, so ``D``
    is 0 for identical distributions, ``c / std`` for a shift by ``c``, and unchanged when
    both inputs are rescaled together. A unit with zero spread (a dead ReLU) adds nothing to
    the denominator; if every unit is constant, ``D`` is ``inf`` for any change and 0 without.
    """
    if before.shape != after.shape:
        raise ValueError(f"distribution_shift: shapes differ, {tuple(before.shape)} vs {tuple(after.shape)}")
    a, b = _per_unit(before.detach().double()), _per_unit(after.detach().double())
    moved = (a.sort(dim=0).values - b.sort(dim=0).values).abs().mean(dim=0).sum()
    spread = a.std(dim=0, correction=0).sum()
    if spread == 0:
        return 0.0 if moved == 0 else float("inf")
    return float(moved / spread)


def _sgd_step_(params: Sequence[Tensor], grads: Sequence[Tensor], lr: float) -> None:
    with torch.no_grad():
        for p, g in zip(params, grads):
            p.sub_(lr * g)


def layer_input_shift(
    model: nn.Module,
    x: Tensor,
    batch: Tuple[Tensor, Tensor],
    names: Sequence[str],
    lr: float,
    *,
    loss_fn: LossFn = F.cross_entropy,
) -> Dict[str, float]:
    """Internal covariate shift as a change of distribution, across one SGD step.

    The outputs of the modules ``names`` are captured on the probe inputs ``x``; then every
    parameter takes one plain SGD step of size ``lr`` on ``batch = (inputs, targets)``; then the
    outputs are captured again. Returns ``{name: distribution_shift(before, after)}``. Both
    captures run in the model's current mode: in training mode a noisy layer draws new noise
    for each, as it would at consecutive training steps. The model is left unchanged.
    """
    names = list(names)
    with sandbox(model), torch.enable_grad():
        before = capture(model, x, names)
        params = [p for p in model.parameters() if p.requires_grad]
        loss = loss_fn(model(batch[0]), batch[1])
        _sgd_step_(params, torch.autograd.grad(loss, params), lr)
        after = capture(model, x, names)
    return {name: distribution_shift(before[name], after[name]) for name in names}


def weight_layers(model: nn.Module) -> Dict[str, nn.Module]:
    """The Linear and Conv layers of ``model`` by name, in the order they were registered
    (the forward order for :func:`normlib.lab.models.mlp` and :func:`normlib.lab.models.cnn`)."""
    return {name: m for name, m in model.named_modules() if isinstance(m, _WEIGHT_LAYERS)}


def gradient_ics(
    model: nn.Module,
    batch: Tuple[Tensor, Tensor],
    lr: float,
    *,
    layers: Optional[Sequence[str]] = None,
    loss_fn: LossFn = F.cross_entropy,
) -> Dict[str, Tuple[float, float]]:
    """Internal covariate shift in Santurkar et al.'s (2018) sense (their Definition 2.1).

    For layer ``i`` with weight ``W_i``, ``G = dL/dW_i`` at the current parameters and ``G'`` the
    same gradient after every parameter registered *before* ``W_i`` (the earlier layers, with
    their biases and normalization parameters) has taken its SGD step ``-lr * dL/dp``; both on
    ``batch``. ``G'`` is the gradient layer ``i`` would follow if it saw the input distribution
    that the simultaneous update of the earlier layers creates. Returns
    ``{layer: (||G - G'||, cos(G, G'))}``; the first layer has nothing before it (0 and 1).
    ``layers`` defaults to every Linear/Conv layer (:func:`weight_layers`). The model is left
    unchanged.
    """
    modules = weight_layers(model)
    names = list(modules) if layers is None else list(layers)
    missing = [n for n in names if n not in modules]
    if missing:
        raise KeyError(f"gradient_ics: no Linear/Conv layer named {missing}; the model has {list(modules)}")
    inputs, targets = batch
    with sandbox(model), torch.enable_grad():
        params = [p for p in model.parameters() if p.requires_grad]
        index = {id(p): k for k, p in enumerate(params)}
        start = [p.detach().clone() for p in params]
        grads = torch.autograd.grad(loss_fn(model(inputs), targets), params)
        result = {}
        for name in names:
            weight = modules[name].weight
            k = index[id(weight)]
            with torch.no_grad():
                for p, p0 in zip(params, start):
                    p.copy_(p0)
            _sgd_step_(params[:k], grads[:k], lr)
            shifted = torch.autograd.grad(loss_fn(model(inputs), targets), weight)[0]
            g = grads[k]
            difference = float((g - shifted).norm())
            cosine = float(F.cosine_similarity(g.flatten(), shifted.flatten(), dim=0))
            result[name] = (difference, cosine)
    return result


def _flat_grad(model, params, inputs, targets, loss_fn):
    loss = loss_fn(model(inputs), targets)
    grads = torch.autograd.grad(loss, params)
    return float(loss.detach()), torch.cat([g.reshape(-1) for g in grads])


def along_gradient(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    step_sizes: Sequence[float],
    *,
    loss_fn: LossFn = F.cross_entropy,
) -> Dict[str, object]:
    """Loss and gradient along the gradient direction (Santurkar et al. 2018, section 3.1).

    With ``g = grad L(w)`` on ``(x, y)`` and every step size ``eta``, evaluates
    ``L(w - eta g)`` and ``grad L(w - eta g)``. Returns a dict with

    - ``"loss"``: ``L(w)``; ``"grad_norm"``: ``||g||``;
    - ``"losses"``: ``[L(w - eta g) for eta in step_sizes]``;
    - ``"grad_changes"``: ``[||grad L(w - eta g) - g|| for eta in step_sizes]``;
    - ``"loss_range"``: ``max - min`` of ``losses`` (how much the loss varies along the step);
    - ``"max_grad_change"``: the largest of ``grad_changes`` ("gradient predictiveness");
    - ``"beta"``: ``max over eta of ||grad L(w - eta g) - g|| / (eta ||g||)``, the "effective
      beta-smoothness" (for a quadratic loss with Hessian H it is at most the largest
      eigenvalue of H, and equal to ``||H g|| / ||g||``).

    The model is left unchanged (so a BatchNorm model in training mode keeps its running
    statistics, and a noisy layer's draws do not disturb the training run's random stream).
    """
    step_sizes = [float(eta) for eta in step_sizes]
    if not step_sizes or min(step_sizes) <= 0:
        raise ValueError(f"along_gradient: step sizes must be positive, got {step_sizes}")
    with sandbox(model), torch.enable_grad():
        params = [p for p in model.parameters() if p.requires_grad]
        start = [p.detach().clone() for p in params]
        loss0, g0 = _flat_grad(model, params, x, y, loss_fn)
        grad_norm = float(g0.norm())
        losses, changes = [], []
        for eta in step_sizes:
            with torch.no_grad():
                offset = 0
                for p, p0 in zip(params, start):
                    count = p.numel()
                    p.copy_(p0 - eta * g0[offset : offset + count].view_as(p))
                    offset += count
            loss, g = _flat_grad(model, params, x, y, loss_fn)
            losses.append(loss)
            changes.append(float((g - g0).norm()))
    betas = [c / (eta * grad_norm) if grad_norm > 0 else 0.0 for c, eta in zip(changes, step_sizes)]
    return {
        "step_sizes": step_sizes,
        "loss": loss0,
        "grad_norm": grad_norm,
        "losses": losses,
        "grad_changes": changes,
        "loss_range": max(losses) - min(losses),
        "max_grad_change": max(changes),
        "beta": max(betas),
    }


def gradient_norms(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    *,
    layers: Optional[Sequence[str]] = None,
    loss_fn: LossFn = F.cross_entropy,
) -> Dict[str, float]:
    """``{layer: ||dL/dW||}`` for every Linear/Conv layer (or the named ones), on ``(x, y)``,
    in the model's current mode. The model (and any ``.grad`` it holds) is left unchanged."""
    modules = weight_layers(model)
    names = list(modules) if layers is None else list(layers)
    missing = [n for n in names if n not in modules]
    if missing:
        raise KeyError(f"gradient_norms: no Linear/Conv layer named {missing}; the model has {list(modules)}")
    with sandbox(model), torch.enable_grad():
        weights = [modules[n].weight for n in names]
        grads = torch.autograd.grad(loss_fn(model(x), y), weights)
    return {name: float(g.norm()) for name, g in zip(names, grads)}
