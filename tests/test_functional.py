"""normlib.functional: the core `normalize` and the torch-named functions, against torch."""

import itertools

import pytest
import torch
import torch.nn.functional as F
from conftest import (
    GRAD_TOL,
    PARITY_DTYPES,
    assert_close,
    make_gen,
    make_layout,
    randint,
    randn,
    random_shapes,
    ref_dtype,
    skip_unsupported,
)

from normlib import functional as NF


def formula(x, dims, eps):
    """(x - mean) / sqrt(biased var + eps), in float64."""
    x = x.double()
    mean = x.mean(dims, keepdim=True)
    var = x.var(dims, correction=0, keepdim=True)
    return (x - mean) / torch.sqrt(var + eps), mean, var


# --------------------------------------------------------------------------- normalize


def test_normalize_over_every_subset_of_axes(device):
    skip_unsupported(device, torch.float64)
    gen = make_gen(10)
    x = randn((3, 4, 2, 5), gen, device=device)
    for r in range(1, 5):
        for dims in itertools.combinations(range(4), r):
            for spelled in (dims, tuple(d - 4 for d in dims)):  # negative dims too
                y, mean, var = NF.normalize(x, spelled, eps=1e-5)
                ey, em, ev = formula(x, dims, 1e-5)
                assert_close(y, ey, msg=f"dims={spelled}")
                assert_close(mean, em, msg=f"mean dims={spelled}")
                assert_close(var, ev, msg=f"var dims={spelled}")
                n_stats = x.numel() // int(torch.tensor([x.shape[d] for d in dims]).prod())
                assert mean.numel() == n_stats and var.numel() == n_stats
                assert mean.dim() == x.dim(), "mean must keep the reduced dims"


def test_normalize_int_dim_and_default_eps():
    gen = make_gen(11)
    x = randn((4, 6), gen)
    y, mean, var = NF.normalize(x, 1)
    ey, em, ev = formula(x, (1,), 1e-5)
    assert_close(y, ey)
    assert mean.shape == (4, 1)


def test_normalize_variance_is_biased():
    # pairs (a, b): biased var ((a-b)/2)^2; unbiased twice that.
    x = torch.tensor([[0.0, 2.0], [5.0, -1.0]], dtype=torch.float64)
    y, mean, var = NF.normalize(x, 1, eps=0.0)
    assert_close(var.flatten(), torch.tensor([1.0, 9.0], dtype=torch.float64), tol=(1e-15, 0))
    assert_close(y, torch.tensor([[-1.0, 1.0], [1.0, -1.0]], dtype=torch.float64), tol=(1e-15, 0))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_normalize_half_computes_in_float32(dtype):
    gen = make_gen(12)
    # large mean: accumulating in half precision would lose the variance entirely
    x = (torch.randn(4, 64, generator=gen) + 100.0).to(dtype)
    y, mean, var = NF.normalize(x, 1)
    assert y.dtype == dtype
    assert mean.dtype == torch.float32 and var.dtype == torch.float32
    y32, m32, v32 = NF.normalize(x.float(), 1)
    assert torch.equal(y, y32.to(dtype))
    assert_close(mean, m32, tol=(1e-6, 1e-6))
    assert_close(var, v32, tol=(1e-6, 1e-6))


def test_norm_dims_reproduce_torch_layers():
    gen = make_gen(13)
    for ndim in (3, 4, 5):
        shape = (3, 4) + (3,) * (ndim - 2)
        x = randn(shape, gen)
        y, _, _ = NF.normalize(x, NF.norm_dims("bn", ndim))
        assert_close(y, F.batch_norm(x, None, None, training=True))
        y, _, _ = NF.normalize(x, NF.norm_dims("ln", ndim))
        assert_close(y, F.layer_norm(x, x.shape[1:]))
        y, _, _ = NF.normalize(x, NF.norm_dims("in", ndim))
        assert_close(y, F.instance_norm(x))
    assert NF.norm_dims("bn", 4) == (0, 2, 3)
    assert NF.norm_dims("ln", 4) == (1, 2, 3)
    assert NF.norm_dims("in", 4) == (2, 3)
    assert NF.norm_dims("bn", 2) == (0,)


