"""normlib against torch.nn's native kernels: time ratios and bandwidth, measured in one run.

From a shell::

    # the best device, the shapes Chapter 11 uses
    python -m normlib.bench
    # smaller inputs, fewer repeats
    python -m normlib.bench --quick
    # the CPU on 2 threads; also write the results to a JSON file
    python -m normlib.bench --device cpu --threads 2 --json results.json
    # skip the compiled path (no C++ compiler needed)
    python -m normlib.bench --no-compile
    # steadier on a busy machine
    python -m normlib.bench --device cpu --threads 1 --clock cpu
    # normlib's eager layers as PyTorch operations (no Numba loops)
    python -m normlib.bench --no-kernels

For BatchNorm2d (training), LayerNorm, GroupNorm, InstanceNorm2d and RMSNorm, forward and
forward+backward, it times three implementations on the same input and output gradient:
``torch.nn`` (PyTorch's native fused kernels), normlib in eager mode (on a CPU where Numba is
installed, LayerNorm, RMSNorm, GroupNorm and InstanceNorm run the compiled loops of
:mod:`normlib.kernels`; the run records which path ran), and normlib compiled with
:func:`normlib.compiled`. It prints

* the native time and the ratios eager / native and compiled / native;
* for each implementation, its effective bandwidth as a fraction of the copy bandwidth
  measured in the same run. The effective bandwidth counts the bytes a single fused kernel
  must move: forward reads x and writes y (2 tensors); forward+backward also reads x and dy
  and writes dx (5 tensors). The copy bandwidth is that of ``x.clone()`` (read x, write a new
  tensor of the same size). A forward pass at 100 % costs exactly one copy.

Method. Timing uses :mod:`torch.utils.benchmark` (``blocked_autorange``, which waits for
a GPU to finish). The copy, native, eager and compiled runs are interleaved in rounds, so that load from
other processes hits both sides of a ratio alike. A time is the fastest block over all rounds
(the run least disturbed by other processes); ratios and fractions are computed from those
times, and the printed range is the min-max of the same ratio taken round by round. Compilation
(the first calls of the compiled module) happens before any timing; its time is reported in a
separate table. Backward passes use ``torch.autograd.grad`` with a fixed random output
gradient, so no ``.grad`` accumulation is timed. The command first asks glibc's malloc to keep
freed memory (``keep_freed_memory()``; ``--allocator-defaults`` leaves it alone): otherwise
whether a step's fresh tensors land on new pages, and pay a page fault per 4 KiB, depends on
the heap's history and turns ratios into a lottery.

:func:`measure` and :func:`format_table` are what the command runs; Chapter 11 calls them on
small inputs, and :func:`stored_results` returns the output of a full run shipped with normlib
(regenerate it from an empty compiler cache, so that its compile times are cold-start times:
``TORCHINDUCTOR_CACHE_DIR=$(mktemp -d) python -m normlib.bench --device cpu --threads 1 --clock cpu
--save-stored``; the run records whether the cache was empty, and a test checks that it was).
"""

from __future__ import annotations

import argparse
import datetime
import inspect
import json
import os
import platform
import re
import statistics
import time
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
from torch import nn
from torch.utils import benchmark
from torch.utils._python_dispatch import TorchDispatchMode

import normlib
from normlib import kernels

__all__ = [
    "Case",
    "CASES",
    "Traffic",
    "traffic",
    "seconds",
    "best_times",
    "measure",
    "format_table",
    "format_compile_table",
    "describe",
    "stored_results",
    "parse_cache_size",
    "last_level_cache",
    "main",
]


@dataclass(frozen=True)
class Case:
    name: str  # printed name
    key: str  # method key for colours and lookups ("bn", "ln", ...)
    make_native: Callable[[], nn.Module]
    make_normlib: Callable[[], nn.Module]
    shape: tuple


