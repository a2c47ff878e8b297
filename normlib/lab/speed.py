"""Chapter 11's measuring tools: caches, steady timings, the heap, machine balance.

* :func:`yardstick_rows` -- the size of a tensor several times larger than the
  last-level cache (:func:`normlib.bench.last_level_cache`), so that a copy of it
  measures the main memory, not a cache.
* :func:`best_seconds` -- the fastest of interleaved timings; on the CPU with one thread
  and that thread's CPU time, which a busy machine disturbs far less than wall-clock time.
* :func:`heap_reuse` -- a context in which glibc keeps freed memory for the next
  allocation, so that a fresh tensor does not arrive on fresh pages from the system.
* :data:`SPEC_SHEETS`, :func:`peak_flops` and :data:`SERVER_CORE` -- machine balances
  (peak FLOP/s over memory bandwidth), quoted or computed; :data:`LAYER_NORM_FLOPS` and
  :func:`intensity` -- the arithmetic intensity of LayerNorm's forward pass.
* :func:`fused_kernels` -- the kernels that :func:`normlib.compiled` generates for a
  function, by name.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import re
from pathlib import Path
from typing import Callable, Dict, Iterator, Optional, Tuple

import torch

from normlib import bench, kernels

from .train import capture

__all__ = [
    "yardstick_rows",
    "one_thread",
    "best_seconds",
    "heap_reuse",
    "DIRECTIONS",
    "forward_and_backward",
    "without_loops",
    "module_inputs",
    "size_sweep",
    "live_table",
    "SPEC_SHEETS",
    "SERVER_CORE",
    "peak_flops",
    "balance",
    "cpu_vector_lanes",
    "LAYER_NORM_FLOPS",
    "intensity",
    "fused_kernels",
]


def yardstick_rows(cache_bytes: int, multiple: int = 4, row: int = 512, element_size: int = 4) -> int:
    """Rows of ``row`` values whose tensor takes at least ``multiple`` times ``cache_bytes``."""
    row_bytes = row * element_size
    return -(-multiple * cache_bytes // row_bytes)


@contextlib.contextmanager
def one_thread(device: torch.device) -> Iterator[str]:
    """On the CPU: run on one intra-op thread inside, and yield ``"cpu"``, the clock of
    :func:`normlib.bench.seconds` that counts that thread's CPU time; elsewhere change
    nothing and yield ``"wall"``. The thread count is restored on exit."""
    if torch.device(device).type != "cpu":
        yield "wall"
        return
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield "cpu"
    finally:
        torch.set_num_threads(threads)


def best_seconds(
    fns: Dict[str, Callable[[], object]],
    device: torch.device,
    rounds: int = 3,
    min_run_time: float = 0.05,
) -> Dict[str, float]:
    """Each function's fastest time in seconds, from :func:`normlib.bench.best_times`.

    On the CPU the functions run on one thread and the clock is that thread's CPU time
    (:func:`one_thread`): time the thread spent waiting for a core held by another
    program is left out, the memory traffic of other programs is not. On a GPU:
    wall-clock time.
    """
    with one_thread(device) as clock:
        times = bench.best_times(fns, rounds, min_run_time, clock=clock)
    return {name: min(values) for name, values in times.items()}


_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD, _M_MMAP_MAX = -1, -3, -4  # glibc's <malloc.h>
_DEFAULT_MMAP_MAX = 65536  # glibc's default


def _libc():
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
        return libc if libc is not None and hasattr(libc, "malloc_trim") else None
    except (OSError, AttributeError):
        return None


@contextlib.contextmanager
def heap_reuse() -> Iterator[bool]:
    """Inside: glibc's malloc serves every block from its heap and keeps freed memory.

    Outside, glibc gives a block above its mmap threshold (at most 32 MiB) fresh pages
    from the system (``mmap``) and unmaps them when the block is freed, so every call that
    allocates such a tensor pays a page fault per 4 KiB and has the memory zeroed. Inside,
    ``mmap`` is off (``M_MMAP_MAX = 0``) and the heap is not trimmed; the trim and mmap
    thresholds stay as ``normlib.bench.keep_freed_memory()`` sets them (1 GiB, 32 MiB). On exit ``mmap`` is allowed
    again and the free memory is handed back to the system (``malloc_trim``), so that
    large blocks get fresh pages again. Yields False, and changes nothing, where the C
    library has no ``mallopt`` (not glibc). PyTorch's GPU allocator keeps its memory anyway.
    Chapter 11 enters it after ``keep_freed_memory()``, which its set-up cell calls.
    The first allocations inside still grow the heap, with page faults: warm up before
    timing, as :func:`normlib.bench.seconds` does. Reuse is likely, not certain: PyTorch
    asks for 64-byte-aligned blocks, and where small allocations have settled beside a
    freed large block it no longer fits the next request, which then grows the heap (fresh
    pages again). A preallocated output (``out=``, ``copy_``) never depends on that.
    """
    libc = _libc()
    mallopt = getattr(libc, "mallopt", None)
    active = mallopt is not None and bool(mallopt(_M_TRIM_THRESHOLD, 1 << 30))
    active = active and bool(mallopt(_M_MMAP_THRESHOLD, 32 << 20)) and bool(mallopt(_M_MMAP_MAX, 0))
    try:
        yield active
    finally:
        if mallopt is not None:
            mallopt(_M_MMAP_MAX, _DEFAULT_MMAP_MAX)
            libc.malloc_trim(0)


def huge_pages(path: str = "/sys/kernel/mm/transparent_hugepage/enabled") -> Optional[str]:
    """Linux's transparent huge page mode (``"always"``, ``"madvise"``, ``"never"``), or None
    where it cannot be read. With ``"always"``, fresh memory may come in 2 MiB pages, one
    page fault per 2 MiB instead of per 4 KiB, which makes fresh pages cheaper."""
    try:
        text = Path(path).read_text()
    except OSError:
        return None
    found = re.search(r"\[(\w+)\]", text)
    return found.group(1) if found else None


def page_faults(fn: Callable[[], object], calls: int = 5, warmup: int = 3) -> Optional[float]:
    """Minor page faults of this process per call of ``fn`` (``getrusage``), after
    ``warmup`` calls; None where the ``resource`` module is missing (Windows)."""
    try:
        import resource
    except ImportError:
        return None
    for _ in range(warmup):
        fn()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(calls):
        fn()
    return (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / calls


#: Peak float32 FLOP/s (without tensor cores) and memory bandwidth in bytes/s, from the
#: vendors' data sheets: A100 80GB SXM (nvidia2021a100), H100 SXM (nvidia2022h100).
SPEC_SHEETS: Dict[str, Tuple[float, float]] = {
    "NVIDIA A100 80GB SXM": (19.5e12, 2.039e12),
    "NVIDIA H100 SXM": (67e12, 3.35e12),
}

#: A computed example, one core with 16 float32 lanes (512-bit vectors), two FMA units
#: and 2.5 GHz, and its share of 12 DDR5-4800 channels (8 bytes x 4.8e9 transfers/s
#: each) that 96 cores share.
SERVER_CORE = {
    "lanes": 16,
    "fma_units": 2,
    "hz": 2.5e9,
    "channels": 12,
    "channel_bytes_per_s": 8 * 4.8e9,
    "cores": 96,
}


def peak_flops(lanes: int, fma_units: int, hz: float) -> float:
    """Peak FLOP/s of a core: lanes x FMA units x 2 (a multiply and an add) x clock."""
    return lanes * fma_units * 2 * hz


def balance(flops: float, bytes_per_s: float) -> float:
    """Machine balance, the roofline's ridge point: FLOP/s over bytes/s (FLOP per byte)."""
    return flops / bytes_per_s