# --------------------------------------------------------------------------- batch_norm


@pytest.mark.parametrize("dtype", PARITY_DTYPES)
@pytest.mark.parametrize("spatial", [0, 1, 2, 3])
def test_functional_batch_norm_matches_torch(spatial, dtype, device):
    skip_unsupported(device, dtype)
    gen = make_gen(20 + spatial)
    rdt = ref_dtype(dtype)
    for shape in random_shapes(gen, 3, spatial, max_side=4):
        C = shape[1]
        x = randn(shape, gen, dtype=dtype, device=device)
        w = randn((C,), gen, dtype=dtype, device=device, scale=0.5, shift=1.0)
        b = randn((C,), gen, dtype=dtype, device=device, scale=0.5, shift=0.0)
        for training, momentum, use_wb, use_rs in itertools.product(
            (True, False), (0.1, 0.0, 1.0, 0.37), (True, False), (True, False)
        ):
            if not training and not use_rs:
                continue  # torch requires running stats in eval
            rm = randn((C,), gen, dtype=dtype, device=device) if use_rs else None
            rv = (torch.rand(C, generator=gen, dtype=torch.float64) + 0.5).to(dtype).to(device) if use_rs else None
            rm_r = rm.to(rdt).clone() if use_rs else None
            rv_r = rv.to(rdt).clone() if use_rs else None
            xa = x.clone().requires_grad_(True)
            xr = x.to(rdt).clone().requires_grad_(True)
            wa, wr = (
                (w.clone().requires_grad_(True), w.to(rdt).clone().requires_grad_(True)) if use_wb else (None, None)
            )
            ba, br = (
                (b.clone().requires_grad_(True), b.to(rdt).clone().requires_grad_(True)) if use_wb else (None, None)
            )
            ya = NF.batch_norm(xa, rm, rv, wa, ba, training=training, momentum=momentum, eps=1e-4)
            yr = F.batch_norm(xr, rm_r, rv_r, wr, br, training=training, momentum=momentum, eps=1e-4)
            what = f"shape={shape} training={training} momentum={momentum} affine={use_wb} running={use_rs}"
            assert ya.dtype == dtype, what
            assert_close(ya, yr.to(dtype), dtype=dtype, msg=what)
            if use_rs:
                assert_close(rm, rm_r.to(dtype), dtype=dtype, msg=what + " running_mean")
                assert_close(rv, rv_r.to(dtype), dtype=dtype, msg=what + " running_var")
            g = torch.randn(shape, generator=gen, dtype=torch.float64).to(dtype).to(device)
            ya.backward(g)
            yr.backward(g.to(rdt))
            assert_close(xa.grad, xr.grad, tol=GRAD_TOL[dtype], msg=what + " dx", scale_atol=True)
            if use_wb:
                assert_close(wa.grad, wr.grad, tol=GRAD_TOL[dtype], msg=what + " dw", scale_atol=True)
                assert_close(ba.grad, br.grad, tol=GRAD_TOL[dtype], msg=what + " db", scale_atol=True)


def test_functional_batch_norm_noncontiguous(device):
    gen = make_gen(25)
    for layout in ("channels_last", "transposed", "sliced"):
        x = randn((3, 4, 3, 5), gen, dtype=torch.float32, device=device)
        xl = make_layout(x, layout)
        rm, rv = torch.zeros(4, device=device), torch.ones(4, device=device)
        rm2, rv2 = rm.clone(), rv.clone()
        assert_close(NF.batch_norm(xl, rm, rv, training=True), F.batch_norm(x, rm2, rv2, training=True), msg=layout)
        assert_close(rm, rm2)
        assert_close(rv, rv2)


# --------------------------------------------------------------------------- layer/group/instance/rms


