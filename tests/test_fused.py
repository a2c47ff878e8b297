"""The layers' fast path (the fused Function in normlib.functional) against the readable core.

In eager mode every layer runs `_normalize_layer`, which sends the supported cases through
`_NormalizeFunction` (fused forward, closed-form backward) and the others through `normalize`.
These tests pin down that both routes give the same numbers and gradients, which route each
case takes, that second derivatives and torch.func transforms still work, and the numerical
claims its comments make (two-pass variance; torch.var_mean is stable too).
"""

import pytest
import torch
from conftest import GRAD_TOL, TOL, assert_close, make_gen, randn
from torch.autograd import gradcheck, gradgradcheck

import normlib
from normlib import functional as NF

pytestmark = pytest.mark.usefixtures("eager_path")  # loops on and off (conftest)

# (shape, dims, weight shape (broadcast against the input), view kind)
CASES = [
    ((4, 3, 5), (2,), (5,), "per_element"),  # LayerNorm over the last axis, (N, T, D)
    ((4, 3, 5), (1, 2), (3, 5), "per_element"),  # LayerNorm over two axes
    ((3, 4, 2, 2), (0, 2, 3), (1, 4, 1, 1), "per_channel"),  # BatchNorm2d
    ((6, 4), (0,), (1, 4), "per_channel"),  # BatchNorm1d on (N, C)
    ((3, 4, 5), (2,), (1, 4, 1), "per_channel"),  # InstanceNorm1d
    ((3, 2, 3, 2, 2), (2, 3, 4), (1, 2, 3, 1, 1), "per_channel"),  # GroupNorm's grouped view
    ((3, 4, 5), (1, 2), None, "per_channel"),  # no affine
    ((3, 4, 5), (1,), (4, 1), None),  # a middle axis: not fused, normalize runs
    ((3, 4, 5), (2,), (3, 4, 5), None),  # gamma per element of the batch too: not fused
]


def _route(shape, dims, weight_shape):
    w = None if weight_shape is None else torch.ones(weight_shape)
    view = NF._fused_view(shape, NF._as_dims(dims, len(shape)), w, None)
    return None if view is None else ("per_element" if view.per_element else "per_channel")


@pytest.mark.parametrize("center", [True, False], ids=["center", "rms"])
@pytest.mark.parametrize("case", CASES, ids=[f"{c[0]}-{c[1]}-{c[3]}" for c in CASES])
def test_fused_layer_path_equals_normalize(case, center):
    shape, dims, weight_shape, route = case
    assert _route(shape, dims, weight_shape) == route
    gen = make_gen(700)
    x = randn(shape, gen)
    w = None if weight_shape is None else randn(weight_shape, gen, scale=0.3, shift=1.0)
    b = None if weight_shape is None or not center else randn(weight_shape, gen)
    leaves = [t.clone().requires_grad_(True) for t in (x, w, b) if t is not None]
    ref_leaves = [t.clone().requires_grad_(True) for t in (x, w, b) if t is not None]

    def unpack(ts):
        it = iter(ts)
        return next(it), (next(it) if w is not None else None), (next(it) if b is not None else None)

    xg, wg, bg = unpack(leaves)
    xr, wr, br = unpack(ref_leaves)
    y, mean, var = NF._normalize_layer(xg, dims, 1e-5, wg, bg, center=center)
    y_ref, mean_ref, var_ref = NF.normalize(xr, dims, 1e-5, weight=wr, bias=br, center=center)
    assert_close(y, y_ref, msg="output")
    assert_close(var, var_ref, msg="var")
    assert (mean is None) == (mean_ref is None) and mean_ref is None or mean.shape == mean_ref.shape
    if mean_ref is not None:
        assert_close(mean, mean_ref, msg="mean")
    dy = randn(shape, gen, scale=1.0, shift=0.0)
    grads = torch.autograd.grad(y, leaves, dy)
    grads_ref = torch.autograd.grad(y_ref, ref_leaves, dy)
    for name, g, r in zip(("x", "weight", "bias"), grads, grads_ref):
        assert_close(g, r, tol=GRAD_TOL[torch.float64], msg=f"grad of {name}")


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_fused_path_half_precision_is_computed_in_float32(dtype):
    gen = make_gen(701)
    x = randn((4, 6, 8), gen).to(dtype)
    w, b = randn((8,), gen).to(dtype), randn((8,), gen).to(dtype)
    y, mean, var = NF._normalize_layer(x, (2,), 1e-5, w, b)
    assert y.dtype == dtype and mean.dtype == var.dtype == torch.float32
    y32 = NF.normalize(x.float(), (2,), 1e-5, weight=w.float(), bias=b.float())[0]
    assert_close(y, y32.to(dtype), dtype=dtype)


