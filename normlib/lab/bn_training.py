"""Experiment helpers for chapter 4, BatchNorm in training.

* :func:`four_gradients` -- one loss's gradients through training-mode BatchNorm
  computed four ways (a graph walk, the closed form, torch's autograd, normlib's
  ``BatchNormFunction``), to compare them.
* :func:`deep_mlp` -- the chapter's six-layer ReLU network, optionally with its
  head left at PyTorch's default initialization while the layers that feed
  BatchNorm get another scale.
* :func:`sgd_by_role` -- plain SGD with one learning rate for the weights that feed
  BatchNorm, one for BatchNorm's gamma and beta, one for the head.
* :func:`sweep` -- training runs over a grid of settings and seeds.
* :func:`trained` and :func:`small_batch_accuracies` -- a trained model, and its
  accuracy with batch statistics, running statistics and recomputed (precise)
  statistics, to tell a train/inference mismatch from overfitting.
* :func:`batch_mean_noise` -- how much a channel's batch mean varies across
  random batches of images, against two predictions.
* :func:`bias_drift` -- how far a bias right before BatchNorm moves under an
  optimizer (SGD: not at all; Adam: by about the learning rate per step).
"""

from __future__ import annotations

import copy
from typing import Callable, Dict, Hashable, Mapping, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn

from .. import functional as NF
from ..bn_tools import recompute_bn_stats
from . import models, train
from .batching import random_picks
from .data import Dataset, batches

__all__ = [
    "four_gradients",
    "largest_difference",
    "deep_mlp",
    "sgd_by_role",
    "sweep",
    "trained",
    "small_batch_accuracies",
    "batch_mean_noise",
    "bias_drift",
]

Gradients = Tuple[Tensor, Tensor, Tensor]


def four_gradients(
    x: Tensor,
    gamma: Tensor,
    beta: Tensor,
    grad_y: Tensor,
    graph_backward: Callable[..., Gradients],
    eps: float = 1e-5,
) -> Dict[str, Gradients]:
    """``(dx, dgamma, dbeta)`` of training-mode BatchNorm for the upstream
    gradient ``grad_y``, four ways, in float64 (statistics: all axes but 1):
    ``"graph"``: ``graph_backward(x, gamma, grad_y, eps)``, node by node;
    ``"closed form"``: :func:`normlib.functional.batch_norm_backward`;
    ``"torch autograd"``: through ``torch.nn.functional.batch_norm``;
    ``"BatchNormFunction"``: normlib's ``autograd.Function``."""
    x, gamma, beta, grad_y = (t.double() for t in (x, gamma, beta, grad_y))
    dims = (0, *range(2, x.dim()))
    # the closed form needs x_hat and s = 1 / sqrt(var + eps) of the forward
    _, mean, var = NF.normalize(x, dims, eps)
    s = torch.rsqrt(var + eps)
    x_hat = (x - mean) * s
    results = {
        "graph": tuple(graph_backward(x, gamma, grad_y, eps)),
        "closed form": NF.batch_norm_backward(grad_y, x_hat, s, gamma, dims),
    }

    def torch_bn(x, g, b):
        return nn.functional.batch_norm(
            x,
            None,  # no running statistics: training mode
            None,
            g,
            b,
            training=True,
            eps=eps,
        )

    def normlib_bn(x, g, b):
        return NF.BatchNormFunction.apply(x, g, b, eps)[0]

    # autograd: backpropagate grad_y from fresh leaves
    for name, forward in [
        ("torch autograd", torch_bn),
        ("BatchNormFunction", normlib_bn),
    ]:
        leaves = [t.clone().requires_grad_() for t in (x, gamma, beta)]
        forward(*leaves).backward(grad_y)
        results[name] = tuple(t.grad for t in leaves)
    return results


def largest_difference(results: Mapping[str, Gradients], reference: str = "torch autograd") -> float:
    """The largest absolute difference of any gradient in ``results`` from ``results[reference]``."""
    return max(
        (got - expected).abs().max().item()
        for result in results.values()
        for got, expected in zip(result, results[reference])
    )


