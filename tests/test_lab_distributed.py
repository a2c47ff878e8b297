"""normlib.lab.distributed: real 2-process jobs (spawn, gloo on 127.0.0.1) on the CPU.

* launch returns every worker's result, raises with a failing worker's traceback, and leaves
  no process behind;
* one data-parallel step with normlib.SyncBatchNorm equals one process on the concatenated
  batch (outputs, running statistics, averaged gradients); per-device BatchNorm does not;
* a short data-parallel run keeps the synchronized replicas identical;
* DistributedDataParallel's defaults copy process 0's running statistics to every process.
"""

from functools import partial

import pytest
import torch

import normlib
from normlib.lab import distributed, models
from normlib.lab.data import Dataset


def _children():
    import multiprocessing

    return [p for p in multiprocessing.active_children() if p.is_alive()]


def _tiny_data(n=64, features=8, classes=3):
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(2 * n, features, generator=generator)
    y = torch.randint(0, classes, (2 * n,), generator=generator)
    return Dataset("tiny", x[:n], y[:n], x[n:], y[n:], classes)


def test_launch_returns_results_by_rank():
    assert distributed.launch(distributed.ping, 2, timeout=60) == [1, 1]
    assert not _children()


def test_a_failing_worker_raises_with_its_traceback_and_nothing_hangs():
    with pytest.raises(RuntimeError, match="worker 1 of 2 failed(.|\n)*fails on purpose"):
        distributed.launch(distributed.ping, 2, fail_rank=1, timeout=60)
    assert not _children()


def test_launch_refuses_an_empty_world():
    with pytest.raises(ValueError, match="world_size"):
        distributed.launch(distributed.ping, 0)


def test_free_port_is_a_port():
    assert 0 < distributed.free_port() < 65536


def _check_both(rank, world_size, dataset, build):
    return {sync: distributed.one_step_check(build, dataset, batch_size=4, seed=0, sync=sync) for sync in (False, True)}


def test_one_synchronized_step_equals_one_process_on_the_whole_batch():
    build = partial(models.mlp, 8, 3, hidden=(16, 16), norm="bn")
    for result in distributed.launch(_check_both, 2, _tiny_data(), build, timeout=90):
        assert result[True]["output"] < 1e-5
        assert result[True]["running"] < 1e-5
        assert result[True]["grad"] < 1e-5
        # per-device BatchNorm normalizes each slice with its own statistics
        assert result[False]["output"] > 1e-3
        assert result[False]["grad"] > 1e-3


def test_experiment_keeps_synchronized_replicas_identical():
    build = partial(models.mlp, 8, 3, hidden=(16,), norm="bn")
    results = distributed.launch(
        distributed.experiment,
        2,
        _tiny_data(),
        build,
        seeds=[0],
        batch_size=4,
        steps=5,
        lr=0.01,
        layer="norm1",
        draws=20,
        timing_steps=3,
        timeout=120,
    )
    first, second = results
    assert set(first["accuracy"]) == {"per-device", "synchronized"}
    assert first["accuracy"]["synchronized"] == second["accuracy"]["synchronized"]
    assert all(seconds > 0 for seconds in first["step_seconds"].values())
    assert first["allreduce_seconds"] > 0
    spread = first["spread"]
    assert len(spread["worker"]) == len(spread["synchronized"]) == len(spread["population"]) == 16
    assert [result["ddp_running_mean"] for result in results] == [0.0, 0.0]
    assert not _children()


def _running_mean_without_ddp(rank, world_size):
    """ddp_buffer_sync's steps on the bare layer: what the running mean is without DDP's copy."""
    layer = torch.nn.BatchNorm1d(1)
    with torch.no_grad():
        layer.running_mean.fill_(float(rank))
        layer(torch.zeros(4, 1))
    return float(layer.running_mean)


def test_ddp_copies_process_0s_running_statistics_by_default():
    """DDP's default forward copies process 0's buffers: process 1's own running mean (0.9 after
    the update, as the control without DDP shows) is replaced by process 0's."""
    assert distributed.launch(distributed.ddp_buffer_sync, 2, timeout=60) == [0.0, 0.0]
    control = distributed.launch(_running_mean_without_ddp, 2, timeout=60)
    assert control == [0.0, pytest.approx(0.9)]
    assert not _children()


def test_prepare_converts_only_when_asked():
    build = partial(models.mlp, 8, 3, hidden=(16,), norm="bn")
    assert isinstance(distributed.prepare(build, 0, sync=True).norm1, normlib.SyncBatchNorm)
    assert isinstance(distributed.prepare(build, 0, sync=False).norm1, normlib.BatchNorm1d)
