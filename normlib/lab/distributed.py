"""Data-parallel training in real processes on one machine: per-device or synchronized BatchNorm.

:func:`launch` starts ``world_size`` worker processes (``torch.multiprocessing``, start method
``spawn``), joins them into one ``gloo`` process group on 127.0.0.1 at a free port, and returns
each worker's result. A worker that raises makes :func:`launch` raise a ``RuntimeError`` with
the worker's traceback; a worker that hangs or dies makes it raise after ``timeout`` seconds at
the latest. In every case all workers are terminated before :func:`launch` returns. Spawned
workers import the function they run by its module name, so it must live in an importable
module (such as this one), not in a notebook.

The other functions run *inside* a worker, in the process group:

* :func:`average_gradients` -- one all-reduce of all gradients, divided by the number of
  workers (what ``DistributedDataParallel`` does, written out);
* :func:`shard_sampler` -- every worker draws the same global batches of ``world_size * b``
  samples and keeps its own slice of ``b``;
* :func:`fit_data_parallel` -- :func:`normlib.lab.train.fit` with both of the above;
* :func:`batch_mean_spread`, :func:`median_step_seconds`, :func:`one_step_check`,
  :func:`ddp_buffer_sync` -- the measurements of chapter 8's section on BatchNorm across
  processes;
* :func:`experiment` -- all of it in one launch, as the chapter runs it.

``sync=True`` converts the model's BatchNorm layers with ``normlib.convert(model, sync=True)``
(normlib's ``SyncBatchNorm``, which runs on CPU tensors with ``gloo``).
"""

from __future__ import annotations

import copy
import os
import pickle
import queue as queue_module
import socket
import statistics
import sys
import tempfile
import time
import traceback
from datetime import timedelta
from functools import partial
from typing import Any, Callable, Dict, Iterable, List, Sequence

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from .batching import batches
from .data import Dataset

__all__ = [
    "launch",
    "free_port",
    "ping",
    "average_gradients",
    "data_parallel_optimizer",
    "shard_sampler",
    "prepare",
    "fit_data_parallel",
    "batch_mean_spread",
    "median_step_seconds",
    "ddp_buffer_sync",
    "one_step_check",
    "torch_sync_batchnorm_error",
    "experiment",
]


