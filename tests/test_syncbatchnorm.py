"""normlib.SyncBatchNorm against BatchNorm on the concatenated batch.

The multi-process tests start 2 and 3 real processes (torch.multiprocessing, spawn) joined by
``gloo`` on 127.0.0.1. Each process gets a slice of one batch (slices of unequal sizes, one of
them empty), runs forward and backward with its part of a global loss (the loss is the sum over
processes of ``(y_p * g_p).sum()``) and saves its output, input gradient, parameter gradients and
buffers to ``tmp_path``. The parent compares them with single-process BatchNorm (torch's and
normlib's) on the whole batch: outputs and input gradients slice by slice, parameter gradients
summed over processes (what DDP's all-reduce computes, up to its 1/world_size), buffers on every
process. Each test spawns its own processes (safe under pytest-xdist), waits for them with a
deadline, and kills any survivor in ``finally``.
"""

import os
import socket
import time
import traceback
import zlib
from datetime import timedelta

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from conftest import GRAD_TOL, TOL, assert_close
from torch import nn

import normlib
from normlib.syncbatchnorm import _check_backend_device

DEADLINE_S = 60  # for the processes of one test (they take a few seconds)

# (name, world size, shape of the whole batch, slice sizes, dtype, layer kwargs, channels_last)
CASES_2 = [
    ("2d-f64", 2, (5, 3, 4, 3), (3, 2), torch.float64, {}, False),
    ("2d-f32", 2, (5, 3, 4, 3), (1, 4), torch.float32, {}, False),
    (
        "1d-no-affine-no-stats-f64",
        2,
        (6, 4),
        (2, 4),
        torch.float64,
        {"affine": False, "track_running_stats": False},
        False,
    ),
]
CASES_3 = [
    ("1d-empty-slice-f64", 3, (7, 4), (4, 0, 3), torch.float64, {"momentum": None}, False),
    ("3d-input-f64", 3, (5, 2, 6), (1, 2, 2), torch.float64, {}, False),
    ("2d-channels-last-f32", 3, (6, 3, 2, 5), (2, 3, 1), torch.float32, {"momentum": 0.3}, True),
    ("2d-empty-slice-f32", 3, (4, 3, 2, 2), (0, 3, 1), torch.float32, {}, False),
]
STEPS = ("train", "train", "eval")


def _batch(case, step):
    """The whole batch and the output-gradient weights g of a case and step (float64, CPU)."""
    name, world, shape, sizes, dtype, kwargs, channels_last = case
    gen = torch.Generator().manual_seed(zlib.crc32(f"{name}/{step}".encode()))  # hash() differs by process
    x = torch.randn(shape, generator=gen, dtype=torch.float64) * 3 + 2
    g = torch.randn(shape, generator=gen, dtype=torch.float64)
    return x, g


def _initial_state(case):
    name, world, shape, sizes, dtype, kwargs, channels_last = case
    ref = nn.BatchNorm1d(shape[1], **kwargs).to(torch.float64)
    gen = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for p in ref.parameters():
            p.copy_(torch.rand(p.shape, generator=gen, dtype=torch.float64) + 0.5)
        if ref.running_mean is not None:
            ref.running_mean.copy_(torch.randn(shape[1], generator=gen, dtype=torch.float64))
            ref.running_var.copy_(torch.rand(shape[1], generator=gen, dtype=torch.float64) + 0.5)
    return ref.state_dict()


def _layout(x, channels_last):
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


