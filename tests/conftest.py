"""Shared fixtures and helpers for the normlib test suite.

Every parity test takes the ``device`` fixture: ``cpu`` always runs; ``cuda`` and ``mps``
run when present and are *skipped* (visibly, with a reason) otherwise.
"""

import copy
import os

import pytest
import torch

# Tiny tensors: intra-op threads only add overhead (and oversubscribe under pytest-xdist).
torch.set_num_threads(1)


def pytest_configure(config):
    # scripts/check_mutants.py sets this: make sure the mutated copy is what the tests import.
    expected = os.environ.get("NORMLIB_EXPECTED_DIR")
    if expected:
        import normlib

        if not os.path.abspath(normlib.__file__).startswith(os.path.abspath(expected)):
            raise pytest.UsageError(f"normlib imported from {normlib.__file__}, expected under {expected}")


# --------------------------------------------------------------------------- devices


def _cuda_ok():
    return torch.cuda.is_available()


def _mps_ok():
    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


DEVICE_PARAMS = [
    pytest.param("cpu", id="cpu"),
    pytest.param("cuda", id="cuda", marks=pytest.mark.skipif(not _cuda_ok(), reason="CUDA not available")),
    pytest.param("mps", id="mps", marks=pytest.mark.skipif(not _mps_ok(), reason="MPS not available")),
]


@pytest.fixture(scope="module", params=["kernels", "torch_ops"])
def eager_path(request):
    """A module's tests twice (``pytestmark = pytest.mark.usefixtures("eager_path")``): with
    normlib.kernels' Numba loops (where installed) and with PyTorch operations, what the eager
    layers run on a GPU, in half precision, or without Numba."""
    from normlib import kernels

    with kernels.use(request.param == "kernels"):
        yield request.param


@pytest.fixture(params=DEVICE_PARAMS)
def device(request):
    return torch.device(request.param)


def skip_unsupported(device, dtype):
    """MPS has no float64; skip such combinations instead of failing."""
    device = torch.device(device)
    if device.type == "mps" and dtype == torch.float64:
        pytest.skip("MPS does not support float64")


# --------------------------------------------------------------------------- dtypes

# Tolerances (atol, rtol) for *outputs*. For float64 and float32 the reference is torch.nn
# run in the same dtype. For bfloat16, torch's CPU kernels (and normlib, by contract)
# accumulate in float32 and round only the result; torch's kernels in bf16 still differ from
# the float32 computation by up to ~1 bf16 ulp (0.0078 at |y|~2, measured 0.015–0.024 on
# N(2,3) data with bf16 *parameters*). So the bf16 reference is torch in float32 on
# x_bf16.float() (parameters cast likewise), rounded to bf16: an implementation that computes
# in float32 matches it to ~1 ulp, one that accumulates in bf16 does not.
TOL = {
    torch.float64: (1e-10, 1e-10),
    torch.float32: (1e-5, 1e-5),
    torch.bfloat16: (2e-2, 2e-2),
    torch.float16: (5e-3, 5e-3),
}
# Gradients go through one more reduction: loosen float32 a little.
GRAD_TOL = {
    torch.float64: (1e-9, 1e-9),
    torch.float32: (1e-4, 1e-4),
    torch.bfloat16: (5e-2, 5e-2),
    torch.float16: (1e-2, 1e-2),
}

PARITY_DTYPES = [
    pytest.param(torch.float64, id="f64"),
    pytest.param(torch.float32, id="f32"),
    pytest.param(torch.bfloat16, id="bf16"),
]


def ref_dtype(dtype):
    """dtype in which the torch reference is computed (see TOL)."""
    return torch.float32 if dtype in (torch.bfloat16, torch.float16) else dtype


