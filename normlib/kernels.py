"""One-pass CPU loops for LayerNorm, RMSNorm, GroupNorm and InstanceNorm, compiled by Numba.

Eager PyTorch runs one operation at a time, each a full pass over memory: the hand-fused
Function of :mod:`normlib.functional` makes 8 tensor-sized passes for a LayerNorm forward
where PyTorch's fused kernel makes 2 (Chapter 11 counts them). Here each statistic (a row of
LayerNorm, a group of GroupNorm) is one iteration of a loop: the loop reads the statistic's
values from memory, sums them, sums their squared deviations and writes the output while the
values stay in the processor's cache. Numba compiles these loops (``normlib._loops``) to
machine code with LLVM when they are first called, without a C compiler, and keeps the
result on disk for later processes.

They compute the same formulas as the Function:

* forward: ``mean = sum(x) / m``, ``var = sum((x - mean)**2) / m`` (two loops over the
  statistic's values, no cancellation), ``y = (x - mean) / sqrt(var + eps) * gamma + beta``;
* backward, with ``g = dy * gamma`` and ``x_hat = (x - mean) / sqrt(var + eps)``:
  ``dx = (g - sum(g) / m - x_hat * sum(g * x_hat) / m) / sqrt(var + eps)``, and gamma's and
  beta's gradients the sums of ``dy * x_hat`` and of ``dy`` over the batch-like axes.

(RMSNorm: no mean, no ``sum(g)`` term.) Sums accumulate in float64 whatever the input's
dtype (float32 or float64). Each statistic is one thread's work, and LayerNorm's gamma and
beta gradients are summed over blocks of rows whose number depends on the shape only, so
the loops' results do not depend on the number of threads (an input with fewer statistics
than threads runs PyTorch operations instead, whose sums do).

Numba is optional (``pip install "normlib[fast]"``). The layers run PyTorch operations
instead without it, on other devices, for other dtypes (half precision), for fewer
statistics than threads, in a process ``fork()``-ed from one that ran the loops (which also
runs PyTorch on one thread: OpenMP's threads do not survive a fork), and while
the loops are turned off: by the environment variable ``NORMLIB_NUMBA=0`` or inside
``with normlib.kernels.use(False):``. :func:`enabled` says whether they run.
"""

from __future__ import annotations

import contextlib
import os
import threading
import warnings
from typing import Iterator, Optional, Tuple

import torch
from torch import Tensor

__all__ = ["available", "enabled", "numba_version", "use", "usable"]

# Row blocks over which LayerNorm's gamma/beta gradients are summed: a number fixed by the
# shape (not one per thread), so that the summation order, hence the result, is the same for
# any thread count. Each block keeps a float64 row of partial sums: at most this many values.
_MAX_BLOCKS = 64
_MAX_PARTIAL_VALUES = 1 << 20

_numba = None  # the module, once imported
_loops = None  # normlib._loops, once imported
_import_failed = False
_switch = [os.environ.get("NORMLIB_NUMBA", "1") != "0"]
# One kernel at a time: Numba's 'workqueue' threading layer (its fallback where no OpenMP
# or TBB library is found) aborts the process when two Python threads launch at once.
_lock = threading.Lock()
_state = {"launched": False, "forked": False}


def _after_fork_in_child() -> None:
    # GNU OpenMP's threads do not survive fork(): Numba aborts a child that launches a
    # parallel loop after its parent did, and PyTorch's next parallel operation in the child
    # waits forever for the parent's threads. Such a child runs PyTorch operations on one
    # thread instead, as PyTorch's DataLoader workers do.
    if _state["launched"]:
        _state["forked"] = True
        torch.set_num_threads(1)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def available() -> bool:
    """Whether Numba and the loops can be imported (on the first call, not with normlib). A
    Numba that is installed but cannot set the loops up (say, with nowhere to write its
    cache) gives a warning, and the layers run PyTorch operations."""
    global _numba, _loops, _import_failed
    if _numba is None and not _import_failed:
        try:
            import numba

            from . import _loops as loops
        except ImportError:
            _import_failed = True
        except Exception as error:  # noqa: BLE001 (any failure means: no loops)
            _import_failed = True
            warnings.warn(
                f"normlib.kernels: Numba is installed but its loops could not be set up ({error!r}); "
                "the layers run PyTorch operations",
                RuntimeWarning,
                stacklevel=2,
            )
        else:
            _numba, _loops = numba, loops
    return _numba is not None