def deep_mlp(
    norm: str, init="he", *, scale_head: bool = True, depth: int = 5, width: int = 64, eps: Optional[float] = None
):
    """A builder (no arguments -> model) of the chapter's ReLU network: ``depth`` hidden
    layers of ``width`` on 64 inputs, 10 classes, hidden biases only without
    normalization. ``init`` is passed to :func:`normlib.lab.models.mlp` (``"he"`` or the
    standard deviation of N(0, std) weights). With ``scale_head=False`` the head keeps
    PyTorch's default initialization, so only the layers that feed a normalization (or,
    without one, the hidden layers) get ``init``: a large head would saturate the
    softmax whatever the normalization does. ``eps`` replaces the normalization layers'
    epsilon (PyTorch's default 1e-5) where given."""
    if eps is not None and norm == "none":
        raise ValueError("deep_mlp: eps needs a normalization layer, but norm='none'")

    def build() -> nn.Sequential:
        model = models.mlp(64, 10, hidden=(width,) * depth, norm=norm, bias=(norm == "none"), init=init)
        if not scale_head:
            model.head.reset_parameters()
        if eps is not None:
            for name, module in model.named_children():
                if name.startswith("norm"):
                    module.eps = eps
        return model

    return build


def sgd_by_role(hidden: float, affine: float, head: float) -> Callable[[Sequence[Tensor]], torch.optim.SGD]:
    """An ``optimizer`` for :func:`normlib.lab.train.fit` (plain SGD) that gives the
    parameters of a :func:`deep_mlp` ``("bn")`` network three learning rates: ``hidden``
    for the weights of the hidden layers (those that feed BatchNorm), ``affine`` for
    BatchNorm's gamma and beta, ``head`` for the head's weight and bias.

    ``fit`` passes the parameters in ``model.parameters()`` order: each hidden layer's
    weight, then its BatchNorm's gamma and beta, and the head's weight and bias last.
    Parameters in any other arrangement (a plain network's hidden biases, say) raise a
    ValueError rather than get a wrong rate."""

    def make(params: Sequence[Tensor]) -> torch.optim.SGD:
        params = list(params)
        body, head_params = params[:-2], params[-2:]
        weights, gammas, betas = body[0::3], body[1::3], body[2::3]
        shapes_ok = (
            len(params) >= 5
            and len(body) % 3 == 0
            and [p.dim() for p in head_params] == [2, 1]
            and all(w.dim() == 2 for w in weights)
            and all(g.dim() == 1 and g.shape == b.shape == w.shape[:1] for w, g, b in zip(weights, gammas, betas))
        )
        if not shapes_ok:
            raise ValueError(
                "sgd_by_role expects the parameters of deep_mlp('bn'): per hidden layer a weight, "
                "then gamma and beta of its size, and the head's weight and bias last; got shapes "
                f"{[tuple(p.shape) for p in params]}"
            )
        groups = [
            {"params": weights, "lr": hidden},
            {"params": gammas + betas, "lr": affine},
            {"params": head_params, "lr": head},
        ]
        return torch.optim.SGD(groups, lr=head)

    return make


def sweep(
    runs: Mapping[Hashable, Tuple[Callable[[], nn.Module], Mapping]],
    data: Dataset,
    *,
    seeds: Sequence[int] = (0, 1, 2),
    **fit_kwargs,
) -> Dict[Hashable, list]:
    """``{key: [History for each seed]}`` for ``runs = {key: (build, settings)}``: each
    run is :func:`normlib.lab.train.run` with ``fit_kwargs`` updated by ``settings``
    (e.g. ``{"lr": 1.0}``), so runs that share a seed see the same batch order."""
    return {
        key: [train.run(build, data, seed=seed, **{**fit_kwargs, **settings}) for seed in seeds]
        for key, (build, settings) in runs.items()
    }


def trained(build: Callable[[], nn.Module], data: Dataset, *, seed: int = 0, **fit_kwargs):
    """``(model, history)``: seed, build and :func:`~normlib.lab.train.fit` a model, and
    keep it (``train.run`` keeps only the history)."""
    from ..runtime import seed as seed_everything

    seed_everything(seed)
    model = build()
    history = train.fit(model, data, seed=seed, **fit_kwargs)
    return model, history


