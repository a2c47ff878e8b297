"""float64 gradcheck of every normlib function and module, and the closed-form BN backward."""

import pytest
import torch
from conftest import assert_close, make_gen, randn
from torch.autograd import gradcheck

import normlib
from normlib import functional as NF


def leaf(shape, gen, scale=1.0, shift=0.0):
    return randn(shape, gen, scale=scale, shift=shift).requires_grad_(True)


def test_gradcheck_normalize():
    gen = make_gen(120)
    x = leaf((3, 2, 4), gen)
    for dims in ((0,), (1, 2), (0, 2), (-1,)):
        assert gradcheck(lambda x: NF.normalize(x, dims)[0], (x,))
        assert gradcheck(lambda x: NF.normalize(x, dims)[2], (x,))  # the variance itself


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("shape", [(4, 3), (3, 2, 4), (2, 3, 2, 2)], ids=["2D", "3D", "4D"])
def test_gradcheck_batch_norm(shape, training):
    gen = make_gen(121)
    C = shape[1]
    x, w, b = leaf(shape, gen, 2.0, 1.0), leaf((C,), gen, 0.3, 1.0), leaf((C,), gen)
    rm, rv = torch.zeros(C, dtype=torch.float64), torch.ones(C, dtype=torch.float64) * 2
    assert gradcheck(lambda x, w, b: NF.batch_norm(x, rm.clone(), rv.clone(), w, b, training=training), (x, w, b))
    if training:
        assert gradcheck(lambda x: NF.batch_norm(x, None, None, training=True), (x,))


@pytest.mark.parametrize("shape", [(5, 3), (3, 2, 4), (2, 3, 2, 2)], ids=["2D", "3D", "4D"])
def test_gradcheck_batchnorm_function_closed_form(shape):
    gen = make_gen(122)
    C = shape[1]
    x, w, b = leaf(shape, gen, 2.0, 1.0), leaf((C,), gen, 0.3, 1.0), leaf((C,), gen)
    assert gradcheck(lambda x, w, b: NF.BatchNormFunction.apply(x, w, b, 1e-5)[0], (x, w, b))
    assert gradcheck(lambda x: NF.BatchNormFunction.apply(x, None, None, 1e-5)[0], (x,))


@pytest.mark.parametrize("shape", [(6, 3), (4, 2, 3), (3, 2, 2, 3)], ids=["2D", "3D", "4D"])
def test_batch_norm_backward_closed_form_equals_autograd(shape):
    gen = make_gen(123)
    C = shape[1]
    x, w, b = leaf(shape, gen, 2.0, 1.0), leaf((C,), gen, 0.3, 1.0), leaf((C,), gen)
    dy = randn(shape, gen, scale=1.0, shift=0.0)
    # autograd through plain tensor ops (the textbook formula)
    dims = [0] + list(range(2, len(shape)))
    cs = (1, C) + (1,) * (len(shape) - 2)
    mean = x.mean(dims, keepdim=True)
    var = ((x - mean) ** 2).mean(dims, keepdim=True)
    y = (x - mean) / torch.sqrt(var + 1e-5) * w.view(cs) + b.view(cs)
    dx_ref, dw_ref, db_ref = torch.autograd.grad(y, (x, w, b), dy)
    # closed form from the saved forward quantities
    xd = x.detach()
    m_ = xd.mean(dims, keepdim=True)
    inv_std = torch.rsqrt(((xd - m_) ** 2).mean(dims, keepdim=True) + 1e-5)
    x_hat = (xd - m_) * inv_std
    dx, dw, db = NF.batch_norm_backward(dy, x_hat, inv_std, w.detach(), tuple(dims))
    assert_close(dx, dx_ref)
    assert_close(dw.reshape(-1), dw_ref)
    assert_close(db.reshape(-1), db_ref)
    # and the autograd.Function uses it
    xa, wa, ba = (t.detach().clone().requires_grad_(True) for t in (x, w, b))
    ya, mean_a, var_a = NF.BatchNormFunction.apply(xa, wa, ba, 1e-5)
    assert_close(ya, y)
    assert_close(mean_a.reshape(-1), mean.detach().reshape(-1))
    assert_close(var_a.reshape(-1), var.detach().reshape(-1))
    ya.backward(dy)
    assert_close(xa.grad, dx_ref)
    assert_close(wa.grad, dw_ref)
    assert_close(ba.grad, db_ref)