def assert_close(got, expected, dtype=None, tol=None, msg="", scale_atol=False):
    """torch.testing.assert_close in float64 on the CPU. With scale_atol, atol is relative to
    the largest reference value (used for gradients: with few values per statistic, dx is a
    difference of large, nearly equal terms, and float32 rounding scales with those terms)."""
    __tracebackhide__ = True
    if expected is None or got is None:
        assert got is None and expected is None, f"{msg}: one is None (got={got}, expected={expected})"
        return
    dtype = dtype or expected.dtype
    atol, rtol = tol or TOL[dtype]
    if scale_atol and expected.numel():
        atol = atol * max(1.0, float(expected.detach().abs().max()))
    torch.testing.assert_close(
        got.detach().to("cpu", torch.float64),
        expected.detach().to("cpu", torch.float64),
        atol=atol,
        rtol=rtol,
        msg=lambda m: f"{msg}\n{m}",
    )


def assert_output_close(got, ref, truth, dtype, msg=""):
    """Output check: close to torch's or, when a float64 truth is given, no farther from it
    than torch's own output (plus the rounding floor atol)."""
    __tracebackhide__ = True
    atol, rtol = TOL[dtype]
    g, r = got.detach().to("cpu", torch.float64), ref.detach().to("cpu", torch.float64)
    if truth is None or torch.allclose(g, r, atol=atol, rtol=rtol, equal_nan=True):
        assert_close(got, ref, dtype=dtype, msg=msg)
        return
    t = truth.detach().to("cpu", torch.float64)
    err_got, err_ref = float((g - t).abs().max()), float((r - t).abs().max())
    assert err_got <= max(err_ref, atol), (
        f"{msg}: normlib's output error vs float64 {err_got:.3g} exceeds torch's {err_ref:.3g}"
    )


def assert_grad_close(got, ref, truth, dtype, msg=""):
    """Gradient check: close to torch's (atol scaled by the gradient's size), or, when a
    float64 truth is given, at most 4x torch's own error against it (plus a rounding floor)."""
    __tracebackhide__ = True
    if ref is None or got is None:
        assert got is None and ref is None, f"{msg}: one gradient is None (got={got}, torch={ref})"
        return
    atol, rtol = GRAD_TOL[dtype]
    g, r = got.detach().to("cpu", torch.float64), ref.detach().to("cpu", torch.float64)
    scale = max(1.0, float(r.abs().max())) if r.numel() else 1.0
    if torch.allclose(g, r, atol=atol * scale, rtol=rtol):
        return
    if truth is not None:
        t = truth.detach().to("cpu", torch.float64)
        err_got = float((g - t).abs().max())
        err_ref = float((r - t).abs().max())
        assert err_got <= max(4 * err_ref, atol * scale), (
            f"{msg}: normlib's gradient error vs float64 {err_got:.3g} exceeds 4x torch's {err_ref:.3g}"
        )
        return
    assert_close(got, ref, tol=(atol, rtol), msg=msg, scale_atol=True)


# --------------------------------------------------------------------------- randomness


def make_gen(seed):
    g = torch.Generator()
    g.manual_seed(seed)
    return g


def randn(shape, gen, dtype=torch.float64, device="cpu", scale=3.0, shift=2.0):
    """Random data on the CPU (reproducible generator) moved to device/dtype; non-zero
    mean and non-unit variance so that a wrong mean or variance shows."""
    x = torch.randn(*shape, generator=gen, dtype=torch.float64) * scale + shift
    return x.to(dtype).to(device)


def randint(lo, hi, gen):
    """Integer in [lo, hi] from the generator."""
    return int(torch.randint(lo, hi + 1, (1,), generator=gen))


def random_shapes(gen, n, spatial_dims, channels=None, min_batch=2, max_batch=5, max_side=5):
    """n reproducible shapes (N, C, *spatial) with len(spatial) == spatial_dims."""
    shapes = []
    for _ in range(n):
        N = randint(min_batch, max_batch, gen)
        C = channels if channels is not None else randint(1, 6, gen)
        sp = tuple(randint(1 if spatial_dims else 1, max_side, gen) for _ in range(spatial_dims))
        if spatial_dims and all(s == 1 for s in sp) and N == 1:
            sp = (2,) + sp[1:]
        shapes.append((N, C) + sp)
    return shapes


