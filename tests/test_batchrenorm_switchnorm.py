"""BatchRenorm1d/2d (Ioffe, 2017) and SwitchNorm1d/2d (Luo et al., 2018).

Neither has a torch.nn counterpart. Their references are torch's own layers where the new
layer reduces to one (BatchRenorm with r_max=1, d_max=0 is BatchNorm; SwitchNorm with one-hot
mixing weights is InstanceNorm, LayerNorm or BatchNorm), and otherwise the papers' formulas
written here in plain autograd (r and d detached; the three sets of statistics computed
directly over their axes, not from IN's as the layer does).
"""

import functools
import inspect
import sys

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as TF
from conftest import assert_close, check_steps, make_gen, module_pair, randn, skip_unsupported
from torch.autograd import gradcheck

import normlib
from normlib.batchrenorm import batch_renorm, renorm_correction
from normlib.switchnorm import switch_moments, switch_norm

FLOAT_DTYPES = [pytest.param(torch.float64, id="f64"), pytest.param(torch.float32, id="f32")]
SHAPES = [
    pytest.param(normlib.BatchRenorm1d, nn.BatchNorm1d, (6, 4), id="1d-NC"),
    pytest.param(normlib.BatchRenorm1d, nn.BatchNorm1d, (3, 4, 5), id="1d-NCL"),
    pytest.param(normlib.BatchRenorm2d, nn.BatchNorm2d, (3, 4, 3, 2), id="2d"),
]


def _steps(shape, gen, pattern=(True, True, False, True)):
    return [(training, randn(shape, gen)) for training in pattern]


def _same_running_stats(got, expected, msg):
    """running_mean, running_var and num_batches_tracked of two modules agree."""
    for name in ("running_mean", "running_var", "num_batches_tracked"):
        assert_close(getattr(got, name), getattr(expected, name), dtype=torch.float64, msg=f"{msg}: {name}")


def _set_running(module, gen, var_scale=1.0):
    with torch.no_grad():
        module.running_mean.copy_(torch.randn(module.running_mean.shape, generator=gen, dtype=torch.float64))
        module.running_var.copy_(torch.rand(module.running_var.shape, generator=gen, dtype=torch.float64) + 0.5)
        module.running_var.mul_(var_scale)
    return module


# --------------------------------------------------------------------------- BatchRenorm: reference


def brn_by_hand(x, weight, bias, running_mean, running_var, eps, r_max, d_max):
    """Ioffe's algorithm 1 in plain autograd: r and d detached, biased batch variance."""
    dims = (0,) + tuple(range(2, x.dim()))
    shape = (1, -1) + (1,) * (x.dim() - 2)
    mu = x.mean(dims, keepdim=True)
    sigma_b = torch.sqrt(x.var(dims, correction=0, keepdim=True) + eps)
    sigma = torch.sqrt(running_var.reshape(shape) + eps)
    r = (sigma_b / sigma).detach().clamp(1 / r_max, r_max)
    d = ((mu - running_mean.reshape(shape)) / sigma).detach().clamp(-d_max, d_max)
    x_hat = (x - mu) / sigma_b * r + d
    return x_hat * weight.reshape(shape) + bias.reshape(shape)


# --------------------------------------------------------------------------- BatchRenorm: tests


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("momentum", [0.1, None], ids=["momentum", "cumulative"])
@pytest.mark.parametrize("cls,ref_cls,shape", SHAPES)
def test_brn_with_r_max_1_d_max_0_is_batchnorm(cls, ref_cls, shape, momentum, dtype, device):
    """Outputs, input and parameter gradients, buffers after every step, train and eval."""
    skip_unsupported(device, dtype)
    gen = make_gen(901)
    got, ref = module_pair(
        functools.partial(cls, r_max=1.0, d_max=0.0), ref_cls, (shape[1],), {"momentum": momentum}, dtype, device, gen
    )
    check_steps(got, ref, _steps(shape, gen), dtype, gen, msg=f"{cls.__name__}(r_max=1, d_max=0)", device=device)


