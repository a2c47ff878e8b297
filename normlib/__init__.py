"""normlib: normalization layers built on one recipe, faithful to torch.nn.

Choose the axes, compute mean and variance there, standardize, then scale and
shift with learned gamma/beta. :mod:`normlib.functional` holds that recipe once;
every layer below is a choice of axes. Swap ``torch.nn.X`` for ``normlib.X`` in any
model, load a PyTorch checkpoint, and get the same numbers.
"""

from __future__ import annotations

import random

import numpy as np
import torch

from . import data, functional, invariance, models, probes, recurrent, reference, style, train, transformer
from .bn_tools import diagnose, fold_bn, recompute_bn_stats
from .batchnorm import BatchNorm1d, BatchNorm2d, BatchNorm3d, InstanceNorm1d, InstanceNorm2d, InstanceNorm3d
from .ibn import IBNorm
from .factory import NORM_NAMES, default_num_groups, make_norm
from .normalization import GroupNorm, LayerNorm, RMSNorm
from .recurrent import LayerNormGRU, LayerNormGRUCell, LayerNormLSTM, LayerNormLSTMCell, TimeStepBatchNorm
from .weight_norm import weight_norm

__version__ = "0.1.0"

__all__ = [
    "BatchNorm1d",
    "BatchNorm2d",
    "BatchNorm3d",
    "InstanceNorm1d",
    "InstanceNorm2d",
    "InstanceNorm3d",
    "LayerNorm",
    "GroupNorm",
    "RMSNorm",
    "IBNorm",
    "weight_norm",
    "fold_bn",
    "recompute_bn_stats",
    "diagnose",
    "LayerNormLSTMCell",
    "LayerNormGRUCell",
    "LayerNormLSTM",
    "LayerNormGRU",
    "TimeStepBatchNorm",
    "make_norm",
    "default_num_groups",
    "NORM_NAMES",
    "device",
    "seed",
    "functional",
    "invariance",
    "recurrent",
    "reference",
    "transformer",
    "data",
    "models",
    "train",
    "style",
    "probes",
    "viz",
]


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


def __getattr__(name):
    # viz pulls in matplotlib: import it only when a chapter asks for it.
    if name == "viz":
        import importlib

        return importlib.import_module(".viz", __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
