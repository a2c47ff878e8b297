"""Helpers for chapter 5 (BatchNorm at inference): running averages followed over a stream,
the chapter's BatchNorm perceptron with a chosen momentum, and a copy with reset statistics.
"""

from __future__ import annotations

import copy
from typing import Dict, Iterable, Optional, Sequence

import torch
from torch import Tensor, nn

from ..batchnorm import BatchNorm1d
from . import models

__all__ = ["batchnorm_mlp", "forgetting_steps", "reset_statistics", "running_mean_trajectories"]


def running_mean_trajectories(
    feed: Sequence[Tensor], momenta: Iterable[Optional[float]]
) -> Dict[Optional[float], Tensor]:
    """For each momentum (``None``: the cumulative average), a fresh ``BatchNorm1d`` in
    training mode is fed the (N, C) batches of ``feed`` in order; returns, per momentum, its
    ``running_mean`` after every batch, of shape (len(feed), C)."""
    trajectories = {}
    for momentum in momenta:
        layer = BatchNorm1d(feed[0].shape[1], momentum=momentum)
        path = []
        with torch.no_grad():
            for batch in feed:
                layer(batch)
                path.append(layer.running_mean.clone())
        trajectories[momentum] = torch.stack(path)
    return trajectories


def forgetting_steps(momentum: float, share: float = 0.01, limit: int = 100_000) -> int:
    """Measured on a ``BatchNorm1d(1, momentum=momentum)`` whose ``running_mean`` starts at 1
    and which sees batches of mean 0: the number of training steps after which the initial
    value's weight is below ``share``."""
    layer = BatchNorm1d(1, momentum=momentum)
    layer.running_mean.fill_(1.0)
    zeros = torch.zeros(2, 1)
    with torch.no_grad():
        for step in range(1, limit + 1):
            layer(zeros)
            if layer.running_mean.item() < share:
                return step
    raise RuntimeError(f"forgetting_steps: still above {share} after {limit} steps")


def batchnorm_mlp(momentum: Optional[float] = 0.1, hidden: Sequence[int] = (64, 64, 64)) -> nn.Module:
    """Chapter 5's perceptron for the 64 digit features: ``models.mlp(64, 10, hidden,
    bias=False)`` with ``normlib.BatchNorm1d(width, momentum=momentum)`` layers."""
    return models.mlp(
        64, 10, hidden=tuple(hidden), bias=False, norm=lambda width: BatchNorm1d(width, momentum=momentum)
    )


def reset_statistics(model: nn.Module) -> nn.Module:
    """A deep copy of ``model`` whose norm layers' running statistics are reset (mean 0,
    variance 1, no batches tracked): a model with stale statistics. ``model`` is untouched."""
    model = copy.deepcopy(model)
    for layer in models.norm_layers(model).values():
        if getattr(layer, "running_mean", None) is not None:
            layer.reset_running_stats()
    return model