def numba_version() -> Optional[str]:
    """Numba's version, or None where it is not installed."""
    return _numba.__version__ if available() else None


def enabled() -> bool:
    """Whether the layers' eager CPU path runs these kernels: Numba is installed, neither
    ``NORMLIB_NUMBA=0`` nor :func:`use` has turned them off, and this process is not a
    ``fork()`` of one that ran them (OpenMP's threads do not survive a fork)."""
    return _switch[0] and not _state["forked"] and available()


@contextlib.contextmanager
def use(on: bool) -> Iterator[None]:
    """Run the kernels (``on=True``, where :func:`enabled` allows) or PyTorch operations
    (``on=False``) inside the ``with`` block (for the whole process, not one thread)."""
    before = _switch[0]
    _switch[0] = bool(on)
    try:
        yield
    finally:
        _switch[0] = before


def usable(x: Tensor, statistics: int) -> bool:
    """Whether the kernels take ``x`` with ``statistics`` statistics: a plain CPU tensor of
    float32 or float64 (half precision and other devices run PyTorch operations), at least
    one statistic per thread, and :func:`enabled`."""
    return (
        x.device.type == "cpu"
        and x.dtype in (torch.float32, torch.float64)
        and type(x) in (Tensor, torch.nn.Parameter)
        and x.layout == torch.strided
        and not x.is_conj()
        and not x.is_neg()
        and statistics >= torch.get_num_threads()
        and enabled()
    )


def _launch(kernel, *args) -> None:
    """Run a compiled loop on as many threads as PyTorch uses (``torch.set_num_threads``)."""
    threads = torch.get_num_threads()
    with _lock:
        _state["launched"] = True
        _numba.set_num_threads(max(1, min(threads, _numba.config.NUMBA_NUM_THREADS)))
        kernel(*args)
    if torch.get_num_threads() != threads:
        # Numba's first launch starts its OpenMP threads, which sets OpenMP's thread count
        # (shared with PyTorch where both use the same OpenMP library) to Numba's maximum.
        torch.set_num_threads(threads)


def _statistic(t: Tensor, count: int, dtype: torch.dtype):
    """A statistic (mean or var) of the forward pass as a NumPy vector of ``count`` values."""
    return t.detach().reshape(count).to(dtype).numpy()


def _array(t: Optional[Tensor], shape, dtype: torch.dtype, fill: float):
    """``t`` as a contiguous NumPy array of ``shape`` and ``dtype``; for None, one filled with
    ``fill`` (gamma 1, beta 0)."""
    if t is None:
        return torch.full(shape, fill, dtype=dtype).numpy()
    return t.detach().to(dtype).reshape(shape).contiguous().numpy()


def rows_forward(x: Tensor, weight, bias, eps: float, center: bool, out: Tensor) -> Tuple[Tensor, Tensor]:
    """LayerNorm (``center``) or RMSNorm over the last axis of the ``(n, d)`` tensor ``x``, written
    into ``out`` (contiguous, x's dtype, n * d values): ``(mean, var)`` of shape ``(n,)``."""
    n, d = x.shape
    mean, var = torch.empty(n, dtype=x.dtype), torch.empty(n, dtype=x.dtype)
    _launch(
        _loops.rows_forward,
        x.detach().contiguous().numpy(),
        _array(weight, (d,), x.dtype, 1.0),
        _array(bias, (d,), x.dtype, 0.0),
        eps,
        center,
        out.view(n, d).numpy(),
        mean.numpy(),
        var.numpy(),
    )
    return mean, var