def test_fused_backward_skips_gradients_nobody_asked_for():
    gen = make_gen(702)
    x = randn((3, 4, 5), gen).requires_grad_(True)
    w = randn((5,), gen)  # no requires_grad
    b = randn((5,), gen).requires_grad_(True)
    y = NF.layer_norm(x, (5,), w, b)
    gx, gb = torch.autograd.grad(y, (x, b), torch.ones_like(y))
    xr, br = x.detach().clone().requires_grad_(True), b.detach().clone().requires_grad_(True)
    yr = torch.nn.functional.layer_norm(xr, (5,), w, br)
    gxr, gbr = torch.autograd.grad(yr, (xr, br), torch.ones_like(yr))
    assert_close(gx, gxr)
    assert_close(gb, gbr)


def _backward_nodes(y, depth=3):
    """Names of the autograd nodes within `depth` steps of y."""
    names, frontier = set(), [y.grad_fn]
    for _ in range(depth):
        frontier = [f for f in frontier if f is not None]
        names |= {type(f).__name__ for f in frontier}
        frontier = [g for f in frontier for g, _ in f.next_functions]
    return names


@pytest.mark.parametrize("frozen", ["weight", "bias", "both"])
@pytest.mark.parametrize("name", ["BatchNorm2d", "LayerNorm", "GroupNorm", "InstanceNorm2d"])
def test_frozen_gamma_or_beta(name, frozen):
    """requires_grad_(False) on gamma and/or beta ("freezing"): the input still gets its gradient,
    the frozen parameter none, the other its own, all equal to torch's."""
    args = {"BatchNorm2d": (3,), "LayerNorm": ([3, 2, 2],), "GroupNorm": (1, 3), "InstanceNorm2d": (3,)}[name]
    kwargs = {"InstanceNorm2d": {"affine": True}}.get(name, {})
    gen = make_gen(707)
    ours = getattr(normlib, name)(*args, **kwargs).double()
    theirs = getattr(torch.nn, name)(*args, **kwargs).double()
    theirs.load_state_dict(ours.state_dict())
    for module in (ours, theirs):
        for pname in ("weight", "bias") if frozen == "both" else (frozen,):
            getattr(module, pname).requires_grad_(False)
    x = randn((4, 3, 2, 2), gen)
    dy = randn((4, 3, 2, 2), gen, scale=1.0, shift=0.0)
    results = []
    for module in (ours, theirs):
        xg = x.clone().requires_grad_(True)
        module(xg).backward(dy)
        results.append((xg.grad, module.weight.grad, module.bias.grad))
    for what, got, want in zip(("input", "weight", "bias"), *results):
        assert_close(got, want, tol=GRAD_TOL[torch.float64], msg=f"{name}, frozen {frozen}: grad of {what}")


def test_layers_take_the_fused_function_in_eager_mode_only():
    x = torch.randn(2, 3, 4, requires_grad=True)
    for layer in (normlib.LayerNorm(4), normlib.GroupNorm(1, 3), normlib.InstanceNorm1d(3), normlib.RMSNorm(4)):
        assert "_NormalizeFunctionBackward" in _backward_nodes(layer(x)), layer
    assert "BatchNormFunctionBackward" in _backward_nodes(normlib.BatchNorm1d(3)(x))
    # under torch.func the layers run the readable normalize (plain out-of-place ops)
    per_sample = torch.func.vmap(lambda row: normlib.functional.layer_norm(row, (4,)))(x.detach())
    assert_close(per_sample, torch.nn.functional.layer_norm(x.detach(), (4,)))


LAYERS = [
    (lambda x, w, b: NF.layer_norm(x, (3,), w, b), (3,)),
    (lambda x, w, b: NF.group_norm(x, 2, w, b), (4,)),
    (lambda x, w, b: NF.instance_norm(x, weight=w, bias=b), (4,)),
    (lambda x, w, b: NF.rms_norm(x, (3,), w) + 0 * b.sum(), (3,)),
]