@pytest.mark.parametrize("cls,ref_cls,shape", SHAPES)
def test_brn_unclipped_training_output_is_the_eval_output_before_the_step(cls, ref_cls, shape):
    """The point of batch renormalization: with r, d unclipped, training = inference."""
    gen = make_gen(902)
    brn = _set_running(cls(shape[1], r_max=1e6, d_max=1e6).double(), gen)
    bn = ref_cls(shape[1]).double()
    bn.load_state_dict(brn.state_dict())
    x = randn(shape, gen)
    brn.eval()
    expected = brn(x)
    brn.train()
    y = brn(x)
    assert_close(y, expected, msg="training output vs eval output before the step")
    # ... and BatchNorm's own training output is not (the test would see a difference)
    assert not torch.allclose(bn.train()(x), expected, atol=1e-3)
    # the running statistics then move exactly as BatchNorm's
    _same_running_stats(brn, bn, "after the step")
    # so eval() AFTER the step (moved running statistics) no longer gives the training output
    moved = (brn.eval()(x) - y).abs().max().item()
    assert moved > 1e-2, moved
    # and the docstrings say which running statistics the equality holds for
    for doc in (normlib.BatchRenorm1d.__doc__, sys.modules[cls.__module__].__doc__):
        assert "before this step's update" in " ".join(doc.split())


@pytest.mark.parametrize("r_max,d_max", [(1e6, 1e6), (1.5, 0.5), (1.0, 0.0)], ids=["unclipped", "clipped", "bn"])
@pytest.mark.parametrize("cls,ref_cls,shape", SHAPES)
def test_brn_gradients_treat_r_and_d_as_constants(cls, ref_cls, shape, r_max, d_max):
    gen = make_gen(903)
    brn = _set_running(cls(shape[1], r_max=r_max, d_max=d_max).double(), gen, var_scale=2.0)
    with torch.no_grad():
        brn.weight.uniform_(0.5, 1.5, generator=gen)
        brn.bias.uniform_(-1, 1, generator=gen)
    running = (brn.running_mean.clone(), brn.running_var.clone())
    x = randn(shape, gen).requires_grad_(True)
    xr = x.detach().clone().requires_grad_(True)
    w, b = (p.detach().clone().requires_grad_(True) for p in (brn.weight, brn.bias))
    dy = torch.randn(shape, generator=gen, dtype=torch.float64)

    y = brn(x)
    y.backward(dy)
    yr = brn_by_hand(xr, w, b, *running, brn.eps, r_max, d_max)
    yr.backward(dy)
    assert_close(y, yr, msg="output")
    assert_close(x.grad, xr.grad, msg="input gradient", tol=(1e-9, 1e-9))
    assert_close(brn.weight.grad, w.grad, msg="gamma gradient", tol=(1e-9, 1e-9))
    assert_close(brn.bias.grad, b.grad, msg="beta gradient", tol=(1e-9, 1e-9))
    if r_max > 100:
        # Differentiating through r and d would give the gradient of the eval output instead,
        # gamma / sigma * dy: a different number, so the comparison above can fail.
        sigma = torch.sqrt(running[1] + brn.eps).reshape((1, -1) + (1,) * (len(shape) - 2))
        assert not torch.allclose(x.grad, dy * w.detach().reshape(sigma.shape) / sigma, atol=1e-3)


def test_brn_clips_r_and_d():
    """Running statistics far from the batch's: r hits r_max, d hits -d_max."""
    gen = make_gen(904)
    brn = normlib.BatchRenorm2d(3).double()  # r_max=3, d_max=5: the paper's final values
    with torch.no_grad():
        brn.running_var.fill_(0.01)  # sigma ~ 0.1, sigma_B ~ 3: sigma_B / sigma ~ 30 > r_max
        brn.running_mean.fill_(100.0)  # (mu_B - 100) / 0.1 ~ -980 < -d_max
    x = randn((4, 3, 3, 3), gen)
    dims = (0, 2, 3)
    mean, var = x.mean(dims, keepdim=True), x.var(dims, correction=0, keepdim=True)
    r, d = renorm_correction(
        mean, var, brn.running_mean.reshape(1, 3, 1, 1), brn.running_var.reshape(1, 3, 1, 1), 1e-5, 3.0, 5.0
    )
    assert torch.equal(r, torch.full_like(r, 3.0)) and torch.equal(d, torch.full_like(d, -5.0))
    expected = (x - mean) / torch.sqrt(var + 1e-5) * 3.0 - 5.0
    assert_close(brn(x), expected, msg="clipped output")
    # r below 1 / r_max clips there, and the limits are read at every call (a training loop ramps them)
    brn.running_var.fill_(1e4)
    brn.r_max, brn.d_max = 2.0, 0.0
    mean, var = x.mean(dims, keepdim=True), x.var(dims, correction=0, keepdim=True)
    assert_close(brn(x), (x - mean) / torch.sqrt(var + 1e-5) * 0.5, msg="r = 1 / r_max")