def _worker(rank, world, port, cases, out_dir, errors):
    """One process: run every case's steps on this rank's slice; save what it computed."""
    try:
        torch.set_num_threads(1)
        dist.init_process_group(
            "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world, timeout=timedelta(seconds=30)
        )
        try:
            results = {}
            for case in cases:
                name, _, shape, sizes, dtype, kwargs, channels_last = case
                layer = normlib.SyncBatchNorm(shape[1], **kwargs).to(dtype)
                layer.load_state_dict(_initial_state(case))
                start = sum(sizes[:rank])
                for step, mode in enumerate(STEPS):
                    x, g = _batch(case, step)
                    x = _layout(x[start : start + sizes[rank]].to(dtype), channels_last).requires_grad_(True)
                    layer.train(mode == "train")
                    y = layer(x)
                    (y * g[start : start + sizes[rank]].to(dtype)).sum().backward()
                    results[(name, step)] = {
                        "y": y.detach(),
                        "channels_last": y.is_contiguous(memory_format=torch.channels_last) if channels_last else None,
                        "dx": x.grad,
                        "grads": {k: p.grad.clone() for k, p in layer.named_parameters()},
                        "state": {k: v.clone() for k, v in layer.state_dict().items()},
                    }
                    layer.zero_grad(set_to_none=True)
            # One value per channel over all processes: every process raises the same error.
            lone = torch.ones(1 if rank == 0 else 0, 2)
            try:
                normlib.SyncBatchNorm(2)(lone)
                results["lone"] = "no error"
            except ValueError as e:
                results["lone"] = str(e)
            torch.save(results, os.path.join(out_dir, f"rank{rank}.pt"))
        finally:
            dist.destroy_process_group()
    except BaseException:
        errors.put(f"rank {rank}:\n{traceback.format_exc()}")
        raise


def _free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run_processes(world, cases, out_dir):
    """Start ``world`` processes, wait for them (bounded); return each rank's results."""
    ctx = mp.get_context("spawn")
    errors = ctx.SimpleQueue()
    port = _free_port()
    procs = [ctx.Process(target=_worker, args=(r, world, port, cases, str(out_dir), errors)) for r in range(world)]
    try:
        for p in procs:
            p.start()
        deadline = time.monotonic() + DEADLINE_S
        while time.monotonic() < deadline and any(p.is_alive() for p in procs):
            if any(p.exitcode not in (None, 0) for p in procs):  # one failed: the others may wait for it
                break
            time.sleep(0.05)
        failures = [] if errors.empty() else [errors.get()]
        assert not failures, "a process failed:\n" + failures[0]
        alive = [p.pid for p in procs if p.is_alive()]
        assert not alive, f"processes {alive} still running after {DEADLINE_S} s"
        assert all(p.exitcode == 0 for p in procs), f"exit codes {[p.exitcode for p in procs]}"
        return [torch.load(os.path.join(out_dir, f"rank{r}.pt")) for r in range(world)]
    finally:
        for p in procs:
            if p.is_alive():
                p.terminate()
                p.join(5)
            if p.is_alive():
                p.kill()
                p.join(5)


def _check_case(case, results):
    """Every rank's results against BatchNorm (torch's and normlib's) on the whole batch."""
    name, world, shape, sizes, dtype, kwargs, channels_last = case
    ref_dtype = dtype  # float64 vs float64, float32 vs float32 (conftest's tolerances)
    torch_ref = nn.BatchNorm1d(shape[1], **kwargs).to(ref_dtype)
    ours_ref = normlib.BatchNorm1d(shape[1], **kwargs).to(ref_dtype)
    for ref in (torch_ref, ours_ref):
        ref.load_state_dict(_initial_state(case))
    if len(shape) == 4:  # BatchNorm1d's class does not matter beyond the rank check: swap for 2d
        torch_ref.__class__, ours_ref.__class__ = nn.BatchNorm2d, normlib.BatchNorm2d
    bounds = [sum(sizes[:r]) for r in range(world + 1)]
    for step, mode in enumerate(STEPS):
        x, g = _batch(case, step)
        for label, ref in (("torch", torch_ref), ("normlib", ours_ref)):
            ref.train(mode == "train")
            xr = x.to(ref_dtype).clone().requires_grad_(True)  # a fresh leaf per reference
            yr = ref(xr)
            (yr * g.to(ref_dtype)).sum().backward()
            where = f"{name} step {step} ({mode}) vs {label} BatchNorm"
            for r in range(world):
                got = results[r][(name, step)]
                lo, hi = bounds[r], bounds[r + 1]
                y_ref, dx_ref = yr[lo:hi], xr.grad[lo:hi]
                if mode == "eval" and not ref.track_running_stats:
                    # no running statistics: each process normalizes its own batch, as torch's layer
                    xs = x[lo:hi].to(ref_dtype).clone().requires_grad_(True)
                    y_ref = ref(xs)
                    (y_ref * g[lo:hi].to(ref_dtype)).sum().backward()
                    dx_ref = xs.grad
                assert_close(got["y"], y_ref, dtype=dtype, msg=f"{where}: output of rank {r}")
                assert_close(got["dx"], dx_ref, tol=GRAD_TOL[dtype], scale_atol=True, msg=f"{where}: dx of rank {r}")
                if got["channels_last"] is not None and sizes[r] > 1:
                    assert got["channels_last"], f"{where}: rank {r}'s output is not channels-last"
                sd = ref.state_dict()
                assert list(got["state"]) == list(sd), f"{where}: state_dict keys"
                for k, v in sd.items():
                    if k.endswith("num_batches_tracked"):
                        assert int(got["state"][k]) == int(v), f"{where}: {k} of rank {r}"
                    else:
                        assert_close(got["state"][k], v, dtype=dtype, msg=f"{where}: {k} of rank {r}")
                    # identical on every process, to the bit
                    assert torch.equal(got["state"][k], results[0][(name, step)]["state"][k]), f"{where}: {k}"
            if mode == "eval" and not ref.track_running_stats:
                ref.zero_grad(set_to_none=True)
                continue  # parameter gradients: the per-slice backward passes above accumulated them
            for k, p in ref.named_parameters():
                total = sum(results[r][(name, step)]["grads"][k] for r in range(world))  # DDP's all-reduce
                assert_close(total, p.grad, tol=GRAD_TOL[dtype], scale_atol=True, msg=f"{where}: summed grad of {k}")
            ref.zero_grad(set_to_none=True)


