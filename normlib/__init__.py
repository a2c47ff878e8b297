"""normlib: normalization layers built on one recipe, faithful to torch.nn.

Choose the axes, compute mean and variance there, standardize, then scale and
shift with learned gamma/beta. :mod:`normlib.functional` holds that recipe once;
every layer below is a choice of axes. Swap ``torch.nn.X`` for ``normlib.X`` in any
model, load a PyTorch checkpoint, and get the same numbers up to floating-point rounding
(the operations run in another order); ``normlib.convert(model)`` makes
that swap for every norm layer of a model (same tensors, modes and hooks), and
``normlib.to_torch(model)`` undoes it. In-place operations after a layer
(``ReLU(inplace=True)``, ``out += identity``), channels-last inputs and ``torch.autocast``
behave as with torch's layers.

Two speeds, one set of numbers. Times below are those of the stored CPU run that
Chapter 11 shows (:func:`normlib.bench.stored_results`), as multiples of PyTorch's native
kernels' time:

* **eager** (the default): the layers run the recipe through hand-fused autograd
  Functions with closed-form backward passes. On a CPU where Numba is installed (the
  ``fast`` extra), LayerNorm, RMSNorm, GroupNorm and InstanceNorm run them as one
  compiled loop per statistic (:mod:`normlib.kernels`), elsewhere as PyTorch operations.
  In the stored run (Numba loops), BatchNorm, InstanceNorm and RMSNorm take 0.2x to 0.8x
  the native time (forward, and forward and backward); LayerNorm and GroupNorm 1.1x to
  1.3x forward and 1.1x to 1.2x forward and backward;
* **compiled**: ``normlib.compiled(model)`` is ``torch.compile(model, fullgraph=True,
  dynamic=False)``. Under the compiler the layers run the readable ``normalize`` and the
  compiler fuses it into C++ (CPU) or Triton (GPU) kernels. These take 0.2x to 0.6x the
  native time for BatchNorm, InstanceNorm and RMSNorm and about 0.9x for LayerNorm's
  forward, but 1.6x to 2.2x for GroupNorm and for LayerNorm's forward and backward: not
  native speed everywhere. The first call compiles (seconds to a minute on a CPU); later
  calls with the same shapes reuse it.

``python -m normlib.bench`` measures both against ``torch.nn``.
"""

from __future__ import annotations

import torch

from . import functional, kernels, recurrent, reference  # noqa: F401 (normlib.kernels)
from ._moved import install as _install_moved_modules
from .batchnorm import BatchNorm1d, BatchNorm2d, BatchNorm3d, InstanceNorm1d, InstanceNorm2d, InstanceNorm3d
from .batchrenorm import BatchRenorm1d, BatchRenorm2d
from .bn_tools import diagnose, fold_bn, recompute_bn_stats
from .convert import convert, to_torch
from .factory import NORM_NAMES, default_num_groups, make_norm
from .frozen_batchnorm import FrozenBatchNorm2d
from .ibn import IBNorm
from .normalization import GroupNorm, LayerNorm, RMSNorm
from .recurrent import LayerNormGRU, LayerNormGRUCell, LayerNormLSTM, LayerNormLSTMCell, TimeStepBatchNorm
from .runtime import device, seed
from .switchnorm import SwitchNorm1d, SwitchNorm2d
from .syncbatchnorm import SyncBatchNorm
from .weight_norm import weight_norm

__version__ = "0.1.0"

__all__ = [
    "BatchNorm1d",
    "BatchNorm2d",
    "BatchNorm3d",
    "FrozenBatchNorm2d",
    "InstanceNorm1d",
    "InstanceNorm2d",
    "InstanceNorm3d",
    "LayerNorm",
    "GroupNorm",
    "RMSNorm",
    "IBNorm",
    "SyncBatchNorm",
    "BatchRenorm1d",
    "BatchRenorm2d",
    "SwitchNorm1d",
    "SwitchNorm2d",
    "weight_norm",
    "convert",
    "to_torch",
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
    "compiled",
    "device",
    "seed",
    "functional",
    "recurrent",
    "reference",
]


def compiled(model_or_fn, *, fullgraph: bool = True, dynamic: bool = False, **kwargs):
    """normlib's compiled path: ``torch.compile(model_or_fn, fullgraph=True, dynamic=False, ...)``.

    Works on a module (``normlib.compiled(model)``) or a function (``normlib.compiled(
    normlib.functional.layer_norm)``) and returns the compiled object; extra keyword arguments
    (``mode=...``, ``backend=...``) go to :func:`torch.compile`. ``fullgraph=True`` makes a
    graph break an error instead of a silent slowdown: every normlib layer compiles into one
    graph. ``dynamic=False`` specializes on the input shapes (a new shape recompiles), which
    gives the fastest kernels for the fixed shapes of a training loop. Compiling needs a C++
    compiler on the CPU (and Triton on a GPU), as :func:`torch.compile` does.
    """
    return torch.compile(model_or_fn, fullgraph=fullgraph, dynamic=dynamic, **kwargs)


# Modules that moved into the lab (normlib.lab) keep working under their old names for one
# release, with a DeprecationWarning that names the new place (normlib/_moved.py).
__getattr__ = _install_moved_modules(__name__)
