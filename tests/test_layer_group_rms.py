"""LayerNorm, GroupNorm, RMSNorm modules: parity with torch.nn."""

import pytest
import torch
import torch.nn as nn
from conftest import (
    LAYOUTS,
    PARITY_DTYPES,
    assert_close,
    check_steps,
    make_gen,
    module_pair,
    randint,
    randn,
    randomize_params,
    skip_unsupported,
)

import normlib


def pair(cls_name, args, kwargs, dtype, device, gen):
    return module_pair(getattr(normlib, cls_name), getattr(nn, cls_name), args, kwargs, dtype, device, gen)


def steps_for(shape_fn, gen, n=3):
    # LN/GN/RMS behave the same in train and eval: run both. Inputs on the CPU (check_steps moves them).
    return [(t, randn(shape_fn(), gen)) for t in [True, False, True][:n]]


# --------------------------------------------------------------------------- LayerNorm

LN_CONFIGS = [
    pytest.param({}, id="default"),
    pytest.param({"bias": False}, id="no_bias"),
    pytest.param({"elementwise_affine": False}, id="no_affine"),
    pytest.param({"eps": 1e-2}, id="eps"),
]


@pytest.mark.parametrize("config", LN_CONFIGS)
@pytest.mark.parametrize("dtype", PARITY_DTYPES)
@pytest.mark.parametrize("k", [1, 2, 3], ids=lambda k: f"{k}dims")
def test_layernorm_parity(k, dtype, config, device):
    skip_unsupported(device, dtype)
    gen = make_gen(40 + k)
    for _ in range(3):
        ns = tuple(randint(2, 5, gen) for _ in range(k))
        lead = tuple(randint(1, 4, gen) for _ in range(randint(0, 2, gen)))
        arg = ns[0] if (k == 1 and randint(0, 1, gen)) else list(ns)  # int or list spelling
        got, ref = pair("LayerNorm", (arg,), config, dtype, device, gen)
        assert got.normalized_shape == ref.normalized_shape
        check_steps(
            got, ref, steps_for(lambda: lead + ns, gen), dtype, gen, msg=f"LayerNorm{ns}{config}", device=device
        )


@pytest.mark.parametrize("layout", [l for l in LAYOUTS if l != "contiguous"])
def test_layernorm_layouts(layout, device):
    gen = make_gen(44)
    got, ref = pair("LayerNorm", ([4, 5],), {}, torch.float32, device, gen)
    check_steps(got, ref, steps_for(lambda: (2, 3, 4, 5), gen, 2), torch.float32, gen, layout=layout, device=device)


def test_layernorm_parameters_have_normalized_shape():
    for cfg, names in (({}, ["weight", "bias"]), ({"bias": False}, ["weight"]), ({"elementwise_affine": False}, [])):
        got, ref = normlib.LayerNorm([3, 4], **cfg), nn.LayerNorm([3, 4], **cfg)
        assert [n for n, _ in got.named_parameters()] == names == [n for n, _ in ref.named_parameters()]
        assert list(got.state_dict()) == list(ref.state_dict())
        for n, p in got.named_parameters():
            assert p.shape == (3, 4)
    ln = normlib.LayerNorm([3, 4], bias=False)
    assert ln.bias is None
    ln = normlib.LayerNorm(4, elementwise_affine=False)
    assert ln.weight is None and ln.bias is None
    # normalizes the LAST dims: per-(sample, row) statistics for (N, T, D) with LN(D)
    x = torch.randn(2, 3, 4, dtype=torch.float64) * 3 + 1
    y = normlib.LayerNorm(4).double()(x)
    assert_close(y.mean(-1), torch.zeros(2, 3, dtype=torch.float64), tol=(1e-12, 0))
    assert_close(y.var(-1, correction=0), torch.full((2, 3), 1.0, dtype=torch.float64), tol=(1e-4, 0))


# --------------------------------------------------------------------------- GroupNorm


@pytest.mark.parametrize("affine", [True, False], ids=["affine", "no_affine"])
@pytest.mark.parametrize("dtype", PARITY_DTYPES)
@pytest.mark.parametrize("spatial", [0, 1, 2, 3])
def test_groupnorm_parity(spatial, dtype, affine, device):
    skip_unsupported(device, dtype)
    gen = make_gen(50 + spatial)
    for _ in range(3):
        G = randint(1, 4, gen)
        C = G * randint(1, 3, gen)
        sp = tuple(randint(1, 4, gen) for _ in range(spatial))
        if C == G and all(s == 1 for s in sp):
            C = 2 * G  # one value per group is degenerate (torch even raises for N=1)
        got, ref = pair("GroupNorm", (G, C), {"affine": affine}, dtype, device, gen)
        check_steps(
            got,
            ref,
            steps_for(lambda: (randint(1, 4, gen), C) + sp, gen),
            dtype,
            gen,
            msg=f"GroupNorm({G},{C}) sp={sp}",
            device=device,
        )