@pytest.mark.parametrize("layer", range(len(LAYERS)), ids=["layer_norm", "group_norm", "instance_norm", "rms_norm"])
def test_fused_function_twice_differentiable(layer):
    fn, pshape = LAYERS[layer]
    gen = make_gen(703)
    x = randn((2, 4, 3), gen, scale=2.0, shift=1.0).requires_grad_(True)
    w = randn(pshape, gen, scale=0.3, shift=1.0).requires_grad_(True)
    b = randn(pshape, gen).requires_grad_(True)
    assert gradcheck(fn, (x, w, b))
    assert gradgradcheck(fn, (x, w, b))


def test_fused_function_under_torch_func_grad():
    gen = make_gen(704)
    xs = randn((3, 2, 4, 5), gen)
    w = randn((5,), gen, scale=0.3, shift=1.0)

    def loss(x):
        return (NF.layer_norm(x, (5,), w) ** 3).sum()

    reference = xs[0].clone().requires_grad_(True)
    (torch.nn.functional.layer_norm(reference, (5,), w) ** 3).sum().backward()
    assert_close(torch.func.grad(loss)(xs[0]), reference.grad)
    assert_close(torch.func.vmap(torch.func.grad(loss))(xs)[0], reference.grad)


def test_variance_is_two_pass_and_var_mean_is_stable_too():
    """The comment in the fused path: the variance is computed from x - mean (two passes),
    so a large mean does not cancel the digits; E[x^2] - E[x]^2 in float32 does, and
    torch.var_mean (Welford / two-pass inside PyTorch) does not."""
    gen = make_gen(705)
    x64 = torch.randn(8, 4096, generator=gen, dtype=torch.float64) + 1e4  # mean 1e4, variance 1
    x = x64.float()
    truth = x.double().var(dim=1, correction=0)
    one_pass = (x.square().mean(dim=1) - x.mean(dim=1).square()).double()
    fused_var = NF._normalize_layer(x, (1,), 1e-5)[2].flatten().double()
    var_mean = torch.var_mean(x, dim=1, correction=0)[0].double()
    assert (one_pass - truth).abs().max() > 0.5  # catastrophic: the error is as large as the variance
    assert_close(fused_var, truth, tol=(1e-5, 1e-5))
    assert_close(var_mean, truth, tol=(1e-5, 1e-5))


def test_eval_batch_norm_folds_into_one_scale_and_shift():
    gen = make_gen(706)
    x = randn((4, 3, 2, 2), gen)
    rm, rv = randn((3,), gen), randn((3,), gen, scale=0.2, shift=1.0)
    w, b = randn((3,), gen), randn((3,), gen)
    got = NF.batch_norm(x, rm, rv, w, b, training=False)
    shape = (1, 3, 1, 1)
    expected = (x - rm.view(shape)) / torch.sqrt(rv.view(shape) + 1e-5) * w.view(shape) + b.view(shape)
    assert_close(got, expected, tol=TOL[torch.float64])


@pytest.mark.parametrize(
    "make",
    [
        lambda: (torch.nn.GroupNorm(4, 8), normlib.GroupNorm(4, 8)),
        lambda: (torch.nn.LayerNorm(6), normlib.LayerNorm(6)),
    ],
    ids=["GroupNorm", "LayerNorm"],
)
@pytest.mark.parametrize("mean", [0.0, 1e2, 1e4])
def test_backward_with_a_large_mean_is_as_accurate_as_torch(make, mean):
    """Inputs far from 0 make float32 gradients lose digits (about u * |mean| / std where a
    formula multiplies x itself, as LayerNorm's backward does, like PyTorch's CPU kernel).
    Against a float64 truth, normlib's input gradient stays within 4x torch's own error (and a
    rounding floor), for inputs whose mean is 0, 100 and 10,000 standard deviations."""
    torch.manual_seed(0)
    ref, ours = make()
    x64 = torch.randn(3, 8, 5, 6, dtype=torch.float64) + mean
    if isinstance(ref, torch.nn.LayerNorm):
        x64 = x64.reshape(-1, 6)
    dy = torch.randn(x64.shape, dtype=torch.float64)
    truth = torch.autograd.grad(ref.double()(x64.requires_grad_(True)), x64, dy)[0]
    ref.float()
    grads = {}
    for name, layer in (("torch", ref), ("normlib", ours)):
        x = x64.detach().float().requires_grad_(True)
        grads[name] = torch.autograd.grad(layer(x), x, dy.float())[0].double()
    err = {k: float((g - truth).abs().max()) for k, g in grads.items()}
    floor = 1e-6 * float(truth.abs().max())
    assert err["normlib"] <= 4 * err["torch"] + floor, err
