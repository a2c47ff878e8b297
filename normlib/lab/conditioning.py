"""Conditioning: why the scale of inputs and activations matters to gradient descent.

Chapter 2 ("Why normalize") runs two kinds of experiment; this module holds their mechanics.

**Least squares on a design matrix** (NumPy, float64). For ``L(w) = |Xw - y|^2 / (2n)`` the
Hessian is ``H = X^T X / n`` (:func:`hessian`), whatever ``w`` is; its condition number
(:func:`condition_number`) sets how fast gradient descent converges, and its largest
eigenvalue the largest stable learning rate, ``2 / lambda_max``.

* :func:`design` stacks features and a column of ones; :func:`standardize` z-scores one
  feature; :func:`input_variants` builds the chapter's five versions of two features (raw,
  rescaled unit, centred only, scaled only, standardized).
* :func:`best_learning_rate` is ``2 / (lambda_max + lambda_min)``, :func:`predicted_steps`
  the number of steps it needs at most (from the condition number alone).
* :func:`gradient_descent` runs plain gradient descent from ``w = 0`` and returns the excess
  loss at every step (and, on request, the weights): on a quadratic it converges for every
  learning rate below ``2 / lambda_max`` and diverges above it.

**Scale through a deep MLP** (torch). :func:`deep_mlp` builds the chapter's tanh/sigmoid/ReLU
MLPs (from :func:`normlib.lab.models.mlp`), optionally with every weight drawn with a gain
(:func:`init_gain_`); :func:`layer_report` measures, for one batch, each hidden layer's output
scale, its fraction of saturated units (:func:`saturated`) and its weight gradient;
:func:`scale_probe` is a probe for :func:`normlib.lab.train.fit` that records every layer's
mean and standard deviation during training, and :func:`per_layer` reads them back.
"""

from __future__ import annotations

import math
from typing import Callable, Dict, Optional

import numpy as np
import torch
from torch import nn

from .. import runtime
from . import models, probes, train

__all__ = [
    "design",
    "hessian",
    "condition_number",
    "standardize",
    "input_variants",
    "best_learning_rate",
    "predicted_steps",
    "gradient_descent",
    "init_gain_",
    "deep_mlp",
    "saturated",
    "layer_report",
    "scale_probe",
    "per_layer",
]

# --------------------------------------------------------------------------- least squares


def design(*features: np.ndarray) -> np.ndarray:
    """The design matrix: one column per feature, then a column of ones."""
    return np.column_stack([*features, np.ones(len(features[0]))])


def hessian(X: np.ndarray) -> np.ndarray:
    """The Hessian X^T X / n of the least-squares loss, at every w."""
    return X.T @ X / len(X)


def condition_number(X: np.ndarray) -> float:
    """lambda_max / lambda_min of hessian(X)."""
    eigenvalues = np.linalg.eigvalsh(hessian(X))  # ascending
    return float(eigenvalues[-1] / eigenvalues[0])


def standardize(feature: np.ndarray) -> np.ndarray:
    """The z-score ``(x - mean) / std`` of one feature (population standard deviation)."""
    return (feature - feature.mean()) / feature.std()


def input_variants(first: np.ndarray, second: np.ndarray, first_unit: float = 1000.0) -> Dict[str, np.ndarray]:
    """Five design matrices of the same two features (the chapter's mileage in km and age in
    years): raw; the first feature in units of ``first_unit``; centred only; scaled only
    (divided by the standard deviation, mean kept); standardized."""
    return {
        "raw (km, years)": design(first, second),
        "mileage in 1000 km": design(first / first_unit, second),
        "centred only": design(first - first.mean(), second - second.mean()),
        "scaled only": design(first / first.std(), second / second.std()),
        "standardized": design(standardize(first), standardize(second)),
    }


def best_learning_rate(X: np.ndarray) -> float:
    """The best constant learning rate ``2 / (lambda_max + lambda_min)`` for :func:`hessian`
    ``(X)``: it shrinks the error by at most ``(kappa - 1) / (kappa + 1)`` per step."""
    eigenvalues = np.linalg.eigvalsh(hessian(X))
    return float(2 / (eigenvalues[-1] + eigenvalues[0]))


def predicted_steps(kappa: float, tol: float = 1e-6) -> float:
    """At most this many steps at the best learning rate bring the excess loss below ``tol``
    of its start: ``ln(1/tol) / (-2 ln q)`` with ``q = (kappa - 1) / (kappa + 1)``."""
    q = (kappa - 1) / (kappa + 1)
    return math.log(1 / tol) / (-2 * math.log(q)) if kappa > 1 else 1