# With postponed annotations the dataclass's signature holds strings ('str', 'tuple'): help()
# and the API reference show the types themselves.
Case.__signature__ = inspect.signature(Case, eval_str=True)


#: The layers and input shapes that ``python -m normlib.bench`` times.
#:
#: :meta hide-value:
CASES: List[Case] = [
    Case("BatchNorm2d (train)", "bn", lambda: nn.BatchNorm2d(64), lambda: normlib.BatchNorm2d(64), (32, 64, 28, 28)),
    Case("LayerNorm(512)", "ln", lambda: nn.LayerNorm(512), lambda: normlib.LayerNorm(512), (32, 128, 512)),
    Case("GroupNorm(32, 64)", "gn", lambda: nn.GroupNorm(32, 64), lambda: normlib.GroupNorm(32, 64), (32, 64, 28, 28)),
    Case(
        "InstanceNorm2d(64)", "in", lambda: nn.InstanceNorm2d(64), lambda: normlib.InstanceNorm2d(64), (32, 64, 28, 28)
    ),
    Case("RMSNorm(512)", "rms", lambda: nn.RMSNorm(512), lambda: normlib.RMSNorm(512), (32, 128, 512)),
]

# Full-size tensors a single fused kernel must read or write.
TENSORS_MOVED = {"forward": 2, "fwd+bwd": 5}
PASSES = ("forward", "fwd+bwd")
STORED = "bench_results/cpu.json"


