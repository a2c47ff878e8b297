"""Where and how reproducibly to run: :func:`device` and :func:`seed`.

Both halves of the package use them, the layer library and the course's lab
(:mod:`normlib.lab`), so they live here rather than in the package's ``__init__``.
"""

from __future__ import annotations

import random

import numpy as np
import torch

__all__ = ["device", "seed"]


def device() -> torch.device:
    """The best available device: CUDA, else Apple's MPS, else the CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda")
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def seed(value: int = 0) -> None:
    """Seed Python, NumPy and PyTorch so a chapter's outputs are deterministic."""
    random.seed(value)
    np.random.seed(value)
    torch.manual_seed(value)
