"""state_dict round trips in both directions with torch.nn, and a whole-model swap."""

from collections import OrderedDict

import pytest
import torch
import torch.nn as nn
from conftest import assert_close, compare_modules, make_gen, randn

import normlib

# (class name, constructor args, kwargs, input shape)
SPECS = [
    ("BatchNorm1d", (4,), {}, (5, 4)),
    ("BatchNorm1d", (4,), {"momentum": None}, (5, 4, 3)),
    ("BatchNorm2d", (3,), {}, (4, 3, 3, 3)),
    ("BatchNorm2d", (3,), {"affine": False}, (4, 3, 3, 3)),
    ("BatchNorm2d", (3,), {"track_running_stats": False}, (4, 3, 3, 3)),
    ("BatchNorm3d", (2,), {}, (3, 2, 2, 3, 2)),
    ("InstanceNorm1d", (3,), {}, (2, 3, 5)),
    ("InstanceNorm1d", (3,), {"affine": True, "track_running_stats": True}, (2, 3, 5)),
    ("InstanceNorm2d", (3,), {"affine": True}, (2, 3, 4, 4)),
    ("InstanceNorm2d", (3,), {"track_running_stats": True}, (2, 3, 4, 4)),
    ("InstanceNorm3d", (2,), {"affine": True, "track_running_stats": True}, (2, 2, 3, 2, 2)),
    ("LayerNorm", ([3, 4],), {}, (2, 5, 3, 4)),
    ("LayerNorm", (4,), {"bias": False}, (3, 4)),
    ("LayerNorm", (4,), {"elementwise_affine": False}, (3, 4)),
    ("GroupNorm", (2, 6), {}, (3, 6, 2, 2)),
    ("GroupNorm", (3, 6), {"affine": False}, (3, 6, 4)),
    ("RMSNorm", ([2, 5],), {}, (3, 2, 5)),
    ("RMSNorm", (5,), {"eps": 1e-4, "elementwise_affine": False}, (3, 5)),
]
IDS = [f"{c}-{'-'.join(f'{k}={v}' for k, v in kw.items()) or 'default'}-{i}" for i, (c, a, kw, s) in enumerate(SPECS)]


def train_a_bit(m, shape, gen, steps=3):
    """Some training steps (running stats move) and a parameter change."""
    m.train()
    for _ in range(steps):
        m(randn(shape, gen))
    with torch.no_grad():
        for p in m.parameters():
            p.add_(torch.randn(p.shape, generator=gen, dtype=torch.float64).to(p.dtype) * 0.3)
    return m


def outputs_agree(a, b, shape, gen, what):
    for training in (False, True):
        a.train(training)
        b.train(training)
        x = randn(shape, gen)
        assert_close(a(x), b(x), msg=f"{what} ({'train' if training else 'eval'})")
    compare_modules(a, b, msg=what)


@pytest.mark.parametrize("spec", SPECS, ids=IDS)
def test_torch_to_normlib(spec):
    name, args, kw, shape = spec
    gen = make_gen(100)
    ref = train_a_bit(getattr(nn, name)(*args, **kw).double(), shape, gen)
    got = getattr(normlib, name)(*args, **kw).double()
    got.load_state_dict(ref.state_dict(), strict=True)
    compare_modules(got, ref, msg="after load")
    outputs_agree(got, ref, shape, gen, f"{name}{kw} torch->normlib")


@pytest.mark.parametrize("spec", SPECS, ids=IDS)
def test_normlib_to_torch(spec):
    name, args, kw, shape = spec
    gen = make_gen(101)
    got = train_a_bit(getattr(normlib, name)(*args, **kw).double(), shape, gen)
    ref = getattr(nn, name)(*args, **kw).double()
    ref.load_state_dict(got.state_dict(), strict=True)
    compare_modules(ref, got, msg="after load")
    outputs_agree(got, ref, shape, gen, f"{name}{kw} normlib->torch")


@pytest.mark.parametrize("spec", SPECS, ids=IDS)
def test_state_dict_keys_shapes_dtypes_equal(spec):
    name, args, kw, shape = spec
    sg = getattr(normlib, name)(*args, **kw).state_dict()
    sr = getattr(nn, name)(*args, **kw).state_dict()
    assert list(sg) == list(sr)
    for k in sr:
        assert sg[k].shape == sr[k].shape and sg[k].dtype == sr[k].dtype, k
    assert getattr(sg, "_metadata", {}).get("", {}).get("version") == getattr(sr, "_metadata", {}).get("", {}).get(
        "version"
    )