@pytest.mark.parametrize(("world", "cases"), [(2, CASES_2), (3, CASES_3)], ids=["2-processes", "3-processes"])
def test_processes_match_batchnorm_on_the_whole_batch(world, cases, tmp_path):
    results = _run_processes(world, cases, tmp_path)
    for case in cases:
        _check_case(case, results)
    for r in range(world):
        assert "more than 1 value per channel" in results[r]["lone"], f"rank {r}: {results[r]['lone']}"
        # the layer would output beta, not 0: the message says so
        assert "normalize it to 0 and output beta alone" in results[r]["lone"], f"rank {r}: {results[r]['lone']}"


# --------------------------------------------------------------------------- one process


def _pair(cls_ours, cls_torch, C, **kwargs):
    ref = cls_torch(C, **kwargs).double()
    gen = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for p in ref.parameters():
            p.copy_(torch.rand(p.shape, generator=gen, dtype=torch.float64) + 0.5)
    ours = cls_ours(C, **kwargs).double()
    ours.load_state_dict(ref.state_dict())
    return ours, ref


@pytest.mark.parametrize("shape", [(6, 3), (4, 3, 5), (4, 3, 2, 3), (2, 3, 2, 2, 2)])
@pytest.mark.parametrize("kwargs", [{}, {"momentum": None}, {"affine": False, "track_running_stats": False}])
def test_without_process_group_equals_batchnorm(shape, kwargs):
    assert not (dist.is_available() and dist.is_initialized())
    ref_cls = {2: nn.BatchNorm1d, 3: nn.BatchNorm1d, 4: nn.BatchNorm2d, 5: nn.BatchNorm3d}[len(shape)]
    ours, ref = _pair(normlib.SyncBatchNorm, ref_cls, shape[1], **kwargs)
    assert list(ours.state_dict()) == list(ref.state_dict())
    gen = torch.Generator().manual_seed(1)
    for mode in ("train", "train", "eval"):
        ours.train(mode == "train")
        ref.train(mode == "train")
        x = torch.randn(shape, generator=gen, dtype=torch.float64) * 2 + 1
        g = torch.randn(shape, generator=gen, dtype=torch.float64)
        xo, xr = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
        yo, yr = ours(xo), ref(xr)
        assert_close(yo, yr, msg=f"{mode}: output")
        (yo * g).sum().backward()
        (yr * g).sum().backward()
        assert_close(xo.grad, xr.grad, tol=GRAD_TOL[torch.float64], msg=f"{mode}: dx")
        for (k, a), (_, b) in zip(ours.named_parameters(), ref.named_parameters()):
            assert_close(a.grad, b.grad, tol=GRAD_TOL[torch.float64], msg=f"{mode}: grad of {k}")
        for k, v in ref.state_dict().items():
            assert_close(ours.state_dict()[k], v, tol=TOL[torch.float64], msg=f"{mode}: {k}")
        ours.zero_grad()
        ref.zero_grad()