@pytest.mark.parametrize("layout", [l for l in LAYOUTS if l != "contiguous"])
@pytest.mark.parametrize("spatial", [2, 3])
def test_groupnorm_layouts(spatial, layout, device):
    gen = make_gen(55)
    got, ref = pair("GroupNorm", (2, 6), {}, torch.float32, device, gen)
    check_steps(
        got, ref, steps_for(lambda: (3, 6) + (3,) * spatial, gen, 2), torch.float32, gen, layout=layout, device=device
    )


def test_groupnorm_groups_are_consecutive_channels():
    # Channels 0,1 have scale ~1 and mean 0; channels 2,3 scale 100, mean 50. With
    # consecutive groups (0,1),(2,3) each group is homogeneous; strided groups (0,2),(1,3)
    # would mix them and give a clearly different output.
    gen = make_gen(56)
    x = torch.randn(3, 4, 5, 5, generator=gen, dtype=torch.float64)
    x[:, 2:] = x[:, 2:] * 100 + 50
    got = normlib.GroupNorm(2, 4).double()(x)
    ref = nn.GroupNorm(2, 4).double()(x)
    assert_close(got, ref)
    for g, chans in enumerate(([0, 1], [2, 3])):
        xs = x[:, chans]
        m = xs.mean((1, 2, 3), keepdim=True)
        v = xs.var((1, 2, 3), correction=0, keepdim=True)
        assert_close(got[:, chans], (xs - m) / torch.sqrt(v + 1e-5))
    strided = torch.empty_like(x)
    for chans in ([0, 2], [1, 3]):
        xs = x[:, chans]
        m = xs.mean((1, 2, 3), keepdim=True)
        v = xs.var((1, 2, 3), correction=0, keepdim=True)
        strided[:, chans] = (xs - m) / torch.sqrt(v + 1e-5)
    assert not torch.allclose(got, strided, atol=1e-3)


def test_groupnorm_special_cases_equal_layernorm_and_instancenorm():
    gen = make_gen(57)
    x = randn((3, 6, 4, 4), gen)
    assert_close(
        normlib.GroupNorm(1, 6, affine=False).double()(x), nn.LayerNorm([6, 4, 4], elementwise_affine=False).double()(x)
    )
    assert_close(normlib.GroupNorm(6, 6, affine=False).double()(x), nn.InstanceNorm2d(6).double()(x))


def test_groupnorm_affine_is_per_channel():
    got, ref = normlib.GroupNorm(3, 6), nn.GroupNorm(3, 6)
    assert got.weight.shape == ref.weight.shape == (6,)
    assert list(got.state_dict()) == list(ref.state_dict())
    assert list(normlib.GroupNorm(3, 6, affine=False).state_dict()) == []
    assert (got.num_groups, got.num_channels, got.eps, got.affine) == (3, 6, 1e-5, True)


# --------------------------------------------------------------------------- RMSNorm

RMS_CONFIGS = [
    pytest.param({}, id="eps_None"),
    pytest.param({"eps": 1e-3}, id="eps_1e-3"),
    pytest.param({"elementwise_affine": False}, id="no_affine"),
]


@pytest.mark.parametrize("config", RMS_CONFIGS)
@pytest.mark.parametrize("dtype", PARITY_DTYPES)
@pytest.mark.parametrize("k", [1, 2])
def test_rmsnorm_parity(k, dtype, config, device):
    skip_unsupported(device, dtype)
    gen = make_gen(60 + k)
    for _ in range(3):
        ns = tuple(randint(1, 5, gen) for _ in range(k))
        lead = tuple(randint(1, 4, gen) for _ in range(randint(0, 2, gen)))
        got, ref = pair("RMSNorm", (list(ns),), config, dtype, device, gen)
        assert got.eps == ref.eps
        check_steps(got, ref, steps_for(lambda: lead + ns, gen), dtype, gen, msg=f"RMSNorm{ns}{config}", device=device)


def test_rmsnorm_formula_and_attributes():
    gen = make_gen(63)
    x = randn((3, 5), gen, scale=1.0, shift=0.0)
    m = normlib.RMSNorm(5).double()
    assert m.eps is None
    randomize_params(m, gen)
    eps = torch.finfo(torch.float64).eps
    expected = x * torch.rsqrt(x.square().mean(-1, keepdim=True) + eps) * m.weight
    assert_close(m(x), expected)
    m2 = normlib.RMSNorm(5, eps=0.25, elementwise_affine=False).double()
    assert m2.weight is None and list(m2.state_dict()) == []
    assert_close(m2(x), x * torch.rsqrt(x.square().mean(-1, keepdim=True) + 0.25))
    # no mean subtraction: a constant row is not mapped to zero
    c = torch.full((1, 5), 3.0, dtype=torch.float64)
    assert_close(m2(c), c * torch.rsqrt(torch.tensor(9.0 + 0.25, dtype=torch.float64)))