# --------------------------------------------------------------------------- launching


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free now (the system picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _entry(rank, world_size, port, payload, results, log_path, threads):
    """What every spawned process runs: join the group, call the function, report."""
    log = open(log_path, "w", buffering=1)
    os.dup2(log.fileno(), 1)  # the process's own output (and gloo's C++ warnings) goes to the log,
    os.dup2(log.fileno(), 2)  # not into the notebook that started it
    sys.stdout = sys.stderr = log
    torch.set_num_threads(threads)
    try:
        fn, args, kwargs = pickle.loads(payload)
        dist.init_process_group(
            "gloo",
            init_method=f"tcp://127.0.0.1:{port}",
            rank=rank,
            world_size=world_size,
            timeout=timedelta(seconds=60),
        )
        result = fn(rank, world_size, *args, **kwargs)
        results.put((rank, True, pickle.dumps(result)))
    except BaseException:
        results.put((rank, False, traceback.format_exc()))
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
        log.flush()


def _tail(path: str, lines: int = 20) -> str:
    try:
        with open(path) as file:
            return "".join(file.readlines()[-lines:])
    except OSError:
        return ""


def launch(
    fn: Callable[..., Any],
    world_size: int,
    *args,
    timeout: float = 120.0,
    threads: int = 1,
    **kwargs,
) -> List[Any]:
    """Run ``fn(rank, world_size, *args, **kwargs)`` in ``world_size`` new processes.

    The processes are started with ``spawn`` and joined into a ``gloo`` process group on
    127.0.0.1 (``torch.distributed`` is initialized when ``fn`` starts); each uses ``threads``
    CPU threads. ``fn`` must be importable by name (defined in a module, not in a notebook),
    and its arguments and result picklable. Returns the results, by rank.

    Raises ``RuntimeError`` with the worker's traceback when a worker raises or dies, and
    ``TimeoutError`` when the workers have not all finished after ``timeout`` seconds. The
    processes are always ended (terminated, if need be) before this function returns or raises.
    """
    if world_size < 1:
        raise ValueError(f"launch: world_size must be at least 1, got {world_size}")
    payload = pickle.dumps((fn, args, kwargs))
    context = torch.multiprocessing.get_context("spawn")
    results = context.Queue()
    port = free_port()
    processes, outcome = [], {}
    with tempfile.TemporaryDirectory(prefix="normlib-launch-") as logs:
        log_paths = [os.path.join(logs, f"worker{rank}.log") for rank in range(world_size)]
        try:
            for rank in range(world_size):
                process = context.Process(
                    target=_entry,
                    args=(rank, world_size, port, payload, results, log_paths[rank], threads),
                    daemon=True,
                )
                process.start()
                processes.append(process)
            deadline = time.monotonic() + timeout
            while len(outcome) < world_size:
                try:
                    rank, ok, value = results.get(timeout=0.1)
                except queue_module.Empty:
                    for rank, process in enumerate(processes):
                        if rank not in outcome and process.exitcode not in (None, 0):
                            raise RuntimeError(
                                f"worker {rank} of {world_size} died (exit code {process.exitcode}) "
                                f"without a result; its last output:\n{_tail(log_paths[rank])}"
                            ) from None
                    if time.monotonic() > deadline:
                        missing = sorted(set(range(world_size)) - set(outcome))
                        raise TimeoutError(
                            f"workers {missing} of {world_size} did not finish within {timeout:g} s"
                        ) from None
                    continue
                if not ok:
                    raise RuntimeError(f"worker {rank} of {world_size} failed:\n{value}")
                outcome[rank] = pickle.loads(value)
        finally:
            for process in processes:
                process.join(timeout=5 if len(outcome) == world_size else 0.2)
            for process in processes:
                if process.is_alive():
                    process.terminate()
                    process.join(timeout=5)
                if process.is_alive():
                    process.kill()
                    process.join()
            results.close()
            results.join_thread()
    return [outcome[rank] for rank in range(world_size)]


def ping(rank: int, world_size: int, fail_rank: int = -1) -> int:
    """A health check for :func:`launch`: the sum of all ranks, by one all-reduce.

    The worker whose rank is ``fail_rank`` raises a ``ValueError`` instead (to see what
    :func:`launch` does when a worker fails).
    """
    if rank == fail_rank:
        raise ValueError(f"worker {rank} fails on purpose")
    total = torch.tensor([float(rank)])
    dist.all_reduce(total)
    return int(total.item())


# --------------------------------------------------------------------------- training


def average_gradients(parameters: Iterable[nn.Parameter]) -> None:
    """Replace every gradient by its mean over the workers.

    All gradients travel in one flat tensor: one all-reduce per step.
    """
    grads = [p.grad for p in parameters if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= dist.get_world_size()
    offset = 0
    for g in grads:
        g.copy_(flat[offset : offset + g.numel()].view_as(g))
        offset += g.numel()


def data_parallel_optimizer(make: Callable[[list], torch.optim.Optimizer]):
    """``params -> optimizer`` whose ``step()`` first averages the gradients over the workers."""

    def build(params):
        params = list(params)
        optimizer = make(params)
        step = optimizer.step

        def averaged_step(*args, **kwargs):
            average_gradients(params)
            return step(*args, **kwargs)

        optimizer.step = averaged_step
        return optimizer

    return build


def shard_sampler(rank: int, world_size: int):
    """A ``sampler`` for :func:`~normlib.lab.train.fit`: global batches of ``world_size * b``
    samples (the same on every worker, as the generators share a seed), of which this worker
    keeps the ``rank``-th slice of ``b``."""

    def sample(x: Tensor, y: Tensor, size: int, generator=None):
        for xb, yb in batches(x, y, world_size * size, generator=generator):
            yield xb[rank * size : (rank + 1) * size], yb[rank * size : (rank + 1) * size]

    return sample


def prepare(build: Callable[[], nn.Module], seed: int, sync: bool) -> nn.Module:
    """The model every worker starts from: ``build()`` after seeding with ``seed`` (the same
    weights on every worker), its BatchNorm layers synchronized when ``sync`` is true."""
    from ..runtime import seed as seed_everything

    seed_everything(seed)
    model = build()
    if sync:
        from ..convert import convert

        model = convert(model, sync=True)
    return model


def _adam(lr: float):
    return partial(torch.optim.Adam, lr=lr, foreach=True)


def fit_data_parallel(model: nn.Module, dataset: Dataset, *, batch_size: int, steps: int, lr: float, seed: int):
    """Train ``model`` on this worker's shards of ``batch_size`` samples for ``steps`` updates
    (Adam, gradients averaged over the workers); returns the :class:`~normlib.lab.train.History`."""
    from .train import fit

    return fit(
        model,
        dataset,
        batch_size=batch_size,
        steps=steps,
        optimizer=data_parallel_optimizer(_adam(lr)),
        sampler=shard_sampler(dist.get_rank(), dist.get_world_size()),
        seed=seed,
        progress=False,
    )


# --------------------------------------------------------------------------- measurements


def batch_mean_spread(
    model: nn.Module, layer: str, dataset: Dataset, *, batch_size: int, draws: int, seed: int
) -> Dict[str, List[float]]:
    """How much the batch mean entering ``layer`` fluctuates, per channel.

    ``draws`` times, every worker takes its slice of ``batch_size`` samples of a random global
    batch and computes the per-channel mean of the layer's input over its slice: the mean a
    per-device BatchNorm uses. The average of the workers' means (one all-reduce; equal
    slices) is the mean a synchronized BatchNorm uses. Returns the per-channel variances of
    both over the draws, ``"worker"`` and ``"synchronized"``, and ``"population"``: the variance
    of single inputs over the whole training split.
    """
    from .train import capture

    rank, world = dist.get_rank(), dist.get_world_size()
    features = capture(model, dataset.x_train, [layer], where="input")[layer]
    dims = [0] + list(range(2, features.dim()))
    generator = torch.Generator().manual_seed(seed)
    local, synced = [], []
    for _ in range(draws):
        index = torch.randperm(len(features), generator=generator)[: world * batch_size]
        mine = features[index[rank * batch_size : (rank + 1) * batch_size]].mean(dim=dims)
        total = mine.clone()
        dist.all_reduce(total)
        local.append(mine)
        synced.append(total / world)
    return {
        "worker": torch.stack(local).var(dim=0).tolist(),
        "synchronized": torch.stack(synced).var(dim=0).tolist(),
        "population": features.var(dim=dims, correction=0).tolist(),
    }


def median_step_seconds(model: nn.Module, dataset: Dataset, *, batch_size: int, steps: int, lr: float) -> float:
    """The median wall time of one training step (forward, backward, gradient all-reduce,
    Adam update) over ``steps`` steps on this worker's shards; the model is restored after."""
    from .train import sandbox

    rank, world = dist.get_rank(), dist.get_world_size()
    sample = shard_sampler(rank, world)
    generator = torch.Generator().manual_seed(0)
    times = []
    with sandbox(model):
        model.train()
        params = [p for p in model.parameters() if p.requires_grad]
        optimizer = data_parallel_optimizer(_adam(lr))(params)
        for _, (xb, yb) in zip(range(steps), sample(dataset.x_train, dataset.y_train, batch_size, generator)):
            dist.barrier()  # start together: a step's time is its own, not a wait for the others
            start = time.perf_counter()
            loss = F.cross_entropy(model(xb), yb)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def one_step_check(build: Callable[[], nn.Module], dataset: Dataset, *, batch_size: int, seed: int, sync: bool):
    """One training step of the data-parallel model against one process on the whole batch.

    Every worker builds the model (converted with ``sync``) and a plain copy with the same
    weights. It takes the first global batch of ``world_size * batch_size`` samples: the
    data-parallel model sees this worker's slice, the copy the whole batch. Returns the largest
    differences between them after forward, backward and gradient averaging: ``"output"`` (the
    slice's outputs), ``"running"`` (the running means and variances of every BatchNorm), and
    ``"grad"`` (every parameter's gradient).
    """
    rank, world = dist.get_rank(), dist.get_world_size()
    reference = prepare(build, seed, sync=False)
    model = prepare(build, seed, sync=sync)
    model.load_state_dict(reference.state_dict())
    generator = torch.Generator().manual_seed(seed)
    x, y = next(iter(batches(dataset.x_train, dataset.y_train, world * batch_size, generator=generator)))
    part = slice(rank * batch_size, (rank + 1) * batch_size)
    model.train(), reference.train()
    out, full = model(x[part]), reference(x)
    F.cross_entropy(out, y[part]).backward()
    F.cross_entropy(full, y).backward()
    average_gradients(list(model.parameters()))

    def largest(pairs):
        return max(float((a - b).abs().max()) for a, b in pairs)

    buffers = dict(reference.named_buffers())
    running = [(b, buffers[n]) for n, b in model.named_buffers() if "running" in n]
    grads = [(p.grad, q.grad) for p, q in zip(model.parameters(), reference.parameters())]
    return {"output": largest([(out, full[part])]), "running": largest(running), "grad": largest(grads)}


def torch_sync_batchnorm_error() -> str:
    """What ``torch.nn.SyncBatchNorm`` says, in a process group, to a CPU tensor in training
    mode: the error's message (empty if it ran)."""
    layer = nn.SyncBatchNorm(4).train()
    try:
        layer(torch.randn(2, 4))
    except Exception as error:  # torch raises ValueError; report whatever it raises
        return f"{type(error).__name__}: {error}"
    return ""


def ddp_buffer_sync(rank: int, world_size: int) -> float:
    """What ``DistributedDataParallel`` with its defaults does to BatchNorm's running statistics.

    Wraps a ``BatchNorm1d(1)`` (training mode), sets its running mean to this process's rank
    and runs one forward pass on zeros. DDP copies process 0's buffers to every process at the
    start of each forward by default, so the running mean is then ``0.9 * 0 + 0.1 * 0 = 0`` on
    every process; without that copy it would be ``0.9 * rank``. Returns the running mean.
    Every process of the group must call it (DDP's construction is a collective); the
    arguments are those :func:`launch` passes.
    """
    layer = nn.BatchNorm1d(1)
    wrapped = nn.parallel.DistributedDataParallel(layer)
    with torch.no_grad():
        layer.running_mean.fill_(float(rank))
        wrapped(torch.zeros(4, 1))
    return float(layer.running_mean)


def experiment(
    rank: int,
    world_size: int,
    dataset: Dataset,
    build: Callable[[], nn.Module],
    *,
    seeds: Sequence[int],
    batch_size: int,
    steps: int,
    lr: float,
    layer: str,
    draws: int,
    timing_steps: int,
    modes: Sequence[str] = ("per-device", "synchronized"),
) -> Dict[str, Any]:
    """Everything chapter 8 measures, in one launch (each worker returns the same keys).

    For every seed and mode (``"per-device"`` BatchNorm or ``"synchronized"``): the test
    accuracy in ``eval()`` mode after ``steps`` updates of ``batch_size`` samples per worker
    (``"accuracy"[mode]``, one entry per seed; every worker evaluates its own model: with
    per-device BatchNorm their running statistics differ), the median step time
    (``"step_seconds"[mode]``, of the first seed's trained model), the spread of the batch mean
    entering ``layer`` (``"spread"``, of the first seed's synchronized model), the one-step
    comparison with a single process (``"check"[mode]``), the median time of one all-reduce of
    a BatchNorm layer's statistics (``"allreduce_seconds"``), torch's own
    ``nn.SyncBatchNorm``'s error on CPU tensors (``"torch_error"``), and the running mean that
    :func:`ddp_buffer_sync` leaves (``"ddp_running_mean"``).
    """
    result: Dict[str, Any] = {"accuracy": {}, "step_seconds": {}, "check": {}}
    for mode in modes:
        sync = {"per-device": False, "synchronized": True}[mode]
        result["check"][mode] = one_step_check(build, dataset, batch_size=batch_size, seed=seeds[0], sync=sync)
        result["accuracy"][mode] = []
        for seed in seeds:
            model = prepare(build, seed, sync)
            history = fit_data_parallel(model, dataset, batch_size=batch_size, steps=steps, lr=lr, seed=seed)
            result["accuracy"][mode].append(history.final_accuracy)
            if seed == seeds[0]:
                result["step_seconds"][mode] = median_step_seconds(
                    model, dataset, batch_size=batch_size, steps=timing_steps, lr=lr
                )
                if sync or "spread" not in result:
                    result["spread"] = batch_mean_spread(
                        model, layer, dataset, batch_size=batch_size, draws=draws, seed=seed
                    )
    result["torch_error"] = torch_sync_batchnorm_error()
    result["ddp_running_mean"] = ddp_buffer_sync(rank, world_size)
    result["allreduce_seconds"] = _allreduce_seconds(copy.deepcopy(model), layer, timing_steps)
    return result


def _allreduce_seconds(model: nn.Module, layer: str, repeats: int) -> float:
    """Median time of one all-reduce of a layer's sum and sum of squares (2 C + 1 numbers)."""
    width = dict(model.named_modules())[layer].num_features
    buffer = torch.zeros(2 * width + 1)
    times = []
    for _ in range(repeats):
        dist.barrier()
        start = time.perf_counter()
        dist.all_reduce(buffer)
        times.append(time.perf_counter() - start)
    return statistics.median(times)