def cpu_vector_lanes(flags: Optional[str] = None) -> int:
    """float32 lanes of the widest x86 vector unit that ``/proc/cpuinfo``'s flags list
    (16 for AVX-512, 8 for AVX/AVX2, else 4, e.g. SSE or ARM's NEON)."""
    if flags is None:
        try:
            text = Path("/proc/cpuinfo").read_text()
        except OSError:
            text = ""
        found = re.search(r"^(?:flags|Features)\s*:(.*)$", text, re.MULTILINE)
        flags = found.group(1) if found else ""
    names = set(flags.split())
    if "avx512f" in names:
        return 16
    return 8 if names & {"avx", "avx2"} else 4


#: FLOPs per value of a LayerNorm forward pass with two passes for the variance, the mean
#: (an add), the variance (a subtraction, a square, an add), the normalization (a
#: subtraction, a multiplication by 1/sigma) and gamma, beta (a multiply and an add).
LAYER_NORM_FLOPS = {"mean": 1, "variance": 3, "normalize": 2, "scale and shift": 2}


def intensity(flops_per_value: float, passes: float, element_size: int) -> float:
    """Arithmetic intensity, FLOPs per byte moved: ``passes`` tensor passes of
    ``element_size`` bytes per value."""
    return flops_per_value / (passes * element_size)


_KERNEL = re.compile(r"^(\w*(?:cpp|triton)\w*fused\w*)\s*=\s*async_compile", re.MULTILINE)


