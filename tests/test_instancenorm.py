"""InstanceNorm1d/2d/3d: defaults, unbatched input, running statistics — against torch.nn."""

import warnings

import pytest
import torch
import torch.nn as nn
from conftest import (
    PARITY_DTYPES,
    assert_close,
    check_steps,
    make_gen,
    module_pair,
    randint,
    randn,
    skip_unsupported,
)

import normlib

IN_KINDS = [
    pytest.param("InstanceNorm1d", 1, id="in1d"),
    pytest.param("InstanceNorm2d", 2, id="in2d"),
    pytest.param("InstanceNorm3d", 3, id="in3d"),
]

CONFIGS = [
    pytest.param({}, id="default"),
    pytest.param({"affine": True}, id="affine"),
    pytest.param({"track_running_stats": True}, id="running_stats"),
    pytest.param({"affine": True, "track_running_stats": True, "momentum": 0.3}, id="affine_running_m0.3"),
    pytest.param({"track_running_stats": True, "momentum": None}, id="running_momentum_None"),
]


def make_pair(kind, C, config, dtype, device, gen):
    return module_pair(getattr(normlib, kind), getattr(nn, kind), (C,), config, dtype, device, gen)


def test_defaults_match_torch():
    for kind in ("InstanceNorm1d", "InstanceNorm2d", "InstanceNorm3d"):
        got, ref = getattr(normlib, kind)(4), getattr(nn, kind)(4)
        assert got.affine is False and got.track_running_stats is False
        for attr in ("num_features", "eps", "momentum", "affine", "track_running_stats"):
            assert getattr(got, attr) == getattr(ref, attr), (kind, attr)
        assert list(got.state_dict()) == list(ref.state_dict()) == []
        assert got.weight is None and got.running_mean is None
        for cfg in ({"affine": True}, {"track_running_stats": True}):
            assert list(getattr(normlib, kind)(4, **cfg).state_dict()) == list(getattr(nn, kind)(4, **cfg).state_dict())


@pytest.mark.parametrize("config", CONFIGS)
@pytest.mark.parametrize("dtype", PARITY_DTYPES)
@pytest.mark.parametrize("kind,spatial", IN_KINDS)
def test_instancenorm_parity_train_eval(kind, spatial, dtype, config, device):
    skip_unsupported(device, dtype)
    gen = make_gen(70 + spatial)
    for _ in range(2):
        C = randint(1, 4, gen)
        sp = tuple(randint(2, 4, gen) for _ in range(spatial))
        got, ref = make_pair(kind, C, config, dtype, device, gen)
        steps = [(t, randn((randint(1, 4, gen), C) + sp, gen)) for t in (True, True, False, True, False)]
        check_steps(got, ref, steps, dtype, gen, msg=f"{kind}{config}", device=device)


@pytest.mark.parametrize("config", CONFIGS)
@pytest.mark.parametrize("kind,spatial", IN_KINDS)
def test_instancenorm_unbatched_input(kind, spatial, config, device):
    skip_unsupported(device, torch.float64)
    gen = make_gen(75)
    C = 3
    got, ref = make_pair(kind, C, config, torch.float64, device, gen)
    steps = [(t, randn((C,) + (3,) * spatial, gen)) for t in (True, False, True)]
    check_steps(got, ref, steps, torch.float64, gen, msg=f"{kind} unbatched", device=device)
    # unbatched == batched with N=1, squeezed
    x = randn((C,) + (3,) * spatial, gen, device=device)
    got.eval()
    assert_close(got(x), got(x.unsqueeze(0)).squeeze(0))


def test_instancenorm_uses_per_instance_stats_in_eval_by_default():
    gen = make_gen(76)
    x = randn((3, 2, 4, 4), gen)
    m = normlib.InstanceNorm2d(2).double().eval()
    m_ = x.mean((2, 3), keepdim=True)
    v = x.var((2, 3), correction=0, keepdim=True)
    assert_close(m(x), (x - m_) / torch.sqrt(v + 1e-5))
    # contrast/brightness changes vanish exactly per image
    assert_close(m(x * 7.0 + 3.0), m(x), tol=(1e-6, 1e-6))


def test_instancenorm_channels_last(device):
    gen = make_gen(77)
    for kind, spatial in (("InstanceNorm2d", 2), ("InstanceNorm3d", 3)):
        got, ref = make_pair(kind, 3, {"affine": True}, torch.float32, device, gen)
        steps = [(True, randn((2, 3) + (3,) * spatial, gen))]
        check_steps(got, ref, steps, torch.float32, gen, layout="channels_last", msg=kind, device=device)


def test_instancenorm_num_features_mismatch_without_affine_warns_like_torch():
    x = torch.randn(2, 5, 4, 4)
    with warnings.catch_warnings(record=True) as wt:
        warnings.simplefilter("always")
        yr = nn.InstanceNorm2d(4)(x)
    with warnings.catch_warnings(record=True) as wg:
        warnings.simplefilter("always")
        yg = normlib.InstanceNorm2d(4)(x)
    assert len(wt) >= 1 and len(wg) >= 1
    assert_close(yg, yr)