def test_brn_functional_and_errors():
    gen = make_gen(905)
    x = randn((4, 3, 2), gen)
    rm, rv = torch.zeros(3, dtype=torch.float64), torch.ones(3, dtype=torch.float64)
    assert_close(batch_renorm(x, rm, rv), TF.batch_norm(x, rm, rv), msg="eval is batch_norm's")
    with pytest.raises(RuntimeError, match="running_mean"):
        batch_renorm(x, None, None, training=True)
    with pytest.raises(ValueError, match="r_max >= 1"):
        batch_renorm(x, rm, rv, training=True, r_max=0.5)
    with pytest.raises(ValueError, match="d_max >= 0"):
        batch_renorm(x, rm, rv, training=True, d_max=-1.0)

    brn1, brn2 = normlib.BatchRenorm1d(3), normlib.BatchRenorm2d(3)
    for layer, bad in ((brn1, torch.randn(2, 3, 2, 2)), (brn1, torch.randn(3)), (brn2, torch.randn(2, 3, 4))):
        with pytest.raises(ValueError, match=r"expected .*D input \(got \dD input\)"):
            layer(bad)
    # one value per channel: torch's BatchNorm error, and nothing counted
    for layer, one in ((brn1, torch.randn(1, 3)), (brn2, torch.randn(1, 3, 1, 1))):
        with pytest.raises(ValueError, match="Expected more than 1 value per channel when training"):
            layer(one)
        assert int(layer.num_batches_tracked) == 0
        layer.eval()(one)  # running statistics: fine in eval
    with pytest.raises(RuntimeError, match="should contain 4 elements not 3"):
        normlib.BatchRenorm2d(3)(torch.randn(2, 4, 2, 2))


def test_brn_state_dict_round_trip_and_torch_checkpoint():
    gen = make_gen(906)
    bn = nn.BatchNorm2d(3).double()
    for _ in range(3):
        bn(randn((4, 3, 2, 2), gen))
    brn = normlib.BatchRenorm2d(3).double()
    brn.load_state_dict(bn.state_dict())  # strict: torch's BatchNorm2d keys
    assert list(brn.state_dict()) == ["weight", "bias", "running_mean", "running_var", "num_batches_tracked"]
    assert int(brn.num_batches_tracked) == 3
    x = randn((2, 3, 2, 2), gen)
    assert_close(brn.eval()(x), bn.eval()(x), msg="eval output after loading a torch checkpoint")

    brn.train()(randn((4, 3, 2, 2), gen))
    copy = normlib.BatchRenorm2d(3, r_max=2.0).double()
    copy.load_state_dict(brn.state_dict())
    for k, v in brn.state_dict().items():
        assert torch.equal(copy.state_dict()[k], v), k
    assert copy.r_max == 2.0  # a hyperparameter, not state


def test_brn_repr_attributes_and_signature():
    brn = normlib.BatchRenorm2d(4, momentum=None, r_max=2.0, d_max=1.0)
    assert repr(brn) == "BatchRenorm2d(4, eps=1e-05, momentum=None, r_max=2.0, d_max=1.0, affine=True)"
    assert brn.track_running_stats is True
    assert normlib.BatchRenorm1d(4, affine=False).weight is None
    for cls in (normlib.BatchRenorm1d, normlib.BatchRenorm2d):
        params = inspect.signature(cls.__init__).parameters
        assert list(params)[1:] == ["num_features", "eps", "momentum", "r_max", "d_max", "affine", "device", "dtype"]
        assert [params[p].default for p in ("eps", "momentum", "r_max", "d_max", "affine")] == [
            1e-5,
            0.1,
            3.0,
            5.0,
            True,
        ]


