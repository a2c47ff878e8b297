"""weight_norm: parity with torch.nn.utils.parametrizations.weight_norm."""

import copy

import pytest
import torch
import torch.nn as nn
from conftest import assert_close, make_gen, randn
from torch.nn.utils.parametrizations import weight_norm as torch_weight_norm

import normlib

MODULES = [
    pytest.param(lambda: nn.Linear(5, 4), (3, 5), id="linear"),
    pytest.param(lambda: nn.Conv2d(3, 4, 3, padding=1), (2, 3, 5, 5), id="conv2d"),
    pytest.param(lambda: nn.Conv1d(2, 3, 2), (2, 2, 6), id="conv1d"),
]
DIMS = [
    pytest.param(0, id="dim0"),
    pytest.param(1, id="dim1"),
    pytest.param(None, id="dimNone"),
    pytest.param(-1, id="dim-1"),
]  # -1 is PyTorch's spelling of None: one norm for the whole tensor


def build(make, dim, device, seed=0):
    torch.manual_seed(seed)
    base = make().double().to(device)
    ref = torch_weight_norm(copy.deepcopy(base), dim=dim)
    got = normlib.weight_norm(copy.deepcopy(base), dim=dim)
    return got, ref, base


@pytest.mark.parametrize("dim", DIMS)
@pytest.mark.parametrize("make,xshape", MODULES)
def test_weight_norm_parity(make, xshape, dim, device):
    if device.type == "mps":
        pytest.skip("float64 reference; MPS has no float64")
    gen = make_gen(90)
    got, ref, base = build(make, dim, device)
    sg, sr = got.state_dict(), ref.state_dict()
    assert list(sg) == list(sr)
    for k in sr:
        assert sg[k].shape == sr[k].shape, k
        assert_close(sg[k], sr[k], msg=k)
    # the initial weight is the module's weight: g * v / ||v|| reproduces it
    assert_close(got.weight, base.weight)
    assert_close(got.weight, ref.weight)
    # g has keepdim shape (out, 1, ...) for dim=0
    g = got.parametrizations.weight.original0
    if dim == 0:
        assert g.shape == (base.weight.shape[0],) + (1,) * (base.weight.dim() - 1)
    # perturb g and v identically, then compare weights, outputs and gradients
    with torch.no_grad():
        for m in (got, ref):
            pm = dict(m.named_parameters())
            torch.manual_seed(1)
            for name in sorted(pm):
                pm[name].add_(torch.randn_like(pm[name]) * 0.1)
    assert_close(got.weight, ref.weight)
    x = randn(xshape, gen, device=device)
    yg, yr = got(x), ref(x)
    assert_close(yg, yr)
    gout = torch.randn(yr.shape, generator=gen, dtype=torch.float64).to(device)
    yg.backward(gout)
    yr.backward(gout)
    pg, pr = dict(got.named_parameters()), dict(ref.named_parameters())
    assert sorted(pg) == sorted(pr)
    for k in ("parametrizations.weight.original0", "parametrizations.weight.original1", "bias"):
        assert_close(pg[k].grad, pr[k].grad, msg=k)


def _direction_norm(v, dim):
    if dim is None:
        return torch.sqrt((v * v).sum())
    return torch.sqrt((v * v).sum(dim=[d for d in range(v.dim()) if d != dim], keepdim=True))


@pytest.mark.parametrize("dim", DIMS)
def test_weight_norm_formula(dim):
    got, _, _ = build(lambda: nn.Conv2d(3, 4, 3), dim, "cpu")
    with torch.no_grad():
        got.parametrizations.weight.original0.mul_(2.5)
    g = got.parametrizations.weight.original0
    v = got.parametrizations.weight.original1
    assert_close(got.weight, g * v / _direction_norm(v, dim))


@pytest.mark.parametrize("dim", DIMS)
@pytest.mark.parametrize("make,xshape", MODULES)
def test_weight_norm_state_dict_both_ways(make, xshape, dim):
    gen = make_gen(91)
    got, ref, _ = build(make, dim, "cpu", seed=0)
    got2, ref2, _ = build(make, dim, "cpu", seed=1)  # different initial values
    with torch.no_grad():
        for p in ref.parameters():
            p.mul_(1.3).add_(0.05)
    got2.load_state_dict(ref.state_dict(), strict=True)  # torch -> normlib
    x = randn(xshape, gen)
    assert_close(got2(x), ref(x))
    with torch.no_grad():
        for p in got.parameters():
            p.mul_(0.7).sub_(0.02)
    ref2.load_state_dict(got.state_dict(), strict=True)  # normlib -> torch
    assert_close(ref2(x), got(x))


def test_weight_norm_trains_like_torch():
    gen = make_gen(92)
    got, ref, _ = build(lambda: nn.Linear(6, 3), 0, "cpu")
    opt_g = torch.optim.SGD(got.parameters(), lr=0.1)
    opt_r = torch.optim.SGD(ref.parameters(), lr=0.1)
    for _ in range(5):
        x = randn((8, 6), gen)
        t = randn((8, 3), gen)
        for m, opt in ((got, opt_g), (ref, opt_r)):
            opt.zero_grad()
            ((m(x) - t) ** 2).mean().backward()
            opt.step()
    for (k, a), (_, b) in zip(sorted(got.state_dict().items()), sorted(ref.state_dict().items())):
        assert_close(a, b, msg=k)


@pytest.mark.parametrize("dim", [0, -1, None])
def test_weight_norm_of_a_1d_parameter_matches_torch(dim):
    """A bias (1-D) normalized along its only dim: every entry is its own vector, g = |v|."""
    torch.manual_seed(3)
    base = nn.Linear(5, 6).double()
    ref = torch_weight_norm(copy.deepcopy(base), name="bias", dim=dim)
    got = normlib.weight_norm(copy.deepcopy(base), name="bias", dim=dim)
    for key, value in ref.state_dict().items():
        assert got.state_dict()[key].shape == value.shape, key
        assert_close(got.state_dict()[key], value, msg=key)
    x = torch.randn(3, 5, dtype=torch.float64)
    assert_close(got(x), ref(x))


@pytest.mark.parametrize("dim", [0, 1, None])
def test_weight_norm_loads_legacy_weight_g_weight_v_checkpoints(dim):
    """Checkpoints of the old torch.nn.utils.weight_norm store <name>_g and <name>_v."""
    import warnings

    torch.manual_seed(4)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # the old API is deprecated
        legacy = torch.nn.utils.weight_norm(nn.Sequential(nn.Conv2d(2, 3, 3)).double()[0], dim=dim)
    with torch.no_grad():
        legacy.weight_g.mul_(1.5)  # a trained-looking magnitude, not the initial one
    state = legacy.state_dict()
    assert {"weight_g", "weight_v"} <= set(state)
    got = normlib.weight_norm(nn.Conv2d(2, 3, 3).double(), dim=dim)
    got.load_state_dict(state, strict=True)
    x = torch.randn(2, 2, 5, 5, dtype=torch.float64)
    assert_close(got(x), legacy(x))