def _grad_compare(fn_got, fn_ref, tensors, dtype, gen, what):
    """Forward both, compare, backward with one random cotangent, compare grads."""
    rdt = ref_dtype(dtype)
    ga = [t.clone().requires_grad_(True) if t is not None else None for t in tensors]
    gr = [t.to(rdt).clone().requires_grad_(True) if t is not None else None for t in tensors]
    ya, yr = fn_got(*ga), fn_ref(*gr)
    assert ya.dtype == tensors[0].dtype, what
    assert ya.shape == yr.shape, what
    assert_close(ya, yr.to(dtype), dtype=dtype, msg=what)
    g = torch.randn(ya.shape, generator=gen, dtype=torch.float64).to(dtype)  # CPU
    ya.backward(g.to(ya.device))
    yr.backward(g.to(rdt).to(yr.device))
    for i, (a, r) in enumerate(zip(ga, gr)):
        if a is not None:
            assert_close(a.grad, r.grad, tol=GRAD_TOL[dtype], msg=f"{what} grad of arg {i}", scale_atol=True)


@pytest.mark.parametrize("dtype", PARITY_DTYPES)
def test_functional_layer_norm_matches_torch(dtype, device):
    skip_unsupported(device, dtype)
    gen = make_gen(30)
    for _ in range(6):
        rank = randint(1, 4, gen)
        shape = tuple(randint(1, 5, gen) for _ in range(rank))
        k = randint(1, rank, gen)
        ns = shape[rank - k :]
        if all(s == 1 for s in ns):
            ns = ns[:-1] + (2,)
            shape = shape[: rank - 1] + (2,)
        x = randn(shape, gen, dtype=dtype, device=device)
        w = randn(ns, gen, dtype=dtype, device=device, scale=0.5, shift=1.0)
        b = randn(ns, gen, dtype=dtype, device=device, scale=0.5, shift=0.0)
        for args in ((x, w, b), (x, w, None), (x, None, None)):
            _grad_compare(
                lambda x, w, b: NF.layer_norm(x, ns, w, b, eps=1e-5),
                lambda x, w, b: F.layer_norm(x, ns, w, b, eps=1e-5),
                list(args),
                dtype,
                gen,
                f"layer_norm shape={shape} ns={ns} affine={[a is not None for a in args]}",
            )


@pytest.mark.parametrize("dtype", PARITY_DTYPES)
def test_functional_group_norm_matches_torch(dtype, device):
    skip_unsupported(device, dtype)
    gen = make_gen(31)
    for _ in range(6):
        spatial = randint(0, 3, gen)
        G = randint(1, 3, gen)
        C = G * randint(1, 3, gen)
        shape = (randint(1, 4, gen), C) + tuple(randint(1, 4, gen) for _ in range(spatial))
        if C // G * int(torch.tensor(shape[2:]).prod()) == 1:
            shape = (shape[0], 2 * C) + shape[2:]
            C = 2 * C
        x = randn(shape, gen, dtype=dtype, device=device)
        w = randn((C,), gen, dtype=dtype, device=device, scale=0.5, shift=1.0)
        b = randn((C,), gen, dtype=dtype, device=device, scale=0.5, shift=0.0)
        for args in ((x, w, b), (x, None, None)):
            _grad_compare(
                lambda x, w, b: NF.group_norm(x, G, w, b, eps=1e-5),
                lambda x, w, b: F.group_norm(x, G, w, b, eps=1e-5),
                list(args),
                dtype,
                gen,
                f"group_norm shape={shape} G={G}",
            )