def fused_kernels(fn: Callable, *args) -> Tuple[object, list]:
    """(output, names of the generated kernels) of ``normlib.compiled(fn)(*args)``.

    Raises what :func:`torch.compile` raises where it cannot compile (on a CPU without a
    C++ compiler, for instance).
    """
    from torch._inductor.utils import run_and_get_code

    import normlib

    torch._dynamo.reset()
    output, sources = run_and_get_code(normlib.compiled(fn), *args)
    names = sorted({name for code in sources for name in _KERNEL.findall(code)})
    return output, names


#: The two directions that chapter 11 times, a forward pass and forward plus backward.
DIRECTIONS = ("forward", "fwd+bwd")


def forward_and_backward(
    forwards: Dict[str, Callable[[], torch.Tensor]], inputs: Tuple[torch.Tensor, ...], grad_output: torch.Tensor
) -> Dict[Tuple[str, str], Callable[[], object]]:
    """``{(name, direction): call}``: each forward alone, and the forward followed by
    ``torch.autograd.grad`` of ``inputs`` with ``grad_output`` (no ``.grad`` accumulates)."""

    def both(forward):
        return lambda: torch.autograd.grad(forward(), inputs, grad_output)

    calls = {}
    for name, forward in forwards.items():
        calls[name, "forward"] = forward
        calls[name, "fwd+bwd"] = both(forward)
    return calls


def without_loops(call: Callable[..., object]) -> Callable[..., object]:
    """``call`` with :mod:`normlib.kernels` turned off while it runs: normlib's layers then run
    PyTorch operations (what they run on a GPU, in half precision, or without Numba). Wrap
    the whole call, forward and backward: each pass chooses its path when it runs."""

    def run(*args, **kwargs):
        with kernels.use(False):
            return call(*args, **kwargs)

    return run


def module_inputs(model: torch.nn.Module, inputs: torch.Tensor, kind: type) -> Dict[str, torch.Tensor]:
    """``{name: input}`` of every submodule of type ``kind`` in one no-grad forward pass
    (:func:`normlib.lab.train.capture` with ``where="input"``)."""
    names = [name for name, module in model.named_modules() if isinstance(module, kind)]
    return capture(model, inputs, names, where="input")


def size_sweep(
    numels, device: torch.device, row: int = 512, rounds: int = 2, min_run_time: float = 0.01
) -> Dict[str, list]:
    """Bandwidth in GB/s (2 tensor passes: read the input, write the output) of four
    operations on (numel // row, row) float32 tensors, one entry per size:

    * ``clone (fresh)``: ``x.clone()``, a new output each call, glibc's defaults;
    * ``copy_ (reused)``: ``y.copy_(x)`` into an output allocated once;
    * ``PyTorch LN`` and ``normlib LN``: ``F.layer_norm`` and ``normlib``'s fused layer
      forward, inside :func:`heap_reuse`, so that their outputs reuse freed memory.
    """
    import torch.nn.functional as F

    from normlib import functional as NF

    weight, bias = torch.ones(row, device=device), torch.zeros(row, device=device)
    curves = {"clone (fresh)": [], "copy_ (reused)": [], "PyTorch LN": [], "normlib LN": []}
    for numel in numels:
        x = torch.randn(numel // row, row, device=device)
        y = torch.empty_like(x)
        times = best_seconds({"clone (fresh)": lambda: x.clone()}, device, rounds, min_run_time)
        warm = {
            "copy_ (reused)": lambda: y.copy_(x),
            "PyTorch LN": lambda: F.layer_norm(x, (row,), weight, bias),
            "normlib LN": lambda: NF.layer_norm(x, (row,), weight, bias),
        }
        with heap_reuse():
            times.update(best_seconds(warm, device, rounds, min_run_time))
        for name in curves:
            curves[name].append(2 * x.numel() * x.element_size() / times[name] / 1e9)
    return curves


def live_table(run: Dict) -> str:
    """A narrow Markdown table of an eager :func:`normlib.bench.measure` run: per layer
    and direction the native time, eager / native, and both as % of the copy bandwidth."""
    lines = ["| layer | pass | native ms | eager ÷ native | % copy: native, eager |", "|---|---|---:|---:|---:|"]
    for row in run["results"]:
        native, eager = (f"{100 * row[name + '_bw'][0]:.0f}" for name in ("native", "eager"))
        lines.append(
            f"| {row['layer']} | {row['pass']} | {row['native_ms']:.2f} | "
            f"{row['eager_ratio'][0]:.2f} | {native}, {eager} |"
        )
    return "\n".join(lines)