class Traffic(TorchDispatchMode):
    """Records the full-size memory traffic of every PyTorch operation run inside it.

    For each operation that reaches PyTorch's dispatcher, the tensors it reads and the tensors
    it writes are counted in units of ``size`` elements, keeping only tensors of at least half
    that size (per-channel statistics and gamma/beta are too small to matter). A view moves
    nothing; an in-place operation reads and writes its tensor; an ``out=`` tensor is only
    written; a broadcast (expanded) tensor counts by the memory it really occupies; an
    allocation (``torch.empty``) moves nothing. This is the
    traffic the operations ask for, one full pass at a time: caches can make a pass cheaper,
    and a kernel may read its input more than once internally. For example::

        with Traffic(x.numel()) as t:
            y = normlib.functional.layer_norm(x, (512,))
        # tensor-sized passes, and (op name, reads, writes) per op:
        t.reads, t.writes, t.ops
    """

    def __init__(self, size: int):
        super().__init__()
        self.size = size
        self.ops: List[tuple] = []

    def _passes(self, t) -> float:
        if not isinstance(t, torch.Tensor) or t.numel() < self.size / 2:
            return 0.0
        stored = min(t.numel(), t.untyped_storage().nbytes() // t.element_size())
        return stored / self.size if stored >= self.size / 2 else 0.0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        schema = func._schema
        if any(ret.alias_info is not None and not ret.alias_info.is_write for ret in schema.returns):
            return out  # a view: no data moves
        if func.__name__.split(".")[0] in ("empty", "empty_like", "empty_strided", "new_empty"):
            return out  # an allocation: nothing is read or written until an operation fills it
        reads = writes = 0.0
        for i, arg in enumerate(schema.arguments):
            value = args[i] if i < len(args) else kwargs.get(arg.name)
            values = value if isinstance(value, (list, tuple)) else [value]
            mutated = arg.alias_info is not None and arg.alias_info.is_write
            for v in values:
                amount = self._passes(v)
                if mutated:
                    writes += amount
                    reads += 0.0 if arg.kwarg_only else amount  # out= is written; in-place self is also read
                else:
                    reads += amount
        results = out if isinstance(out, (list, tuple)) else [out]
        for ret, value in zip(schema.returns, results):
            if ret.alias_info is None:  # a fresh tensor (a view or the mutated input moves nothing new)
                writes += self._passes(value)
        if reads or writes:
            self.ops.append((func.__name__, reads, writes))
        return out

    @property
    def reads(self) -> float:
        return sum(op[1] for op in self.ops)

    @property
    def writes(self) -> float:
        return sum(op[2] for op in self.ops)

    @property
    def passes(self) -> float:
        """Reads plus writes, in tensor-sized passes over memory."""
        return self.reads + self.writes


def traffic(fn: Callable[[], object], size: int) -> Traffic:
    """Run ``fn()`` under :class:`Traffic` and return the record."""
    with Traffic(size) as record:
        fn()
    return record


def seconds(fn: Callable[[], object], min_run_time: float = 0.1, clock: str = "wall") -> float:
    """Seconds per call of ``fn``: the fastest block of calls, the one least disturbed by other programs.

    ``clock="wall"`` (the default) uses :mod:`torch.utils.benchmark`'s ``blocked_autorange``,
    which also waits for a GPU to finish. ``clock="cpu"`` counts the CPU time of the calling thread
    (``time.thread_time``), which leaves out the time the thread waited for a processor held
    by another program: steadier on a shared machine, and meaningful only for CPU tensors with
    one intra-op thread (``torch.set_num_threads(1)``).
    """
    for _ in range(3):  # warm up the allocator, the thread pool and the caches
        fn()
    if clock == "wall":
        timer = benchmark.Timer(stmt="fn()", globals={"fn": fn})
        return min(timer.blocked_autorange(min_run_time=min_run_time).times)
    if clock != "cpu":
        raise ValueError(f"clock must be 'wall' or 'cpu', not {clock!r}")
    fn()
    start = time.thread_time()
    fn()
    once = max(time.thread_time() - start, 1e-7)
    calls = max(1, int(min_run_time / 5 / once))
    best, spent, blocks = float("inf"), 0.0, 0
    while spent < min_run_time or blocks < 3:
        start = time.thread_time()
        for _ in range(calls):
            fn()
        block = time.thread_time() - start
        best, spent, blocks = min(best, block / calls), spent + block, blocks + 1
    return best


def best_times(
    fns: Dict[str, Callable[[], object]], rounds: int = 3, min_run_time: float = 0.05, clock: str = "wall"
) -> Dict[str, List[float]]:
    """Time several functions in interleaved rounds; returns each one's list of per-round times.

    Interleaving means that a burst of load from another program hits every function in
    that round alike; take ``min`` of a list for the least disturbed time, and compare
    functions round by round for a ratio's spread.
    """
    times = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            times[name].append(seconds(fn, min_run_time, clock))
    return times


def _step(module: nn.Module, x: torch.Tensor, dy: torch.Tensor, backward: bool) -> Callable[[], object]:
    """One forward (and backward) pass of module on x, as a closure for the timer."""
    inputs = [x] + [p for p in module.parameters() if p.requires_grad]
    if not backward:
        return lambda: module(x)

    def forward_backward():
        return torch.autograd.grad(module(x), inputs, dy)

    return forward_backward


def _summary(values: Sequence[float], best: float):
    """(value from the best times, min over rounds, max over rounds)."""
    return best, min(values), max(values)


def measure(
    cases: Optional[Sequence[Case]] = None,
    device: Optional[str] = None,
    *,
    scale: float = 1.0,
    compile: bool = True,
    rounds: int = 5,
    min_run_time: float = 0.1,
    dtype: torch.dtype = torch.float32,
    clock: str = "wall",
    log: Optional[Callable[[str], None]] = None,
) -> Dict:
    """Time every case and pass; returns a JSON-ready dict (see :func:`format_table`).

    ``cases`` defaults to :data:`CASES`, the shapes Chapter 11 uses. ``scale`` multiplies the batch size (``0.25`` gives quarter-size inputs). With
    ``compile=False`` the compiled column is left out. ``rounds`` interleaved rounds of
    ``min_run_time`` seconds per measurement; ``clock`` as in :func:`seconds`.

    Besides the rows and compile times, the dict records ``wall_s``, the wall-clock seconds
    of the whole call (compilation included); ``compile_cache_empty``: whether
    TorchInductor's on-disk cache was empty when the call started (so that the compile
    times are cold-start times), None without ``compile``; and the device's last-level
    cache (:func:`last_level_cache`) as ``last_level_cache_bytes`` and
    ``last_level_cache_source``, to tell which tensors fit in it.
    """
    device = torch.device(device) if device is not None else normlib.device()
    if clock == "cpu" and (device.type != "cpu" or torch.get_num_threads() != 1):
        raise ValueError("clock='cpu' measures one thread: it needs the CPU device and torch.set_num_threads(1)")
    log = log or (lambda message: None)
    started_run = time.perf_counter()
    cache_bytes, cache_source = last_level_cache(device)
    cache_was_empty = _compile_cache_empty() if compile else None
    results = []
    compile_times = []
    for case in CASES if cases is None else cases:
        shape = (max(1, round(case.shape[0] * scale)),) + tuple(case.shape[1:])
        torch.manual_seed(0)
        x = torch.randn(shape, device=device, dtype=dtype, requires_grad=True)
        dy = torch.randn(shape, device=device, dtype=dtype)
        impls = {
            "native": case.make_native().to(device, dtype),
            "eager": case.make_normlib().to(device, dtype),
        }
        if compile:
            module = case.make_normlib().to(device, dtype)
            compiled = normlib.compiled(module)
            started = time.perf_counter()
            compiled(x)
            _sync(device)
            forward_seconds = time.perf_counter() - started
            started = time.perf_counter()
            torch.autograd.grad(compiled(x), [x] + list(module.parameters()), dy)
            _sync(device)
            backward_seconds = time.perf_counter() - started
            compile_times.append(
                {"layer": case.name, "shape": list(shape), "forward_s": forward_seconds, "backward_s": backward_seconds}
            )
            log(f"compiled {case.name}: {forward_seconds:.1f} s forward, {backward_seconds:.1f} s backward")
            impls["compiled"] = compiled
        _check_agree(impls, x)
        element_bytes = x.numel() * x.element_size()
        for pass_name in PASSES:
            backward = pass_name == "fwd+bwd"
            steps = {name: _step(m, x, dy, backward) for name, m in impls.items()}
            steps["copy"] = lambda: x.detach().clone()
            times = best_times(steps, rounds, min_run_time, clock)
            moved = TENSORS_MOVED[pass_name]
            best = {name: min(values) for name, values in times.items()}
            row = {
                "layer": case.name,
                "key": case.key,
                "shape": list(shape),
                "pass": pass_name,
                "copy_ms": best["copy"] * 1e3,
                "copy_GBps": 2 * element_bytes / best["copy"] / 1e9,
            }
            for name in impls:
                row[f"{name}_ms"] = best[name] * 1e3
                # fraction of copy bandwidth: (moved bytes / t) / (2 tensors / t_copy)
                row[f"{name}_bw"] = _summary(
                    [moved / 2 * c / t for c, t in zip(times["copy"], times[name])],
                    moved / 2 * best["copy"] / best[name],
                )
                if name != "native":
                    row[f"{name}_ratio"] = _summary(
                        [t / n for t, n in zip(times[name], times["native"])], best[name] / best["native"]
                    )
            results.append(row)
            log(f"{case.name} {pass_name}: done")
    return {
        "device": str(device),
        "device_name": _device_name(device),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "dtype": str(dtype).replace("torch.", ""),
        "scale": scale,
        "rounds": rounds,
        "clock": clock,
        "date": datetime.date.today().isoformat(),
        "results": results,
        "compile_times": compile_times,
        "compile_cache_empty": cache_was_empty,
        "wall_s": time.perf_counter() - started_run,
        "last_level_cache_bytes": cache_bytes,
        "last_level_cache_source": cache_source,
        "eager_path": eager_path(device),
    }


def _compile_cache_empty() -> Optional[bool]:
    """Whether TorchInductor's on-disk cache (``TORCHINDUCTOR_CACHE_DIR`` or its default
    folder) holds nothing yet, so that the compile times are cold-start times; None if
    this PyTorch keeps its cache elsewhere."""
    try:
        from torch._inductor.runtime.runtime_utils import cache_dir
    except ImportError:
        return None
    folder = os.environ.get("TORCHINDUCTOR_CACHE_DIR") or cache_dir()
    return not os.path.isdir(folder) or not any(os.scandir(folder))


_UNITS = {"": 1, "b": 1, "k": 2**10, "kb": 2**10, "kib": 2**10, "m": 2**20}
_UNITS.update({"mb": 2**20, "mib": 2**20, "g": 2**30, "gb": 2**30, "gib": 2**30})


def parse_cache_size(text: str) -> int:
    """Bytes in a cache size as Linux writes it: ``"32768K"``, ``"1 MiB"``, ``"512"``."""
    match = re.fullmatch(r"\s*(\d+)\s*([A-Za-z]*)\s*", text)
    unit = match.group(2).lower() if match else None
    if unit not in _UNITS:
        raise ValueError(f"not a cache size: {text!r}")
    return int(match.group(1)) * _UNITS[unit]


def _sysfs_cache(root: Path) -> Optional[Tuple[int, str]]:
    best = None
    for index in sorted(root.glob("index*")):
        try:
            level = int((index / "level").read_text())
            kind = (index / "type").read_text().strip()
            size = parse_cache_size((index / "size").read_text())
        except (OSError, ValueError):
            continue
        if kind != "Instruction" and (best is None or level > best[0]):
            best = (level, size)
    if best is None:
        return None
    return best[1], f"L{best[0]}, from {root}"


def last_level_cache(
    device: Optional[torch.device] = None,
    root: str = "/sys/devices/system/cpu/cpu0/cache",
) -> Tuple[int, str]:
    """(bytes, where the number comes from) of the device's last-level cache.

    A GPU whose properties report an L2 cache size gives that. Otherwise the highest data or unified level in ``root``
    (Linux sysfs) is used, else ``os.sysconf``'s L3 or L2 size; where none can be read,
    32 MiB is assumed, and the source says so.
    """
    device = torch.device(device or "cpu")
    if device.type != "cpu":  # an accelerator whose torch module reports its L2 cache
        module = getattr(torch, device.type, None)
        get_properties = getattr(module, "get_device_properties", None)
        props = get_properties(device) if get_properties else None
        size = getattr(props, "L2_cache_size", 0) if props is not None else 0
        if size:
            return size, f"L2 cache of {getattr(props, 'name', device.type)}"
    found = _sysfs_cache(Path(root))
    if found is not None:
        return found
    for name in ("SC_LEVEL3_CACHE_SIZE", "SC_LEVEL2_CACHE_SIZE"):
        try:
            size = os.sysconf(name)
        except (ValueError, OSError, AttributeError):
            continue
        if size and size > 0:
            return size, f"{name} from os.sysconf"
    return 32 * 2**20, "not readable here: 32 MiB assumed"


def _sync(device: torch.device) -> None:
    """Wait for an accelerator (GPU) to finish its queued work; nothing to wait for on the CPU."""
    if device.type != "cpu" and torch.accelerator.is_available():
        torch.accelerator.synchronize(device)


def _device_name(device: torch.device) -> str:
    if device.type != "cpu":
        backend = getattr(torch, device.type, None)
        name_of = getattr(backend, "get_device_name", None)
        return name_of(device) if name_of is not None else device.type
    name = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    name = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"{name}, {os.cpu_count()} cores"


def _check_agree(impls: Dict[str, nn.Module], x: torch.Tensor) -> None:
    """Sanity check before timing: every implementation gives torch's output."""
    with torch.no_grad():
        outputs = {name: m(x) for name, m in impls.items()}
    tol = 1e-4 if x.dtype == torch.float32 else 1e-2
    for name, y in outputs.items():
        torch.testing.assert_close(y, outputs["native"], atol=tol, rtol=tol, msg=lambda m: f"{name} differs: {m}")


def _ratio(cell) -> str:
    median, low, high = cell
    return f"{median:.2f} ({low:.2f}–{high:.2f})"


def format_table(run: Dict) -> str:
    """The results of :func:`measure` as a Markdown table."""
    has_compiled = any("compiled_ms" in row for row in run["results"])
    header = ["layer", "shape", "pass", "native ms", "eager / native"]
    header += ["compiled / native"] if has_compiled else []
    header += ["native % copy BW", "eager % copy BW"] + (["compiled % copy BW"] if has_compiled else [])
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] * 3 + ["---:"] * (len(header) - 3)) + "|"]
    for row in run["results"]:
        cells = [
            row["layer"],
            "×".join(str(s) for s in row["shape"]),
            row["pass"],
            f"{row['native_ms']:.3f}",
            _ratio(row["eager_ratio"]),
        ]
        if has_compiled:
            cells.append(_ratio(row["compiled_ratio"]) if "compiled_ratio" in row else "")
        for name in ("native", "eager") + (("compiled",) if has_compiled else ()):
            cells.append(f"{100 * row[name + '_bw'][0]:.0f} %" if name + "_bw" in row else "")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def format_compile_table(run: Dict) -> str:
    """Compile times of :func:`measure` (first forward, first backward) as a Markdown table."""
    lines = ["| layer | shape | compile forward s | compile backward s |", "|---|---|---:|---:|"]
    for row in run["compile_times"]:
        lines.append(
            f"| {row['layer']} | {'×'.join(str(s) for s in row['shape'])} | {row['forward_s']:.1f} | "
            f"{row['backward_s']:.1f} |"
        )
    return "\n".join(lines)