def test_constructor_and_state_dict_match_torch():
    ours, ref = normlib.SyncBatchNorm(4, 1e-3, 0.2, process_group=None), nn.SyncBatchNorm(4, 1e-3, 0.2)
    assert list(ours.state_dict()) == list(ref.state_dict())
    ours.load_state_dict(ref.state_dict())
    assert ours.process_group is None and repr(ours).startswith("SyncBatchNorm(4, eps=0.001, momentum=0.2")


def test_input_checks():
    bn = normlib.SyncBatchNorm(3)
    with pytest.raises(ValueError, match=r"expected at least 2D input \(got 1D input\)"):
        bn(torch.randn(3))
    with pytest.raises(ValueError, match="channels should be non-zero"):
        normlib.SyncBatchNorm(0)(torch.randn(2, 0))


def test_backend_that_cannot_reduce_the_input_device_is_named(monkeypatch):
    monkeypatch.setattr(dist, "get_backend", lambda group=None: "nccl")
    with pytest.raises(ValueError, match=r"backend 'nccl' handles tensors on .*, but the input is on cpu"):
        _check_backend_device(torch.randn(2, 3), None)
    monkeypatch.setattr(dist, "get_backend", lambda group=None: "gloo")
    _check_backend_device(torch.randn(2, 3), None)  # no error


# --------------------------------------------------------------------------- conversion


def _model():
    return nn.Sequential(
        nn.Conv2d(2, 3, 1), nn.BatchNorm2d(3), nn.Flatten(), nn.BatchNorm1d(12, momentum=None), nn.LayerNorm(12)
    )


@pytest.mark.parametrize("how", ["convert", "convert_sync_batchnorm", "normlib-layers"])
def test_conversion_keeps_tensors_mode_and_hooks(how):
    model = _model()
    if how == "normlib-layers":
        model = normlib.convert(model)
    model[3].eval()
    with torch.no_grad():
        model[1].running_mean.fill_(0.5)
    calls = []
    model[1].register_forward_hook(lambda m, i, o: calls.append(type(m).__name__))
    tensors = {k: v for k, v in model.state_dict(keep_vars=True).items()}
    if how == "convert_sync_batchnorm":
        model = normlib.SyncBatchNorm.convert_sync_batchnorm(model, process_group="group-sentinel")
        assert type(model[4]) is nn.LayerNorm  # only BatchNorm changes
    else:
        model = normlib.convert(model, sync=True)
        assert type(model[4]) is normlib.LayerNorm
    assert type(model[1]) is normlib.SyncBatchNorm and type(model[3]) is normlib.SyncBatchNorm
    assert model[3].momentum is None and model[1].training and not model[3].training
    if how == "convert_sync_batchnorm":
        assert model[1].process_group == "group-sentinel"
    for k, v in model.state_dict(keep_vars=True).items():
        assert v is tensors[k], f"{k} was copied"
    model(torch.randn(4, 2, 2, 2))
    assert calls == ["SyncBatchNorm"]
    assert normlib.SyncBatchNorm.convert_sync_batchnorm(nn.BatchNorm3d(2)).num_features == 2


def test_conversion_of_torch_syncbatchnorm_and_refused_subclass():
    layer = normlib.convert(nn.SyncBatchNorm(3), sync=True)
    assert type(layer) is normlib.SyncBatchNorm

    class MyBN(nn.BatchNorm2d):
        pass

    with pytest.raises(TypeError, match="MyBN"):
        normlib.convert(nn.Sequential(MyBN(3)), sync=True)
    assert type(normlib.convert(nn.BatchNorm2d(3))) is normlib.BatchNorm2d  # without sync: as before