@pytest.mark.parametrize("dtype", PARITY_DTYPES)
def test_functional_instance_norm_matches_torch(dtype, device):
    skip_unsupported(device, dtype)
    gen = make_gen(32)
    rdt = ref_dtype(dtype)
    for spatial in (1, 2, 3):
        shape = random_shapes(gen, 1, spatial, max_side=4)[0]
        shape = shape[:2] + tuple(max(s, 2) for s in shape[2:])
        C = shape[1]
        x = randn(shape, gen, dtype=dtype, device=device)
        w = randn((C,), gen, dtype=dtype, device=device, scale=0.5, shift=1.0)
        b = randn((C,), gen, dtype=dtype, device=device, scale=0.5, shift=0.0)
        _grad_compare(
            lambda x, w, b: NF.instance_norm(x, weight=w, bias=b, eps=1e-5),
            lambda x, w, b: F.instance_norm(x, weight=w, bias=b, eps=1e-5),
            [x, w, b],
            dtype,
            gen,
            f"instance_norm shape={shape}",
        )
        for use_input_stats, momentum in ((True, 0.1), (True, 1.0), (False, 0.1)):
            rm = randn((C,), gen, dtype=dtype, device=device)
            rv = (torch.rand(C, generator=gen, dtype=torch.float64) + 0.5).to(dtype).to(device)
            rm_r, rv_r = rm.to(rdt).clone(), rv.to(rdt).clone()
            ya = NF.instance_norm(x, rm, rv, w, b, use_input_stats=use_input_stats, momentum=momentum)
            yr = F.instance_norm(
                x.to(rdt), rm_r, rv_r, w.to(rdt), b.to(rdt), use_input_stats=use_input_stats, momentum=momentum
            )
            what = f"instance_norm shape={shape} use_input_stats={use_input_stats} momentum={momentum}"
            assert_close(ya, yr.to(dtype), dtype=dtype, msg=what)
            assert_close(rm, rm_r.to(dtype), dtype=dtype, msg=what + " running_mean")
            assert_close(rv, rv_r.to(dtype), dtype=dtype, msg=what + " running_var")


@pytest.mark.parametrize("dtype", PARITY_DTYPES)
def test_functional_rms_norm_matches_torch(dtype, device):
    skip_unsupported(device, dtype)
    gen = make_gen(33)
    for _ in range(5):
        rank = randint(1, 4, gen)
        shape = tuple(randint(1, 5, gen) for _ in range(rank))
        k = randint(1, rank, gen)
        ns = shape[rank - k :]
        x = randn(shape, gen, dtype=dtype, device=device)
        w = randn(ns, gen, dtype=dtype, device=device, scale=0.5, shift=1.0)
        for eps in (None, 1e-6, 0.5):
            for args in ((x, w), (x, None)):
                _grad_compare(
                    lambda x, w: NF.rms_norm(x, ns, w, eps=eps),
                    lambda x, w: F.rms_norm(x, ns, w, eps=eps),
                    list(args),
                    dtype,
                    gen,
                    f"rms_norm shape={shape} ns={ns} eps={eps}",
                )


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16, torch.float16])
def test_rms_norm_eps_none_is_machine_epsilon_of_compute_dtype(dtype):
    # tiny inputs so that eps dominates mean(x^2): the eps actually used shows.
    mag = 1e-9 if dtype == torch.float64 else 1e-4
    x = (torch.arange(1, 9, dtype=torch.float64).view(2, 4) * mag).to(dtype)
    compute = torch.float64 if dtype == torch.float64 else torch.float32
    eps = torch.finfo(compute).eps
    xf = x.to(torch.float64)
    expected = xf / torch.sqrt(xf.square().mean(-1, keepdim=True) + eps)
    got = NF.rms_norm(x, (4,), None, eps=None)
    assert got.dtype == dtype
    assert_close(got, expected.to(dtype), dtype=dtype, tol=(1e-3, 1e-2) if dtype != torch.float64 else None)
    assert_close(
        got,
        F.rms_norm(x.to(compute), (4,), None, eps=None).to(dtype),
        dtype=dtype,
        tol=(1e-3, 1e-2) if dtype != torch.float64 else None,
    )
    # and it is not the half-precision epsilon (that would change the result by far more)
    if dtype in (torch.float16, torch.bfloat16):
        wrong = xf / torch.sqrt(xf.square().mean(-1, keepdim=True) + torch.finfo(dtype).eps)
        assert not torch.allclose(got.double(), wrong, rtol=0.1)