def small_batch_accuracies(
    model: nn.Module, data: Dataset, batch_size: int, *, precise_batch_size: int = 64
) -> Dict[str, float]:
    """Test accuracy of a BatchNorm model three ways, the model itself unchanged:

    All three use the first ``len(x_test) // batch_size * batch_size`` test examples.

    * ``"eval, running statistics"``: ``eval()`` mode, as deployed;
    * ``"training mode, batches of N"``: training mode on test batches of
      ``batch_size`` in a fixed order, so every BatchNorm uses that batch's
      statistics, as in training (on a copy: the running statistics of ``model``
      stay as they are);
    * ``"eval, precise BN"``: ``eval()`` mode after
      :func:`normlib.recompute_bn_stats` on the whole training split (batches of
      ``precise_batch_size``), on a copy.
    """
    usable = data.x_test.shape[0] // batch_size * batch_size  # no last, smaller batch
    test = (data.x_test[:usable], data.y_test[:usable])
    in_batches = copy.deepcopy(model)
    precise = copy.deepcopy(model)
    recompute_bn_stats(precise, batches(data.x_train, data.y_train, precise_batch_size, shuffle=False, drop_last=False))
    return {
        "eval, running statistics": train.evaluate(model, *test)[1],
        "training mode, batches of N": train.evaluate(in_batches, *test, batch_size=batch_size, mode="train")[1],
        "eval, precise BN": train.evaluate(precise, *test)[1],
    }


def batch_mean_noise(features: Tensor, batch_size: int, *, trials: int = 2000, generator=None) -> Dict[str, Tensor]:
    """How much each channel's batch mean varies over ``trials`` random batches of
    ``batch_size`` images drawn without replacement from ``features`` (P, C, H, W).

    Returns per-channel tensors: ``"measured"`` (the variance of the batch means,
    corrected by (P - 1)/(P - N) for the finite pool of images), ``"independent"``
    (σ²/m with m = N·H·W, σ² over all values of the channel: what m independent
    values would give) and ``"between images"`` (the variance of the per-image
    means divided by N: the batch mean *is* the mean of N image means, so this is
    the prediction whatever the positions' correlation). Their ratio
    ``measured / independent`` is the design effect 1 + (H·W - 1)·ρ of the
    positions' average correlation ρ: with ρ near 1 the batch mean is only as good
    as N values, however large m is."""
    pool, channels = features.shape[0], features.shape[1]
    positions = features[0, 0].numel()
    image_means = features.reshape(pool, channels, positions).mean(dim=2)  # (P, C)
    total = features.transpose(0, 1).reshape(channels, -1).var(dim=1, correction=0)
    picks = random_picks(pool, batch_size, trials, generator)
    batch_means = image_means[picks].mean(dim=1)  # (trials, C)
    finite_pool = (pool - batch_size) / (pool - 1)
    return {
        "measured": batch_means.var(dim=0) / finite_pool,
        "independent": total / (batch_size * positions),
        "between images": image_means.var(dim=0, correction=0) / batch_size,
    }


def bias_drift(optimizer: str, *, steps: int = 200, lr: float = 0.01, seed: int = 0) -> Dict[str, float]:
    """Train ``Linear(8, 4) -> BatchNorm1d(4)`` (training mode) on random regression
    batches of 16 with ``optimizer`` (``"sgd"`` or ``"adam"``) and report
    ``"bias drift"`` (the largest change of the Linear bias), ``"weight drift"``
    (the same for its weight) and ``"output change"`` (the largest change of the
    trained model's output on one batch when the bias is set back to its initial
    value: the bias never changes the output)."""
    from ..batchnorm import BatchNorm1d
    from ..runtime import seed as seed_everything

    seed_everything(seed)
    layer = nn.Sequential(nn.Linear(8, 4), BatchNorm1d(4))
    start = copy.deepcopy(layer[0])
    optimizers = {"sgd": torch.optim.SGD, "adam": torch.optim.Adam}
    opt = optimizers[optimizer](layer.parameters(), lr=lr)
    for _ in range(steps):
        batch, target = torch.randn(16, 8), torch.randn(16, 4)
        opt.zero_grad()
        ((layer(batch) - target) ** 2).mean().backward()
        opt.step()
    drift = {
        "bias drift": (layer[0].bias - start.bias).abs().max().item(),
        "weight drift": (layer[0].weight - start.weight).abs().max().item(),
    }
    with torch.no_grad():
        output = layer(batch)
        layer[0].bias.copy_(start.bias)
        drift["output change"] = (output - layer(batch)).abs().max().item()
    return drift