# --------------------------------------------------------------------------- half precision


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["f16", "bf16"])
@pytest.mark.parametrize("cls", [normlib.BatchRenorm2d, normlib.SwitchNorm2d])
def test_half_inputs_are_computed_in_float32(cls, dtype):
    """Statistics, r and d and the mixture in float32, rounded once: the float32 result, cast."""
    gen = make_gen(907)
    kwargs = {"r_max": 1.5, "d_max": 0.5} if cls is normlib.BatchRenorm2d else {}
    m = _set_running(cls(3, **kwargs), gen)
    m32 = cls(3, **kwargs)
    m32.load_state_dict(m.state_dict())
    x = randn((4, 3, 3, 3), gen, dtype=dtype, shift=20.0)  # large mean: half accumulation would show
    for training in (True, False):
        y = m.train(training)(x)
        assert y.dtype == dtype
        tol = (torch.finfo(dtype).eps * 4, torch.finfo(dtype).eps)
        assert_close(y, m32.train(training)(x.float()).to(dtype), dtype=dtype, tol=tol, msg=f"training={training}")


# --------------------------------------------------------------------------- SwitchNorm: reference


def direct_moments(x):
    """IN's, LN's and BN's (mean, biased var), each over its own axes (not combined from IN's)."""
    spatial = tuple(range(2, x.dim()))
    out = []
    for dims in (spatial, (1,) + spatial, (0,) + spatial):
        if not dims:  # (N, C): IN's statistics of one value
            out.append((x, torch.zeros_like(x)))
        else:
            out.append((x.mean(dims, keepdim=True), x.var(dims, correction=0, keepdim=True)))
    return out


ONE_HOT = {"in": [1.0, 0.0, 0.0], "ln": [0.0, 1.0, 0.0], "bn": [0.0, 0.0, 1.0]}


def torch_reference(kind, x, weight, bias, running_mean, running_var, training, eps=1e-5):
    """torch's layer for a one-hot switch. LayerNorm over (C, *) with per-channel gamma/beta is
    GroupNorm(1, C); on (N, C) it is F.layer_norm over C."""
    if kind == "in":
        return TF.instance_norm(x, weight=weight, bias=bias, eps=eps)
    if kind == "ln":
        if x.dim() == 2:
            return TF.layer_norm(x, (x.shape[1],), weight, bias, eps)
        return TF.group_norm(x, 1, weight, bias, eps)
    return TF.batch_norm(x, running_mean, running_var, weight, bias, training, 0.1, eps)


# --------------------------------------------------------------------------- SwitchNorm: tests


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("shape", [(4, 3, 5), (3, 4, 3, 2), (5, 3)], ids=["NCL", "NCHW", "NC"])
@pytest.mark.parametrize("kind", ["in", "ln", "bn"])
def test_switch_norm_with_exact_one_hot_weights_is_in_ln_bn(kind, shape, dtype, device):
    """switch_norm with weights [1, 0, 0] (...) against torch's functional layers, train and eval:
    outputs, input and gamma/beta gradients, and BN's running statistics."""
    skip_unsupported(device, dtype)
    if kind == "in" and len(shape) == 2:
        pytest.skip("InstanceNorm is undefined on (N, C) input")
    gen = make_gen(910)
    C = shape[1]
    w = (torch.rand(C, generator=gen, dtype=torch.float64) + 0.5).to(device, dtype)
    b = torch.randn(C, generator=gen, dtype=torch.float64).to(device, dtype)
    mix = torch.tensor(ONE_HOT[kind], dtype=dtype, device=device)
    ours = [torch.zeros(C, dtype=dtype, device=device), torch.ones(C, dtype=dtype, device=device)]
    theirs = [t.clone() for t in ours]
    for training in (True, True, False):
        x = randn(shape, gen, dtype=dtype, device=device)
        dy = torch.randn(shape, generator=gen, dtype=torch.float64).to(device, dtype)
        args = [t.detach().clone().requires_grad_(True) for t in (x, w, b)]
        ref_args = [t.detach().clone().requires_grad_(True) for t in (x, w, b)]
        y = switch_norm(args[0], mix, mix, *ours, args[1], args[2], training=training)
        yr = torch_reference(kind, ref_args[0], ref_args[1], ref_args[2], *theirs, training)
        where = f"{kind} {shape} training={training}"
        assert_close(y, yr, dtype=dtype, msg=f"{where}: output")
        y.backward(dy)
        yr.backward(dy)
        for name, a, r in zip(("input", "gamma", "beta"), args, ref_args):
            assert_close(
                a.grad,
                r.grad,
                dtype=dtype,
                tol=(1e-4, 1e-4) if dtype == torch.float32 else None,
                scale_atol=True,
                msg=f"{where}: grad of {name}",
            )
        if kind != "bn":  # BN's running statistics update whatever the weights: against torch's BN
            TF.batch_norm(x, theirs[0], theirs[1], training=training)
        for a, r, name in zip(ours, theirs, ("running_mean", "running_var")):
            assert_close(a, r, dtype=dtype, msg=f"{where}: {name}")