def keep_freed_memory() -> bool:
    """Make glibc's malloc keep freed memory in the process (``mallopt``) instead of handing it
    back to the operating system; returns False where that is not possible (not glibc).

    By default glibc returns the top of its heap to the system once more than twice the largest
    recently freed block sits there, and serves blocks above a moving threshold with fresh
    ``mmap`` pages. Which step of a timing loop trips either rule depends on everything allocated
    before it, and a tensor on fresh pages pays a page fault for every 4 KiB it touches first.
    Measured here (2-core AMD EPYC, torch 2.13, 32×128×512 LayerNorm): the same code ran forward
    and backward at 2.5× native in one run and at 8× in the next, with 4,000 page faults per step
    against none. Keeping freed memory removes that lottery from both sides of every ratio.
    """
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
        mallopt = libc.mallopt if libc is not None else None
    except (OSError, AttributeError):
        return False
    if mallopt is None:
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3  # glibc's <malloc.h>
    # never trim; blocks up to 32 MiB (glibc's largest mmap threshold) come from the heap
    return bool(mallopt(m_trim_threshold, 1 << 30)) and bool(mallopt(m_mmap_threshold, 32 << 20))


def eager_path(device) -> str:
    """What normlib's eager LayerNorm, RMSNorm, GroupNorm and InstanceNorm run on ``device``
    (float32): compiled loops (:mod:`normlib.kernels`) or PyTorch operations."""
    if torch.device(device).type == "cpu" and kernels.enabled():
        return f"Numba loops (normlib.kernels, numba {kernels.numba_version()})"
    return "PyTorch operations"