def _blocks(n: int, d: int) -> int:
    """Row blocks for :func:`rows_backward`: a function of the shape only (not of the thread
    count), at least 8 rows each, so that the float64 partial sums (blocks x d) stay small
    next to the (n, d) tensors."""
    return max(1, min(n // 8, _MAX_BLOCKS, _MAX_PARTIAL_VALUES // max(d, 1)))


def rows_backward(
    dy: Tensor, x: Tensor, weight, mean: Tensor, var: Tensor, eps: float, center: bool, want_w: bool, want_b: bool, dx
):
    """The gradients of :func:`rows_forward`: writes dx into ``dx`` (as ``out`` above) and returns
    ``(dgamma, dbeta)``, float64 of shape ``(d,)``, or None where not wanted."""
    n, d = x.shape
    blocks = _blocks(n, d)
    part_w = torch.zeros((blocks if want_w else 1, d), dtype=torch.float64)
    part_b = torch.zeros((blocks if want_b else 1, d), dtype=torch.float64)
    _launch(
        _loops.rows_backward,
        dy.detach().to(x.dtype).reshape(n, d).contiguous().numpy(),
        x.detach().contiguous().numpy(),
        _array(weight, (d,), x.dtype, 1.0),
        _statistic(mean, n, x.dtype),
        _statistic(var, n, x.dtype),
        eps,
        center,
        blocks,
        want_w,
        want_b,
        dx.view(n, d).numpy(),
        part_w.numpy(),
        part_b.numpy(),
    )
    return (part_w.sum(0) if want_w else None), (part_b.sum(0) if want_b else None)


def groups_forward(x: Tensor, weight, bias, groups: int, affine_rows: int, eps: float, center: bool, out: Tensor):
    """GroupNorm / InstanceNorm on the ``(R, K, S)`` tensor ``x`` (statistic i over ``x[i]``),
    gamma/beta of shape ``(affine_rows, K)`` with ``affine_rows`` 1 or ``groups`` (statistic i
    uses row ``i % groups``), written into ``out``: ``(mean, var)`` of shape ``(R,)``."""
    R, K, S = x.shape
    mean, var = torch.empty(R, dtype=x.dtype), torch.empty(R, dtype=x.dtype)
    shape = (affine_rows, K)
    _launch(
        _loops.groups_forward,
        x.detach().contiguous().numpy(),
        _array(weight, shape, x.dtype, 1.0),
        _array(bias, shape, x.dtype, 0.0),
        groups,
        eps,
        center,
        out.view(R, K, S).numpy(),
        mean.numpy(),
        var.numpy(),
    )
    return mean, var


def groups_backward(
    dy: Tensor,
    x: Tensor,
    weight,
    groups: int,
    affine_rows: int,
    mean: Tensor,
    var: Tensor,
    eps: float,
    center: bool,
    dx: Tensor,
):
    """The gradients of :func:`groups_forward`: writes dx into ``dx`` and returns, float64 of
    shape ``(R, K)``, the sums over S of ``dy * (x - mean)`` and of ``dy``, from which gamma's
    and beta's gradients follow."""
    R, K, S = x.shape
    dots = torch.empty((R, K), dtype=torch.float64)
    dy_sums = torch.empty((R, K), dtype=torch.float64)
    _launch(
        _loops.groups_backward,
        dy.detach().to(x.dtype).contiguous().numpy(),
        x.detach().contiguous().numpy(),
        _array(weight, (affine_rows, K), x.dtype, 1.0),
        groups,
        _statistic(mean, R, x.dtype),
        _statistic(var, R, x.dtype),
        eps,
        center,
        dx.view(R, K, S).numpy(),
        dots.numpy(),
        dy_sums.numpy(),
    )
    return dots, dy_sums
