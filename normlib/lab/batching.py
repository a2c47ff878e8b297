"""Mini-batches: the order in which a training loop sees the samples.

:mod:`normlib.lab.data` re-exports both functions (``data.batches``, ``data.non_iid_batches``);
:func:`normlib.lab.train.fit` draws its batches with :func:`batches` unless it is given
another ``sampler``.

* :func:`batches` -- shuffled mini-batches of two tensors, reproducible with a generator.
* :func:`non_iid_batches` -- mini-batches that each hold only a few classes (not i.i.d.), the
  setting in which Batch Renormalization was tested (chapter 9).
* :func:`random_picks` -- the indices of many random batches of distinct samples, to measure
  how a batch statistic varies (chapters 4 and 8).
"""

from __future__ import annotations

from typing import Iterator, Optional, Tuple

import torch
from torch import Tensor

__all__ = ["batches", "non_iid_batches", "random_picks"]


def batches(
    x: Tensor,
    y: Tensor,
    batch_size: int,
    *,
    shuffle: bool = True,
    drop_last: bool = True,
    generator: Optional[torch.Generator] = None,
) -> Iterator[Tuple[Tensor, Tensor]]:
    """Mini-batches ``(x[idx], y[idx])`` covering the data once (one epoch).

    With ``shuffle`` the order comes from ``generator`` (a CPU ``torch.Generator``; pass a
    seeded one for a reproducible order). ``drop_last`` skips a final batch smaller than
    ``batch_size``, so every batch has the same size (BatchNorm's statistics then always
    cover ``batch_size`` samples).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    count = x.shape[0]
    if y.shape[0] != count:
        raise ValueError(f"x has {count} samples but y has {y.shape[0]}")
    if drop_last and count < batch_size:
        raise ValueError(f"batch_size {batch_size} is larger than the {count} samples and drop_last=True")
    order = torch.randperm(count, generator=generator) if shuffle else torch.arange(count)
    order = order.to(x.device)
    stop = count - count % batch_size if drop_last else count
    for start in range(0, stop, batch_size):
        index = order[start : start + batch_size]
        yield x[index], y[index]


def non_iid_batches(
    x: Tensor,
    y: Tensor,
    batch_size: int,
    *,
    classes_per_batch: int = 2,
    generator: Optional[torch.Generator] = None,
) -> Iterator[Tuple[Tensor, Tensor]]:
    """Mini-batches of ``batch_size`` samples drawn from only ``classes_per_batch`` classes.

    The samples of each class are shuffled and cut into chunks of ``batch_size //
    classes_per_batch``; every batch takes one chunk from each of ``classes_per_batch``
    distinct classes, chosen at random with weights proportional to their chunks left, so
    that the classes run out together. An epoch ends when fewer than ``classes_per_batch``
    classes have a chunk left; no sample appears twice in an epoch, and the few left over
    are skipped. Same call as :func:`batches` (``generator``: a CPU ``torch.Generator``), so
    it can replace it, e.g. ``train.fit(..., sampler=data.non_iid_batches)``.

    Batch Renormalization (Ioffe 2017) was tested with such batches: BatchNorm's batch
    statistics are then biased estimates of the population's.
    """
    if classes_per_batch < 1 or batch_size % classes_per_batch:
        raise ValueError(
            f"batch_size ({batch_size}) must be a positive multiple of classes_per_batch ({classes_per_batch})"
        )
    if y.shape[0] != x.shape[0]:
        raise ValueError(f"x has {x.shape[0]} samples but y has {y.shape[0]}")
    chunk = batch_size // classes_per_batch
    labels = y.cpu()
    stacks = []  # per class: its shuffled chunks of indices
    for label in torch.unique(labels).tolist():
        members = torch.nonzero(labels == label).flatten()
        members = members[torch.randperm(len(members), generator=generator)]
        usable = len(members) - len(members) % chunk
        stacks.append(list(members[:usable].split(chunk)) if usable else [])
    if sum(1 for stack in stacks if stack) < classes_per_batch:
        raise ValueError(f"fewer than {classes_per_batch} classes have {chunk} samples for a batch")
    while True:
        left = torch.tensor([len(stack) for stack in stacks], dtype=torch.float64)
        if int((left > 0).sum()) < classes_per_batch:
            return
        chosen = torch.multinomial(left, classes_per_batch, replacement=False, generator=generator)
        index = torch.cat([stacks[int(c)].pop() for c in chosen]).to(x.device)
        yield x[index], y[index]


def random_picks(pool: int, batch: int, draws: int, generator: Optional[torch.Generator] = None) -> Tensor:
    """A ``(draws, batch)`` tensor of indices: row ``i`` is a random batch of ``batch`` distinct
    samples out of ``pool`` (the first ``batch`` entries of a random permutation)."""
    return torch.stack([torch.randperm(pool, generator=generator)[:batch] for _ in range(draws)])