def describe(run: Dict) -> str:
    """One line: where and how the run was made."""
    copy = statistics.median(row["copy_GBps"] for row in run["results"])
    clock = "CPU time of the timing thread" if run.get("clock") == "cpu" else "wall-clock time"
    return (
        f"{run['device']} ({run['device_name']}), torch {run['torch']}, {run['threads']} "
        f"thread{'' if run['threads'] == 1 else 's'}, "
        f"{run['dtype']}, {clock}, {run['rounds']} interleaved rounds, {run['date']}; "
        f"copy bandwidth (x.clone()) about {copy:.0f} GB/s"
        + (f"; {run['allocator']}" if run.get("allocator") else "")
        + (f"; eager LN, RMSNorm, GN, IN: {run['eager_path']}" if run.get("eager_path") else "")
    )


def stored_results() -> Dict:
    """The full CPU run shipped with normlib (``TORCHINDUCTOR_CACHE_DIR=$(mktemp -d) python -m
    normlib.bench --device cpu --threads 1 --clock cpu --save-stored``: an empty compiler cache)."""
    return json.loads(resources.files("normlib").joinpath(STORED).read_text())


def main(argv: Optional[Sequence[str]] = None) -> Dict:
    """``python -m normlib.bench [options]``: run :func:`measure`, print the tables, return the run.

    ``argv`` is the list of command-line arguments (default: ``sys.argv[1:]``); ``--help`` lists them.
    """
    parser = argparse.ArgumentParser(prog="python -m normlib.bench", description=__doc__.splitlines()[0])
    parser.add_argument("--device", default=None, help="cpu, cuda or mps (default: the best available)")
    parser.add_argument("--quick", action="store_true", help="quarter-size inputs, 3 short rounds")
    parser.add_argument("--no-compile", action="store_true", help="skip the compiled path")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads before timing")
    parser.add_argument(
        "--clock",
        choices=("wall", "cpu"),
        default="wall",
        help="wall-clock time (default), or the CPU time of the timing thread (steadier on a "
        "shared machine; needs --device cpu --threads 1)",
    )
    parser.add_argument("--rounds", type=int, default=None, help="interleaved rounds (default 5, quick 3)")
    parser.add_argument("--layers", nargs="*", default=None, help="keys to run: bn ln gn in rms (default: all)")
    parser.add_argument(
        "--no-kernels",
        action="store_true",
        help="run normlib's eager layers as PyTorch operations (normlib.kernels off)",
    )
    parser.add_argument("--json", default=None, help="also write the results to this JSON file")
    parser.add_argument(
        "--save-stored", action="store_true", help=f"write the results to normlib/{STORED}, the copy Chapter 11 shows"
    )
    parser.add_argument(
        "--allocator-defaults",
        action="store_true",
        help="leave glibc's malloc as it is (default: keep freed memory, see keep_freed_memory)",
    )
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    kept = False if args.allocator_defaults else keep_freed_memory()
    cases = [c for c in CASES if args.layers is None or c.key in args.layers]
    with kernels.use(not args.no_kernels):
        run = measure(
            cases,
            args.device,
            scale=0.25 if args.quick else 1.0,
            compile=not args.no_compile,
            rounds=args.rounds or (3 if args.quick else 5),
            min_run_time=0.05 if args.quick else 0.1,
            clock=args.clock,
            log=lambda message: print(message, flush=True),
        )
    run["allocator"] = "freed memory kept by malloc (glibc mallopt)" if kept else "allocator defaults"
    print()
    print(describe(run))
    print()
    print(format_table(run))
    if run["compile_times"]:
        print()
        print("Compile times (first call of the compiled module; not part of any timing above):")
        print()
        print(format_compile_table(run))
        print()
        print(
            "TorchInductor keeps compiled kernels in an on-disk cache: these are cold-start times only on "
            "a machine's first run (a backward of 0.0 s was read from that cache)."
        )
    text = json.dumps(run, indent=1)
    if args.json:
        with open(args.json, "w") as f:
            f.write(text + "\n")
    if args.save_stored:
        path = os.path.join(os.path.dirname(os.path.abspath(__file__)), STORED)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as f:
            f.write(text + "\n")
        print(f"\nwrote {path}")
    return run


if __name__ == "__main__":
    main()