def randomize_params(module, gen):
    """Give weight/bias (and any running stats) non-default values, reproducibly."""
    with torch.no_grad():
        for name, p in module.named_parameters():
            p.copy_((torch.rand(p.shape, generator=gen, dtype=torch.float64) + 0.5).to(p.dtype))
        for name, b in module.named_buffers():
            if name.endswith("running_mean"):
                b.copy_(torch.randn(b.shape, generator=gen, dtype=torch.float64).to(b.dtype))
            elif name.endswith("running_var"):
                b.copy_((torch.rand(b.shape, generator=gen, dtype=torch.float64) + 0.5).to(b.dtype))
    return module


def copy_state(src, dst):
    """Copy parameters and buffers by name (strict), keeping dst's dtypes."""
    dst.load_state_dict(src.state_dict(), strict=True)
    return dst


def compare_modules(got, expected, dtype=None, msg=""):
    """Parameters, buffers (incl. num_batches_tracked) and state_dict keys agree."""
    __tracebackhide__ = True
    sd_g, sd_e = got.state_dict(), expected.state_dict()
    assert list(sd_g.keys()) == list(sd_e.keys()), f"{msg}: state_dict keys differ"
    for k in sd_e:
        a, b = sd_g[k], sd_e[k]
        assert a.shape == b.shape, f"{msg}: {k} shape {tuple(a.shape)} vs {tuple(b.shape)}"
        assert a.dtype == b.dtype, f"{msg}: {k} dtype {a.dtype} vs {b.dtype}"
        if k.endswith("num_batches_tracked"):
            assert int(a) == int(b), f"{msg}: {k} {int(a)} vs {int(b)}"
        else:
            assert_close(a, b, dtype=dtype or b.dtype, msg=f"{msg}: {k}")


# --------------------------------------------------------------------------- layouts

LAYOUTS = ["contiguous", "channels_last", "transposed", "sliced"]


def make_layout(x, layout):
    """Same values as x, different memory layout. Returns None when the layout does not
    apply to x's rank (channels_last needs 4-D or 5-D)."""
    if layout == "contiguous":
        return x.contiguous()
    if layout == "channels_last":
        if x.dim() == 4:
            y = x.contiguous(memory_format=torch.channels_last)
        elif x.dim() == 5:
            y = x.contiguous(memory_format=torch.channels_last_3d)
        else:
            return None
        return y
    if layout == "transposed":
        # Swap the first two dims in memory: the view has x's shape but is not contiguous
        # (as long as those dims have size > 1).
        y = x.transpose(0, 1).contiguous().transpose(0, 1)
        return y
    if layout == "sliced":
        shape = list(x.shape)
        shape[-1] *= 2
        big = torch.zeros(shape, dtype=x.dtype, device=x.device)
        big[..., ::2] = x
        return big[..., ::2]
    raise ValueError(layout)


# --------------------------------------------------------------------------- train/eval runner


def module_pair(got_cls, ref_cls, args, kwargs, dtype, device, gen):
    """(normlib module in dtype, torch module in ref_dtype(dtype)) on device, with equal,
    randomized state. Built in float64 on the CPU first (MPS has no float64), the torch
    module rounded through dtype so both hold the same values."""
    ref = ref_cls(*args, **kwargs).to(torch.float64)
    randomize_params(ref, gen)
    got = got_cls(*args, **kwargs).to(torch.float64)
    got.load_state_dict(ref.state_dict())
    return got.to(device=device, dtype=dtype), ref.to(dtype).to(device=device, dtype=ref_dtype(dtype))