def gradient_descent(
    X: np.ndarray,
    y: np.ndarray,
    lr: float,
    max_steps: int = 20_000,
    tol: float = 1e-6,
    *,
    weights: bool = False,
):
    """Plain gradient descent on the least-squares loss from ``w = 0``.

    Each step multiplies the error ``w - w*`` by ``I - lr H``. Returns the excess loss
    ``L(w_t) - L(w*)`` at every step, relative to the start (so ``[1.0, ...]``); stops once
    it is at or below ``tol`` or after ``max_steps`` steps. With ``weights=True`` also
    returns the weights ``w_t`` of every step, one row each.
    """
    H, b = hessian(X), X.T @ y / len(X)
    w_star = np.linalg.solve(H, b)
    error = -w_star  # w_0 - w* with w_0 = 0
    start = 0.5 * error @ H @ error
    excess, errors = [1.0], [error]
    while excess[-1] > tol and len(excess) <= max_steps:
        error = error - lr * (H @ error)
        excess.append(0.5 * error @ H @ error / start)
        if weights:
            errors.append(error)
    if weights:
        return np.array(excess), w_star + np.array(errors)
    return np.array(excess)


# --------------------------------------------------------------------------- deep networks


def init_gain_(net: nn.Module, gain: float) -> nn.Module:
    """In place: every Linear of ``net`` gets weights drawn from
    N(0, gain^2 / fan_in) and zero biases."""
    for module in net.modules():
        if isinstance(module, nn.Linear):
            std = gain / math.sqrt(module.in_features)  # fan_in = in_features
            nn.init.normal_(module.weight, std=std)
            nn.init.zeros_(module.bias)
    return net


def deep_mlp(
    norm: str,
    activation: str = "tanh",
    gain: Optional[float] = None,
    depth: int = 10,
    width: int = 100,
    *,
    in_features: int = 64,
    num_classes: int = 10,
    seed: int = 0,
) -> nn.Sequential:
    """A :func:`~normlib.lab.models.mlp` with ``depth`` hidden layers of ``width`` units,
    ``norm`` before each activation, seeded with ``seed``. ``gain=None`` keeps PyTorch's
    default initialization; a number redraws the weights with :func:`init_gain_`. BatchNorm
    layers draw no random numbers, so ``"none"`` and ``"bn"`` get the same weights."""
    runtime.seed(seed)
    net = models.mlp(in_features, num_classes, (width,) * depth, norm=norm, activation=activation)
    return net if gain is None else init_gain_(net, gain)


def saturated(output: torch.Tensor, activation: str) -> torch.Tensor:
    """Where an activation's output is saturated: tanh beyond +-0.99, sigmoid below 0.01 or
    above 0.99; ReLU (no upper limit) never."""
    if activation == "tanh":
        return output.abs() > 0.99
    if activation == "sigmoid":
        return (output < 0.01) | (output > 0.99)
    if activation == "relu":
        return torch.zeros_like(output, dtype=torch.bool)
    raise ValueError(f"saturated knows tanh, sigmoid and relu, not {activation!r}")


def _children(net: nn.Module, prefix: str):
    return [name for name, _ in net.named_children() if name.startswith(prefix)]


def layer_report(net: nn.Module, x: torch.Tensor, y: torch.Tensor, activation: str = "tanh") -> Dict[str, np.ndarray]:
    """For every hidden layer of ``net`` (in its current mode, left unchanged), on one batch:
    ``"mean"`` and ``"std"`` of the activation's output (over the batch and the units),
    ``"saturated"`` (fraction of saturated outputs) and ``"gradient"`` (the norm of the
    cross-entropy loss's gradient with respect to the layer's weight matrix)."""
    names = _children(net, "act")
    with train.sandbox(net):  # a training-mode pass would move BatchNorm's running stats
        outputs = train.capture(net, x, names)
    gradients = probes.gradient_norms(net, x, y, layers=_children(net, "linear"))
    return {
        "mean": np.array([float(outputs[n].mean()) for n in names]),
        "std": np.array([float(outputs[n].std()) for n in names]),
        "saturated": np.array([float(saturated(outputs[n], activation).float().mean()) for n in names]),
        "gradient": np.array(list(gradients.values())),
    }


def scale_probe(x: torch.Tensor, depth: int) -> Callable[[nn.Module], Dict[str, float]]:
    """A probe for :func:`~normlib.lab.train.fit`: the mean and standard deviation of every
    ``linear{i}`` and ``act{i}`` output (``i = 1..depth``) on the batch ``x``, as keys
    ``"mean act3"``, ``"std linear3"``. It runs inside :func:`~normlib.lab.train.sandbox`, so
    measuring changes nothing in the run (not even BatchNorm's running statistics)."""
    names = [f"linear{i}" for i in range(1, depth + 1)] + [f"act{i}" for i in range(1, depth + 1)]

    def probe(model: nn.Module) -> Dict[str, float]:
        with train.sandbox(model):
            stats = train.activation_stats(model, x, names)
        return {f"{key} {name}": s[key] for name, s in stats.items() for key in ("mean", "std")}

    return probe


def per_layer(history: train.History, kind: str, step: int, stat: str = "std") -> np.ndarray:
    """What :func:`scale_probe` recorded at evaluation ``step`` for every layer ``kind1``,
    ``kind2``, ... (``kind`` is ``"act"`` or ``"linear"``; ``stat`` is ``"std"`` or ``"mean"``)."""
    index = history.steps.index(step)
    values, i = [], 1
    while f"{stat} {kind}{i}" in history.probes:
        values.append(history.probes[f"{stat} {kind}{i}"][index])
        i += 1
    if not values:
        raise KeyError(f"no probe {stat!r} of {kind!r} layers in this history")
    return np.array(values)