@pytest.mark.parametrize("cls", ["BatchNorm1d", "BatchNorm2d", "InstanceNorm2d"])
def test_old_state_dict_without_num_batches_tracked(cls):
    # Checkpoints from before torch's BN version 2 have no num_batches_tracked; a plain dict
    # (no _metadata, so version None) loads with strict=True and the counter starts at 0.
    kw = {"track_running_stats": True} if cls.startswith("Instance") else {}
    src = getattr(nn, cls)(3, **kw)
    old = OrderedDict((k, v.clone()) for k, v in src.state_dict().items() if k != "num_batches_tracked")
    old["running_mean"] += 1.5
    for lib in (nn, normlib):
        m = getattr(lib, cls)(3, **kw)
        m.load_state_dict(OrderedDict(old), strict=True)
        assert int(m.num_batches_tracked) == 0, lib.__name__
        assert torch.equal(m.running_mean, old["running_mean"]), lib.__name__


def test_buffers_follow_to_and_state_dict():
    bn = normlib.BatchNorm2d(3).to(torch.float64)
    assert bn.running_mean.dtype == torch.float64 and bn.num_batches_tracked.dtype == torch.int64
    names = dict(bn.named_buffers())
    assert set(names) == {"running_mean", "running_var", "num_batches_tracked"}


# --------------------------------------------------------------------------- model swap


def small_cnn(lib):
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        lib.BatchNorm2d(8),
        nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1),
        lib.GroupNorm(4, 8),
        nn.ReLU(),
        nn.Conv2d(8, 6, 3, padding=1),
        lib.InstanceNorm2d(6, affine=True, track_running_stats=True),
        nn.ReLU(),
        nn.Flatten(2),  # (N, 6, H*W): BatchNorm1d on 3-D input
        lib.BatchNorm1d(6, momentum=None),
        nn.Flatten(1),
        nn.Linear(6 * 16, 10),
        lib.LayerNorm(10),
        nn.Linear(10, 10),
        lib.RMSNorm(10),
    )


def test_model_swap_same_outputs_and_gradients(device):
    if device.type == "mps":
        pytest.skip("float64 model")
    gen = make_gen(110)
    torch.manual_seed(0)
    ref = small_cnn(nn).double().to(device)
    got = small_cnn(normlib).double().to(device)
    got.load_state_dict(ref.state_dict(), strict=True)
    opt_r = torch.optim.SGD(ref.parameters(), lr=0.05, momentum=0.9)
    opt_g = torch.optim.SGD(got.parameters(), lr=0.05, momentum=0.9)
    for step, training in enumerate([True, True, False, True, False]):
        ref.train(training)
        got.train(training)
        x = randn((4, 3, 4, 4), gen, device=device)
        t = torch.randint(0, 10, (4,), generator=gen).to(device)
        yr, yg = ref(x), got(x)
        assert_close(yg, yr, msg=f"step {step} output")
        if training:
            for m, y, opt in ((ref, yr, opt_r), (got, yg, opt_g)):
                opt.zero_grad()
                nn.functional.cross_entropy(y, t).backward()
            for (k, pr), (_, pg) in zip(ref.named_parameters(), got.named_parameters()):
                assert_close(pg.grad, pr.grad, tol=(1e-9, 1e-8), msg=f"step {step} grad {k}")
            opt_r.step()
            opt_g.step()
        compare_modules(got, ref, msg=f"step {step}")
    # and back: normlib's trained state loads into a torch model
    fresh = small_cnn(nn).double().to(device)
    fresh.load_state_dict(got.state_dict(), strict=True)
    fresh.eval()
    got.eval()
    x = randn((2, 3, 4, 4), gen, device=device)
    assert_close(fresh(x), got(x))


def test_instance_norm_rejects_stale_running_stats_like_torch():
    """Pre-0.4 checkpoints (no version metadata) may carry running stats that an InstanceNorm
    without track_running_stats does not have: torch refuses them, strict or not."""
    stale = OrderedDict(running_mean=torch.zeros(3), running_var=torch.ones(3))  # no _metadata
    for strict in (True, False):
        for module in (nn.InstanceNorm1d(3), normlib.InstanceNorm1d(3)):
            with pytest.raises(RuntimeError, match="Unexpected running stats buffer"):
                module.load_state_dict(OrderedDict(stale), strict=strict)