def test_gradcheck_layer_group_instance_rms():
    gen = make_gen(124)
    x = leaf((2, 4, 3), gen, 2.0, 1.0)
    w3, b3 = leaf((3,), gen, 0.3, 1.0), leaf((3,), gen)
    w43, b43 = leaf((4, 3), gen, 0.3, 1.0), leaf((4, 3), gen)
    w4, b4 = leaf((4,), gen, 0.3, 1.0), leaf((4,), gen)
    assert gradcheck(lambda x, w, b: NF.layer_norm(x, (3,), w, b), (x, w3, b3))
    assert gradcheck(lambda x, w, b: NF.layer_norm(x, (4, 3), w, b), (x, w43, b43))
    assert gradcheck(lambda x, w, b: NF.group_norm(x, 2, w, b), (x, w4, b4))
    assert gradcheck(lambda x: NF.group_norm(x, 4), (x,))
    assert gradcheck(lambda x, w, b: NF.instance_norm(x, weight=w, bias=b), (x, w4, b4))
    rm, rv = torch.zeros(4, dtype=torch.float64), torch.ones(4, dtype=torch.float64)
    assert gradcheck(lambda x: NF.instance_norm(x, rm.clone(), rv.clone(), use_input_stats=False), (x,))
    assert gradcheck(lambda x, w: NF.rms_norm(x, (3,), w), (x, w3))
    assert gradcheck(lambda x, w: NF.rms_norm(x, (4, 3), w, eps=1e-3), (x, w43))


MODULES = [
    ("BatchNorm1d", (3,), {}, (4, 3)),
    ("BatchNorm2d", (2,), {}, (2, 2, 2, 3)),
    ("BatchNorm3d", (2,), {"affine": False}, (2, 2, 2, 1, 2)),
    ("InstanceNorm1d", (2,), {"affine": True}, (2, 2, 4)),
    ("InstanceNorm2d", (2,), {"affine": True, "track_running_stats": True}, (2, 2, 2, 3)),
    ("InstanceNorm3d", (2,), {}, (2, 2, 2, 2, 2)),
    ("LayerNorm", ([2, 3],), {}, (3, 2, 3)),
    ("LayerNorm", (3,), {"bias": False}, (4, 3)),
    ("GroupNorm", (2, 4), {}, (2, 4, 3)),
    ("RMSNorm", (3,), {}, (4, 3)),
]


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("spec", MODULES, ids=[f"{m[0]}-{i}" for i, m in enumerate(MODULES)])
def test_gradcheck_modules(spec, training):
    name, args, kw, shape = spec
    gen = make_gen(125)
    m = getattr(normlib, name)(*args, **kw).double().train(training)
    with torch.no_grad():
        for p in m.parameters():
            p.copy_(torch.rand(p.shape, generator=gen, dtype=torch.float64) + 0.5)
    params = [p for p in m.parameters()]
    x = leaf(shape, gen, 2.0, 1.0)

    def f(x, *ps):
        # functional_call so gradcheck perturbs the parameters too
        return torch.func.functional_call(m, {n: p for (n, _), p in zip(m.named_parameters(), ps)}, (x,))

    assert gradcheck(f, (x, *params))


def test_gradcheck_weight_norm():
    torch.manual_seed(0)
    lin = normlib.weight_norm(torch.nn.Linear(3, 2).double())
    g = lin.parametrizations.weight.original0.detach().clone().requires_grad_(True)
    v = lin.parametrizations.weight.original1.detach().clone().requires_grad_(True)
    x = torch.randn(4, 3, dtype=torch.float64)

    def f(g, v):
        return torch.func.functional_call(
            lin, {"parametrizations.weight.original0": g, "parametrizations.weight.original1": v}, (x,)
        )

    assert gradcheck(f, (g, v))


def test_batchnorm_function_second_derivatives():
    """The closed-form backward is differentiable: gradgradcheck, and a gradient penalty
    (double backward) through BatchNorm2d in training equals torch's."""
    gen = make_gen(121)
    x, w, b = leaf((4, 3, 2), gen, scale=2.0, shift=1.0), leaf((3,), gen, shift=1.0), leaf((3,), gen)
    assert torch.autograd.gradgradcheck(lambda x, w, b: NF.BatchNormFunction.apply(x, w, b, 1e-5)[0], (x, w, b))

    def gradient_penalty_grad(module):
        inp = randn((4, 3, 2, 2), make_gen(122)).requires_grad_(True)
        (g,) = torch.autograd.grad((module(inp) ** 3).sum(), inp, create_graph=True)
        return torch.autograd.grad((g**2).sum(), [inp, module.weight])

    for ours, theirs in zip(
        gradient_penalty_grad(normlib.BatchNorm2d(3).double()), gradient_penalty_grad(torch.nn.BatchNorm2d(3).double())
    ):
        assert_close(ours, theirs)


def test_batchnorm_function_under_torch_func():
    """setup_context + a generated vmap rule: torch.func.vmap and torch.func.grad work."""
    xs = randn((5, 4, 3), make_gen(123))
    apply = lambda x: NF.BatchNormFunction.apply(x, None, None, 1e-5)[0]  # noqa: E731
    assert_close(torch.func.vmap(apply)(xs), torch.stack([apply(x) for x in xs]))
    cubic = lambda x: (apply(x) ** 3).sum()  # noqa: E731
    reference = xs[0].clone().requires_grad_(True)
    (torch.nn.functional.batch_norm(reference, None, None, training=True) ** 3).sum().backward()
    assert_close(torch.func.grad(cubic)(xs[0]), reference.grad)