@pytest.mark.parametrize(
    "cls,ref,shape",
    [
        (normlib.SwitchNorm2d, {"in": nn.InstanceNorm2d, "ln": nn.GroupNorm, "bn": nn.BatchNorm2d}, (3, 4, 3, 2)),
        (normlib.SwitchNorm1d, {"in": nn.InstanceNorm1d, "ln": nn.GroupNorm, "bn": nn.BatchNorm1d}, (4, 3, 5)),
        (normlib.SwitchNorm1d, {"ln": nn.LayerNorm, "bn": nn.BatchNorm1d}, (5, 3)),
    ],
    ids=["2d", "1d-NCL", "1d-NC"],
)
def test_switchnorm_with_one_hot_logits_matches_torch_layers(cls, ref, shape):
    """Logits (100, 0, 0): the other two weights are e^-100 / (1 + 2 e^-100) < 4e-44, so they
    move the mean and variance by less than 1e-43 times the statistics' size, far below float64's
    output tolerance (1e-10): the layers' outputs, gradients and buffers must match torch's."""
    gen = make_gen(911)
    C = shape[1]
    for position, kind in enumerate(("in", "ln", "bn")):
        if kind not in ref:
            continue
        sn = cls(C).double()
        if kind == "in":
            layer = ref[kind](C, affine=True)
        elif kind == "ln":
            layer = ref[kind](1, C) if ref[kind] is nn.GroupNorm else ref[kind](C)
        else:
            layer = ref[kind](C)
        layer = layer.double()
        bn = nn.BatchNorm1d(C).double() if len(shape) < 4 else nn.BatchNorm2d(C).double()  # the running stats
        with torch.no_grad():
            logits = torch.zeros(3, dtype=torch.float64)
            logits[position] = 100.0
            sn.mean_weight.copy_(logits)
            sn.var_weight.copy_(logits)
            sn.weight.uniform_(0.5, 1.5, generator=gen)
            sn.bias.uniform_(-1, 1, generator=gen)
            layer.weight.copy_(sn.weight)
            layer.bias.copy_(sn.bias)
        for training in (True, True, False, True, False):
            sn.train(training)
            layer.train(training)
            bn.train(training)
            x = randn(shape, gen)
            xs, xr = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
            dy = torch.randn(shape, generator=gen, dtype=torch.float64)
            y, yr = sn(xs), layer(xr)
            bn(x)
            where = f"{cls.__name__} one-hot {kind}, training={training}"
            assert_close(y, yr, msg=f"{where}: output")
            y.backward(dy)
            yr.backward(dy)
            assert_close(xs.grad, xr.grad, msg=f"{where}: input grad", scale_atol=True)
            assert_close(sn.weight.grad, layer.weight.grad, msg=f"{where}: gamma grad", scale_atol=True)
            assert_close(sn.bias.grad, layer.bias.grad, msg=f"{where}: beta grad", scale_atol=True)
            sn.zero_grad()
            layer.zero_grad()
            _same_running_stats(sn, bn, where)


@pytest.mark.parametrize("shape", [(3, 4, 5), (2, 3, 3, 4), (6, 3)], ids=["NCL", "NCHW", "NC"])
def test_switch_moments_are_the_direct_statistics(shape):
    gen = make_gen(912)
    x = randn(shape, gen)
    for name, got, expected in zip(("in", "ln", "bn"), switch_moments(x), direct_moments(x)):
        for stat, a, b in zip(("mean", "var"), got, expected):
            assert a.shape == b.shape, f"{name} {stat}: shape {tuple(a.shape)} vs {tuple(b.shape)}"
            assert_close(a, b, msg=f"{name} {stat}")