def check_steps(got_mod, ref_mod, steps, dtype, gen, msg="", layout="contiguous", check_grads=True, device="cpu"):
    """Run (training: bool, x) steps through both modules and compare outputs, input and
    parameter gradients, and all buffers after every step.

    x is given on the CPU (float64) and moved to ``device``; got_mod runs in ``dtype``,
    ref_mod in ref_dtype(dtype) (see TOL)."""
    __tracebackhide__ = True
    rdt = ref_dtype(dtype)
    # Below float64, gradients of few-values-per-statistic inputs are ill-conditioned (dx is a
    # difference of nearly equal terms); torch's own float32 kernels are then off from the
    # exact answer by more than any fixed tolerance. So gradients are also judged against a
    # float64 "truth" module: normlib must be close to torch OR no less accurate than torch.
    # Outputs too: normlib's one-pass CPU kernels (normlib.kernels) sum in float64, so where
    # torch's float32 output is off (groups of two nearly equal values), normlib's is closer.
    truth_mod = copy.deepcopy(ref_mod).to("cpu", torch.float64) if dtype != torch.float64 else None
    for i, (training, x) in enumerate(steps):
        got_mod.train(training)
        ref_mod.train(training)
        x = x.to("cpu")
        xg = make_layout(x.to(dtype).to(device), layout)
        if xg is None:
            pytest.skip(f"layout {layout} does not apply to {x.dim()}-D input")
        xg = xg.detach().requires_grad_(True)
        xr = x.to(dtype).to(device=device, dtype=rdt).detach().requires_grad_(True)
        yg = got_mod(xg)
        yr = ref_mod(xr)
        where = f"{msg} step {i} ({'train' if training else 'eval'}) shape {tuple(x.shape)} layout {layout}"
        assert yg.dtype == xg.dtype, f"{where}: output dtype {yg.dtype}, input {xg.dtype}"
        assert yg.shape == yr.shape, f"{where}: shape {tuple(yg.shape)} vs {tuple(yr.shape)}"
        yt = xt = None
        if truth_mod is not None:
            truth_mod.train(training)
            xt = x.to(dtype).to(torch.float64).detach().requires_grad_(check_grads)  # CPU
            yt = truth_mod(xt)
        assert_output_close(yg, yr.to(dtype), yt, dtype=dtype, msg=f"{where}: output")
        if check_grads:
            g = torch.randn(yr.shape, generator=gen, dtype=torch.float64).to(dtype)  # on the CPU
            yg.backward(g.to(device))
            yr.backward(g.to(device=device, dtype=rdt))
            pairs = [("input", xg.grad, xr.grad)]
            pg = dict(got_mod.named_parameters())
            pr = dict(ref_mod.named_parameters())
            assert sorted(pg) == sorted(pr), f"{where}: parameter names {sorted(pg)} vs {sorted(pr)}"
            pairs += [(k, pg[k].grad, pr[k].grad) for k in pr]
            truths = {}
            if truth_mod is not None:
                yt.backward(g.to(torch.float64))
                truths = {"input": xt.grad, **{k: p.grad for k, p in truth_mod.named_parameters()}}
                truth_mod.zero_grad(set_to_none=True)
            for k, a, r in pairs:
                assert_grad_close(a, r, truths.get(k), dtype, msg=f"{where}: grad of {k}")
            got_mod.zero_grad(set_to_none=True)
            ref_mod.zero_grad(set_to_none=True)
        sg, sr = got_mod.state_dict(), ref_mod.state_dict()
        assert list(sg) == list(sr), f"{where}: state_dict keys {list(sg)} vs {list(sr)}"
        for k in sr:
            if k.endswith("num_batches_tracked"):
                assert sg[k].dtype == torch.int64, f"{where}: {k} dtype {sg[k].dtype}"
                assert int(sg[k]) == int(sr[k]), f"{where}: {k} {int(sg[k])} vs {int(sr[k])}"
            else:
                assert sg[k].dtype == dtype or sg[k].dtype == sr[k].dtype, f"{where}: {k} dtype {sg[k].dtype}"
                assert_close(sg[k], sr[k].to(sg[k].dtype), dtype=dtype, msg=f"{where}: buffer/param {k}")
