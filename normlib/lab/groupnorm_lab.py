"""Measurements for chapter 8 (GroupNorm and the batch-size problem).

* :func:`recipe_counts` -- values per statistic of BN, GN, LN and IN from the recipe's
  statistics (``normalize``), and :func:`shared_values` -- the same count read off a real
  layer: how many inputs move one output through its statistics (the gradient's support).
* :func:`mean_variance_parts` -- the variance of BatchNorm's batch mean split into a
  between-image part (divided by N) and a within-image part (divided by N·H·W), and
  :func:`batch_mean_draws` -- the variance of that mean measured over random batches;
  :func:`variance_split` and :func:`batch_mean_study` put the two together.
* :func:`sweep` -- train one network per normalization and batch size on the same number
  of images, counting the images each run sees (:func:`counting_images`).
* :func:`standardize_weight` -- Weight Standardization of a convolution's filters;
  :func:`eval_affine` -- the per-channel affine map a BatchNorm layer applies in ``eval()``.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Dict, Iterator, Mapping, Sequence, Tuple

import torch
from torch import Tensor, nn

from normlib.functional import normalize

from . import train
from .batching import random_picks

__all__ = [
    "recipe_counts",
    "shared_values",
    "mean_variance_parts",
    "batch_mean_draws",
    "variance_split",
    "batch_mean_study",
    "counting_images",
    "sweep",
    "standardize_weight",
    "eval_affine",
]

_METHODS = ("bn", "gn", "ln", "in")


def recipe_counts(shape: Sequence[int], batch: int, num_groups: int) -> Dict[str, int | None]:
    """Values per statistic of ``"bn"``, ``"gn"``, ``"ln"`` and ``"in"`` on a batch of
    ``batch`` samples of ``shape`` (``(C, H, W)`` or ``(C,)``), read off the statistics that
    ``normalize`` returns. InstanceNorm on ``(C,)`` features is ``None`` (one value each)."""
    x = torch.randn(batch, *shape)
    spatial = tuple(range(2, x.dim()))
    dims = {"bn": (0,) + spatial, "ln": tuple(range(1, x.dim())), "in": spatial}
    counts: Dict[str, int | None] = {}
    for method in _METHODS:
        if method == "gn":
            grouped = x.reshape(batch, num_groups, -1)
            counts[method] = x.numel() // normalize(grouped, (2,))[1].numel()
        elif method == "in" and not spatial:
            counts[method] = None
        else:
            counts[method] = x.numel() // normalize(x, dims[method])[1].numel()
    return counts


def shared_values(layer: nn.Module, x: Tensor, index: int = 0) -> int:
    """How many values of ``x`` the output at flat position ``index`` depends on, in the
    layer's current mode: for a normalization layer without affine, the values that share
    its statistic. Read off the gradient of that one output (exact zeros elsewhere)."""
    x = x.detach().clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(layer(x).flatten()[index], x)
    return int((grad != 0).sum())


def mean_variance_parts(features: Tensor) -> Dict[str, Tensor]:
    """Split the variance of a per-channel batch mean over N random images into its parts.

    ``features`` is ``(M, C, H, W)`` (M images). With ``P = H·W`` positions, the model is
    ``x[m, c, p] = mu_c + a[m, c] + b[c, p] + e[m, c, p]``: an image effect ``a`` (variance
    ``between``), a position pattern ``b`` shared by all images (it cancels in a mean over
    all positions), and a residual ``e`` (variance ``within``). Two-way analysis of
    variance gives unbiased estimates of both, per channel, and the variance of the mean of
    N independently drawn images over all their positions is::

        between / N + within / (N * P)

    Pixels of one image that move together are counted in ``between``: their shared part
    does not average out over positions. Returns ``between``, ``within``, ``image_means``
    (variance of the per-image means, ``between + within / P``), ``total`` (variance of all
    values) and ``positions`` (P, a 0-dim tensor).
    """
    if features.dim() != 4 or features.shape[0] < 2 or features[0, 0].numel() < 2:
        raise ValueError(f"mean_variance_parts: need (M >= 2, C, H, W) with H*W >= 2, got {tuple(features.shape)}")
    x = features.detach().double().flatten(2)  # (M, C, P)
    images, _, positions = x.shape
    grand = x.mean(dim=(0, 2), keepdim=True)
    image_mean = x.mean(dim=2, keepdim=True)  # (M, C, 1)
    position_mean = x.mean(dim=0, keepdim=True)  # (1, C, P)
    residual = x - image_mean - position_mean + grand
    within = residual.pow(2).sum(dim=(0, 2)) / ((images - 1) * (positions - 1))
    image_var = image_mean.squeeze(2).var(dim=0, correction=1)
    return {
        "between": (image_var - within / positions).float(),
        "within": within.float(),
        "image_means": image_var.float(),
        "total": x.var(dim=(0, 2), correction=0).float(),
        "positions": torch.tensor(positions),
    }


def batch_mean_draws(features: Tensor, batch: int, draws: int, *, seed: int = 0) -> Tensor:
    """Per-channel means of ``draws`` random batches of ``batch`` images of ``features``
    ``(M, C, H, W)``, each mean over the batch and all positions, as BatchNorm computes it in
    training mode: a ``(draws, C)`` tensor. Images of one batch are distinct."""
    picks = random_picks(len(features), batch, draws, torch.Generator().manual_seed(seed))
    return features[picks.to(features.device)].mean(dim=(1, 3, 4))


def variance_split(parts: Mapping[str, Tensor], batch: int) -> Dict[str, Tensor]:
    """The two parts of the variance of a batch mean over ``batch`` images, per channel,
    from :func:`mean_variance_parts`: ``between`` (``between / N``), ``within``
    (``within / (N * H * W)``), their sum ``predicted`` and ``between_share``."""
    between = parts["between"] / batch
    within = parts["within"] / (batch * parts["positions"])
    predicted = between + within
    return {"between": between, "within": within, "predicted": predicted, "between_share": between / predicted}


def batch_mean_study(
    features: Mapping[str, Tensor], batches: Sequence[int], draws: int = 300, *, seed: int = 0
) -> Dict[Tuple[str, int], Dict[str, Tensor]]:
    """For each named ``(M, C, H, W)`` tensor and batch size N: :func:`variance_split`, plus
    ``measured`` (the variance of the batch mean over ``draws`` random batches),
    ``effective`` (variance of all values / ``measured``: the number of independent values
    the batch mean behaves like) and ``values`` (N·H·W, an int). Keys ``(name, N)``."""
    study = {}
    for name, tensor in features.items():
        parts = mean_variance_parts(tensor)
        for batch in batches:
            split = variance_split(parts, batch)
            split["measured"] = batch_mean_draws(tensor, batch, draws, seed=seed).var(dim=0)
            split["effective"] = parts["total"] / split["measured"]
            split["values"] = batch * int(parts["positions"])
            study[name, batch] = split
    return study


@contextmanager
def counting_images(model: nn.Module) -> Iterator[Dict[str, int]]:
    """Count the samples ``model`` receives in training mode while the block runs:
    ``with counting_images(net) as seen: fit(net, ...)``, then ``seen["images"]``
    (passes in ``eval()`` mode, such as the test evaluations, are not counted)."""
    seen = {"images": 0, "calls": 0}

    def hook(module, args):
        if module.training:
            seen["images"] += int(args[0].shape[0])
            seen["calls"] += 1

    handle = model.register_forward_pre_hook(hook)
    try:
        yield seen
    finally:
        handle.remove()


def sweep(
    networks: Mapping[str, Tuple[object, Sequence[str], Callable[[str], nn.Module]]],
    batch_sizes: Sequence[int],
    images: int,
    *,
    seed: int = 0,
    **fit_kwargs,
) -> Tuple[Dict, Dict, Dict]:
    """Train every ``(network, norm)`` of ``networks`` (``name -> (dataset, norms, build)``,
    ``build(norm)`` a fresh model) at every batch size for ``images // batch`` updates, so
    that every run sees the same number of training images (``images`` must be a multiple of
    each batch size). Returns ``error`` (``(network, norm) -> test error (%)`` per batch
    size, measured in ``eval()`` mode), ``models`` (``(network, norm, batch) -> model``) and
    ``seen`` (``(network, norm, batch) -> images`` counted by :func:`counting_images`)."""
    from ..runtime import seed as seed_everything

    bad = [b for b in batch_sizes if images % b]
    if bad:
        raise ValueError(f"sweep: {images} images is not a multiple of batch sizes {bad}")
    error, models, seen = {}, {}, {}
    for network, (dataset, norms, build) in networks.items():
        for norm in norms:
            error[network, norm] = []
            for batch in batch_sizes:
                seed_everything(seed)
                model = build(norm)
                with counting_images(model) as counted:
                    history = train.fit(
                        model,
                        dataset,
                        batch_size=batch,
                        steps=images // batch,
                        seed=seed,
                        desc=f"{network}, {norm}, batch {batch}",
                        **fit_kwargs,
                    )
                error[network, norm].append(100 * (1 - history.final_accuracy))
                models[network, norm, batch] = model
                seen[network, norm, batch] = counted["images"]
    return error, models, seen


def standardize_weight(weight: Tensor, eps: float = 1e-5) -> Tensor:
    """Weight Standardization (Qiao et al.): each output filter ``weight[o]`` of a
    convolution (or row of a linear layer) minus its mean, divided by its standard
    deviation (biased, plus ``eps`` under the root), over all its other dims."""
    dims = tuple(range(1, weight.dim()))
    mean = weight.mean(dim=dims, keepdim=True)
    var = weight.var(dim=dims, keepdim=True, correction=0)
    return (weight - mean) / torch.sqrt(var + eps)


def eval_affine(layer: nn.Module) -> Tuple[Tensor, Tensor]:
    """The per-channel ``(scale, shift)`` with which a BatchNorm layer in ``eval()`` maps
    ``x`` to ``scale * x + shift``: ``scale = gamma / sqrt(running_var + eps)``,
    ``shift = beta - running_mean * scale`` (what a frozen BatchNorm stores)."""
    if layer.running_mean is None:
        raise ValueError("eval_affine: the layer keeps no running statistics")
    scale = torch.rsqrt(layer.running_var + layer.eps)
    shift = -layer.running_mean * scale
    if layer.weight is not None:
        scale, shift = scale * layer.weight, shift * layer.weight + layer.bias
    return scale.detach(), shift.detach()