def test_switch_moments_avoid_cancellation():
    """Data far from 0 with a small spread, in float32: the combination formula keeps LN's and
    BN's variances to float32's accuracy where E[x^2] - E[x]^2 (the authors' form) loses them."""
    gen = make_gen(913)
    x64 = torch.randn(8, 4, 6, 6, generator=gen, dtype=torch.float64) * 0.1 + 1000.0
    x = x64.float()
    truth = direct_moments(x.double())
    (mean_in, var_in), (_, var_ln), (_, var_bn) = switch_moments(x)
    for name, got, true in (("ln", var_ln, truth[1][1]), ("bn", var_bn, truth[2][1])):
        assert_close(got, true, tol=(1e-6, 1e-4), msg=f"{name} var")
    naive = (var_in + mean_in.square()).mean(1, keepdim=True) - mean_in.mean(1, keepdim=True).square()
    assert (naive - truth[1][1]).abs().max() > 1e-3  # the test would notice the naive form


@pytest.mark.parametrize("cls,shape", [(normlib.SwitchNorm2d, (2, 3, 3, 2)), (normlib.SwitchNorm1d, (3, 2, 4))])
def test_switchnorm_mixture_matches_the_formula_in_train_and_eval(cls, shape):
    """Random logits: y = gamma (x - sum w_k mu_k) / sqrt(sum v_k var_k + eps) + beta, with BN's
    statistics the batch's in training and the running ones in eval; running stats as BN's."""
    gen = make_gen(914)
    C = shape[1]
    sn = _set_running(cls(C, momentum=None).double(), gen)
    bn = nn.BatchNorm2d(C, momentum=None).double() if len(shape) == 4 else nn.BatchNorm1d(C, momentum=None).double()
    bn.load_state_dict({k: v for k, v in sn.state_dict().items() if k not in ("mean_weight", "var_weight")})
    with torch.no_grad():
        sn.mean_weight.normal_(generator=gen)
        sn.var_weight.normal_(generator=gen)
        sn.weight.uniform_(0.5, 1.5, generator=gen)
        sn.bias.uniform_(-1, 1, generator=gen)
    wm, wv = torch.softmax(sn.mean_weight.detach(), 0), torch.softmax(sn.var_weight.detach(), 0)
    cshape = (1, C) + (1,) * (len(shape) - 2)
    for training in (True, False, True, True, False):
        x = randn(shape, gen)
        stats = direct_moments(x)
        if not training:
            stats[2] = (sn.running_mean.reshape(cshape).clone(), sn.running_var.reshape(cshape).clone())
        mean = sum(wm[k] * stats[k][0] for k in range(3))
        var = sum(wv[k] * stats[k][1] for k in range(3))
        expected = (x - mean) / torch.sqrt(var + sn.eps) * sn.weight.reshape(cshape) + sn.bias.reshape(cshape)
        assert_close(sn.train(training)(x), expected, msg=f"training={training}")
        bn.train(training)(x)
        _same_running_stats(sn, bn, f"training={training}")


def test_switch_norm_gradcheck_reaches_the_mixing_logits():
    gen = make_gen(915)
    x = randn((3, 2, 3), gen).requires_grad_(True)
    logits_m = torch.randn(3, generator=gen, dtype=torch.float64, requires_grad=True)
    logits_v = torch.randn(3, generator=gen, dtype=torch.float64, requires_grad=True)
    w = (torch.rand(2, generator=gen, dtype=torch.float64) + 0.5).requires_grad_(True)
    b = torch.randn(2, generator=gen, dtype=torch.float64, requires_grad=True)

    def f(x, lm, lv, w, b):
        return switch_norm(x, torch.softmax(lm, 0), torch.softmax(lv, 0), None, None, w, b, training=True)

    assert gradcheck(f, (x, logits_m, logits_v, w, b))
    # the module: the logits are parameters that get gradients
    sn = normlib.SwitchNorm2d(3).double()
    (sn(randn((2, 3, 2, 2), gen)) * randn((2, 3, 2, 2), gen)).sum().backward()
    for p in (sn.mean_weight, sn.var_weight):
        assert p.grad is not None and p.grad.abs().max() > 0


def test_switchnorm1d_on_nc_drops_instance_norm():
    gen = make_gen(916)
    sn = normlib.SwitchNorm1d(4).double()
    x = randn((5, 4), gen)
    wm, wv = sn.mixing_weights(2)
    assert wm.tolist() == [0.0, 0.5, 0.5] and wv.tolist() == [0.0, 0.5, 0.5]
    stats = direct_moments(x)
    mean = 0.5 * stats[1][0] + 0.5 * stats[2][0]
    var = 0.5 * stats[1][1] + 0.5 * stats[2][1]
    y = sn(x)
    assert_close(y, (x - mean) / torch.sqrt(var + 1e-5), msg="LN + BN mixture")
    (y * randn((5, 4), gen)).sum().backward()
    assert sn.mean_weight.grad[0] == 0 and sn.var_weight.grad[0] == 0
    assert sn.mean_weight.grad[1:].abs().max() > 0
    # on (N, C, L) the three weights are 1/3
    assert torch.allclose(sn.mixing_weights(3)[0], torch.full((3,), 1 / 3, dtype=torch.float64))


def test_switchnorm_state_track_running_stats_and_repr():
    sn = normlib.SwitchNorm2d(3)
    assert list(sn.state_dict()) == [
        "weight",
        "bias",
        "mean_weight",
        "var_weight",
        "running_mean",
        "running_var",
        "num_batches_tracked",
    ]
    assert torch.equal(sn.mean_weight, torch.ones(3)) and torch.equal(sn.var_weight, torch.ones(3))
    assert repr(sn) == "SwitchNorm2d(3, eps=1e-05, momentum=0.1, affine=True, track_running_stats=True)"
    gen = make_gen(917)
    sn(randn((2, 3, 2, 2), gen, dtype=torch.float32))
    copy = normlib.SwitchNorm2d(3)
    copy.load_state_dict(sn.state_dict())
    for k, v in sn.state_dict().items():
        assert torch.equal(copy.state_dict()[k], v), k
    # no running statistics: the batch's in eval too
    free = normlib.SwitchNorm1d(3, affine=False, track_running_stats=False).double()
    assert list(free.state_dict()) == ["mean_weight", "var_weight"]
    x = randn((4, 3, 5), gen)
    assert_close(free.eval()(x), free.train()(x), msg="eval without running stats")
    sn.reset_parameters()
    assert int(sn.num_batches_tracked) == 0 and torch.equal(sn.mean_weight, torch.ones(3))


def test_switchnorm_errors():
    sn1, sn2 = normlib.SwitchNorm1d(3), normlib.SwitchNorm2d(3)
    for layer, bad in ((sn1, torch.randn(2, 3, 2, 2)), (sn1, torch.randn(3)), (sn2, torch.randn(2, 3, 4))):
        with pytest.raises(ValueError, match=r"expected .*D input \(got \dD input\)"):
            layer(bad)
    for layer, one in ((sn1, torch.randn(1, 3)), (sn2, torch.randn(1, 3, 1, 1))):
        with pytest.raises(ValueError, match="Expected more than 1 value per channel when training"):
            layer(one)
        assert int(layer.num_batches_tracked) == 0
        layer.eval()(one)  # BN's part from the running statistics: fine
    with pytest.raises(ValueError, match="Expected more than 1 value per channel"):
        normlib.SwitchNorm2d(3, track_running_stats=False).eval()(torch.randn(1, 3, 1, 1))
    with pytest.raises(RuntimeError, match="should contain 4 elements not 3"):
        sn2.train()(torch.randn(2, 4, 2, 2))
    x = torch.randn(2, 3, 4)
    with pytest.raises(ValueError, match="3 weights"):
        switch_norm(x, torch.ones(2) / 2, torch.ones(3) / 3, training=True)
    with pytest.raises(RuntimeError, match="running_mean and running_var must be defined"):
        switch_norm(x, torch.ones(3) / 3, torch.ones(3) / 3, training=False)


def test_switchnorm_signatures():
    for cls in (normlib.SwitchNorm1d, normlib.SwitchNorm2d):
        params = inspect.signature(cls.__init__).parameters
        assert list(params)[1:] == [
            "num_features",
            "eps",
            "momentum",
            "affine",
            "track_running_stats",
            "device",
            "dtype",
        ]
    m = normlib.SwitchNorm2d(2, dtype=torch.float64)
    assert all(p.dtype == torch.float64 for p in m.parameters())
