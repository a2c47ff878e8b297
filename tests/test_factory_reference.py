"""make_norm, the NumPy reference, normlib.device(), dtypes and the public API surface."""

import inspect
import pathlib
import re

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from conftest import assert_close, make_gen, randn

import normlib
from normlib import reference as R

NORMLIB_DIR = pathlib.Path(normlib.__file__).parent


# --------------------------------------------------------------------------- make_norm

FACTORY = [
    ("bn", 0, normlib.BatchNorm1d),
    ("bn", 1, normlib.BatchNorm1d),
    ("bn", 2, normlib.BatchNorm2d),
    ("bn", 3, normlib.BatchNorm3d),
    ("in", 1, normlib.InstanceNorm1d),
    ("in", 2, normlib.InstanceNorm2d),
    ("in", 3, normlib.InstanceNorm3d),
    ("gn", 2, normlib.GroupNorm),
    ("gn", 0, normlib.GroupNorm),
    ("ln", 0, normlib.LayerNorm),
    ("ln", 2, normlib.GroupNorm),
    ("rms", 0, normlib.RMSNorm),
    ("none", 2, nn.Identity),
    ("ibn", 2, normlib.IBNorm),
    ("brn", 0, normlib.BatchRenorm1d),
    ("brn", 1, normlib.BatchRenorm1d),
    ("brn", 2, normlib.BatchRenorm2d),
    ("sn", 0, normlib.SwitchNorm1d),
    ("sn", 1, normlib.SwitchNorm1d),
    ("sn", 2, normlib.SwitchNorm2d),
]


@pytest.mark.parametrize("name,spatial,cls", FACTORY, ids=[f"{n}-{s}" for n, s, _ in FACTORY])
def test_make_norm_types(name, spatial, cls):
    m = normlib.make_norm(name, 12, spatial_dims=spatial)
    assert type(m) is cls
    shape = (3, 12) + (3,) * spatial
    x = torch.randn(shape)
    assert m(x).shape == shape


def test_make_norm_details():
    assert normlib.make_norm("gn", 64).num_groups == 32
    assert normlib.make_norm("gn", 24).num_groups == 12  # not 24 = InstanceNorm
    assert normlib.make_norm("gn", 96).num_groups == 32
    assert normlib.make_norm("gn", 40).num_groups == 20
    assert normlib.make_norm("gn", 7, num_groups=7).num_groups == 7  # asked for, not a default
    assert normlib.make_norm("gn", 12, num_groups=3).num_groups == 3
    for c in (6, 33, 64, 100, 128):
        g = normlib.make_norm("gn", c).num_groups
        assert c % g == 0 and 1 < g < c and g <= 32 and c // g >= 2, c
        assert all(c % h or c // h < 2 for h in range(g + 1, min(c, 32) + 1)), c  # the largest such G
    ln = normlib.make_norm("ln", 8, spatial_dims=2)
    assert ln.num_groups == 1 and ln.num_channels == 8
    assert normlib.make_norm("in", 8, affine=True).affine is True
    assert normlib.make_norm("bn", 8, affine=False).weight is None
    assert normlib.make_norm("bn", 8, eps=1e-3).eps == 1e-3
    assert set(normlib.NORM_NAMES) == {"bn", "ln", "in", "gn", "ibn", "rms", "brn", "sn", "none"}
    assert normlib.make_norm("brn", 8, eps=1e-3, affine=False).eps == 1e-3
    assert normlib.make_norm("sn", 8, affine=False).weight is None
    for name in ("brn", "sn"):
        with pytest.raises(ValueError, match="spatial_dims 0-2"):
            normlib.make_norm(name, 8, spatial_dims=3)


def test_make_norm_unknown_name():
    with pytest.raises(ValueError) as info:
        normlib.make_norm("batch", 8)
    for n in normlib.NORM_NAMES:
        assert n in str(info.value)


# --------------------------------------------------------------------------- NumPy reference


def test_reference_normalize_matches_torch():
    rs = np.random.RandomState(0)
    x = rs.randn(3, 4, 5) * 3 + 2
    for axes in ((0,), (1, 2), (0, 2), (0, 1, 2)):
        y, mean, var = R.normalize(x, axes, 1e-5)
        xt = torch.from_numpy(x)
        ey = (xt - xt.mean(axes, keepdim=True)) / torch.sqrt(xt.var(axes, correction=0, keepdim=True) + 1e-5)
        assert_close(torch.from_numpy(np.asarray(y)), ey)
        assert np.shape(mean) == tuple(1 if i in axes else s for i, s in enumerate(x.shape))


@pytest.mark.parametrize("shape", [(6, 3), (4, 3, 5), (3, 2, 3, 4)], ids=["2D", "3D", "4D"])
def test_reference_batch_norm_forward_backward_equal_torch_autograd(shape):
    rs = np.random.RandomState(1)
    C = shape[1]
    x, gamma, beta = rs.randn(*shape) * 2 + 1, rs.rand(C) + 0.5, rs.randn(C)
    dy = rs.randn(*shape)
    y, cache = R.batch_norm_forward(x, gamma, beta, 1e-5)
    dx, dgamma, dbeta = R.batch_norm_backward(dy, cache)
    xt, gt, bt = (torch.tensor(a, requires_grad=True) for a in (x, gamma, beta))
    yt = F.batch_norm(xt, None, None, gt, bt, training=True, eps=1e-5)
    yt.backward(torch.from_numpy(dy))
    assert_close(torch.from_numpy(np.asarray(y)), yt)
    assert_close(torch.from_numpy(np.asarray(dx)), xt.grad)
    assert_close(torch.from_numpy(np.asarray(dgamma)).reshape(-1), gt.grad)
    assert_close(torch.from_numpy(np.asarray(dbeta)).reshape(-1), bt.grad)
    assert np.shape(dgamma) == (C,) and np.shape(dbeta) == (C,)


@pytest.mark.parametrize("shape,ns", [((5, 4), (4,)), ((2, 3, 4), (4,)), ((2, 3, 4), (3, 4))])
def test_reference_layer_norm_forward_backward_equal_torch_autograd(shape, ns):
    rs = np.random.RandomState(2)
    x, gamma, beta = rs.randn(*shape) * 2 + 1, rs.rand(*ns) + 0.5, rs.randn(*ns)
    dy = rs.randn(*shape)
    y, cache = R.layer_norm_forward(x, gamma, beta, 1e-5)
    dx, dgamma, dbeta = R.layer_norm_backward(dy, cache)
    xt, gt, bt = (torch.tensor(a, requires_grad=True) for a in (x, gamma, beta))
    yt = F.layer_norm(xt, ns, gt, bt, eps=1e-5)
    yt.backward(torch.from_numpy(dy))
    assert_close(torch.from_numpy(np.asarray(y)), yt)
    assert_close(torch.from_numpy(np.asarray(dx)), xt.grad)
    assert_close(torch.from_numpy(np.asarray(dgamma)), gt.grad)
    assert_close(torch.from_numpy(np.asarray(dbeta)), bt.grad)


# --------------------------------------------------------------------------- device()


def test_device_returns_a_torch_device():
    d = normlib.device()
    assert isinstance(d, torch.device)
    torch.zeros(1, device=d)  # usable
    if torch.cuda.is_available():
        assert d.type == "cuda"
    elif getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        assert d.type == "mps"
    else:
        assert d.type == "cpu"


def _strip_device_function(src):
    """Remove the body of `def device(...)` (the one place allowed to name backends)."""
    return re.sub(r"\ndef device\(.*?(?=\ndef |\nclass |\Z)", "\n", src, flags=re.S)


def test_no_backend_names_outside_device():
    offenders = []
    for path in sorted(NORMLIB_DIR.rglob("*.py")):
        src = path.read_text()
        if path.name == "runtime.py":
            src = _strip_device_function(src)
        # torch's own per-device autocast policy, mirrored in one named table (normlib/functional.py)
        src = re.sub(r"\n_AUTOCAST_FLOAT32_DEVICES = .*", "\n", src)
        for i, line in enumerate(src.splitlines(), 1):
            code = line.split("#", 1)[0]
            if re.search(r"""["'](cuda|mps)(:\d+)?["']|\.cuda\(|torch\.cuda\b|backends\.mps|\.mps\b""", code):
                offenders.append(f"{path.name}:{i}: {line.strip()}")
    assert not offenders, "device-specific code outside normlib.device():\n" + "\n".join(offenders)
    # the grep does find it where it is allowed (so the test can fail)
    assert re.search(r"torch\.cuda\b", (NORMLIB_DIR / "runtime.py").read_text())


# --------------------------------------------------------------------------- dtypes

DTYPE_MODULES = [
    ("BatchNorm2d", (3,), {}, (4, 3, 3, 3)),
    ("InstanceNorm2d", (3,), {"affine": True, "track_running_stats": True}, (2, 3, 4, 4)),
    ("LayerNorm", ([3, 3],), {}, (4, 3, 3, 3)),
    ("GroupNorm", (3, 3), {}, (4, 3, 3, 3)),
    ("RMSNorm", ([3, 3],), {}, (4, 3, 3, 3)),
]


@pytest.mark.parametrize(
    "dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64], ids=["f16", "bf16", "f32", "f64"]
)
@pytest.mark.parametrize("spec", DTYPE_MODULES, ids=[s[0] for s in DTYPE_MODULES])
@pytest.mark.parametrize("params", ["same", "float32"], ids=["params_same_dtype", "params_f32"])
def test_output_dtype_and_half_computed_in_float32(spec, dtype, params):
    name, args, kw, shape = spec
    if params == "float32" and dtype in (torch.float32, torch.float64):
        pytest.skip("mixed parameters apply to half-precision inputs only (torch rejects f64 input + f32 params)")
    gen = make_gen(140)
    base = getattr(normlib, name)(*args, **kw).double()
    with torch.no_grad():
        for p in base.parameters():
            p.copy_(torch.rand(p.shape, generator=gen, dtype=torch.float64) + 0.5)
    pdt = dtype if params == "same" else torch.float32
    m = getattr(normlib, name)(*args, **kw).to(pdt)
    m.load_state_dict(base.state_dict())
    m32 = getattr(normlib, name)(*args, **kw).float()
    m32.load_state_dict(m.state_dict())  # same (rounded) values, float32
    x = randn(shape, gen, dtype=dtype, shift=20.0)  # large mean: half accumulation would show
    for training in (True, False):
        m.train(training)
        m32.train(training)
        y = m(x)
        assert y.dtype == dtype, f"{name} {training}: output {y.dtype} for input {dtype}"
        y32 = m32(x.float())
        if dtype in (torch.float16, torch.bfloat16):
            # computed in float32, rounded once at the end: equal to the float32 result, cast
            assert_close(y, y32.to(dtype), dtype=dtype, tol=(torch.finfo(dtype).eps * 4, torch.finfo(dtype).eps))
        # torch agrees on the output dtype
        ref = getattr(nn, name)(*args, **kw).to(pdt)
        ref.load_state_dict(base.state_dict())
        ref.train(training)
        assert ref(x).dtype == y.dtype


# --------------------------------------------------------------------------- API surface

MODULE_NAMES = [
    "BatchNorm1d",
    "BatchNorm2d",
    "BatchNorm3d",
    "InstanceNorm1d",
    "InstanceNorm2d",
    "InstanceNorm3d",
    "LayerNorm",
    "GroupNorm",
    "RMSNorm",
    "SyncBatchNorm",
]


@pytest.mark.parametrize("name", MODULE_NAMES)
def test_constructor_signature_matches_torch(name):
    got = inspect.signature(getattr(normlib, name).__init__).parameters
    ref = inspect.signature(getattr(nn, name).__init__).parameters
    missing = [p for p in ref if p not in got]
    assert not missing, f"normlib.{name} lacks torch's constructor argument(s) {missing}"
    for p, rp in ref.items():
        assert got[p].default == rp.default, f"{name}({p}=...): default {got[p].default!r} vs torch {rp.default!r}"
        assert got[p].kind == rp.kind, f"{name}({p}): {got[p].kind} vs torch {rp.kind}"


@pytest.mark.parametrize("name", ["batch_norm", "layer_norm", "group_norm", "instance_norm", "rms_norm"])
def test_functional_signature_matches_torch(name):
    got = list(inspect.signature(getattr(normlib.functional, name)).parameters)
    ref = list(inspect.signature(getattr(F, name)).parameters)
    assert got == ref


# Layers without a torch.nn counterpart: their constructors, as the chapters use them.
OWN_MODULES = {
    "BatchRenorm1d": ["num_features", "eps", "momentum", "r_max", "d_max", "affine", "device", "dtype"],
    "BatchRenorm2d": ["num_features", "eps", "momentum", "r_max", "d_max", "affine", "device", "dtype"],
    "SwitchNorm1d": ["num_features", "eps", "momentum", "affine", "track_running_stats", "device", "dtype"],
    "SwitchNorm2d": ["num_features", "eps", "momentum", "affine", "track_running_stats", "device", "dtype"],
    "IBNorm": ["num_channels", "ratio", "eps", "momentum", "affine", "track_running_stats", "device", "dtype"],
}


@pytest.mark.parametrize("name", sorted(OWN_MODULES))
def test_own_layers_are_exported_with_their_signature(name):
    assert name in normlib.__all__
    assert list(inspect.signature(getattr(normlib, name).__init__).parameters)[1:] == OWN_MODULES[name]


def test_modules_are_nn_modules():
    for name in MODULE_NAMES + sorted(OWN_MODULES):
        assert issubclass(getattr(normlib, name), nn.Module)


@pytest.mark.parametrize(
    "name, args, kwargs",
    [
        ("BatchNorm1d", (3,), {}),
        ("BatchNorm2d", (3,), {"momentum": None, "affine": False}),
        ("BatchNorm3d", (3,), {"track_running_stats": False, "bias": False}),
        ("InstanceNorm1d", (3,), {}),
        ("InstanceNorm2d", (3,), {"affine": True, "track_running_stats": True}),
        ("LayerNorm", ([3, 4],), {}),
        ("LayerNorm", (3,), {"bias": False}),
        ("LayerNorm", (3,), {"elementwise_affine": False}),
        ("GroupNorm", (1, 3), {"bias": False}),
        ("RMSNorm", (4,), {"eps": 1e-6}),
    ],
)
def test_repr_matches_torch(name, args, kwargs):
    """A learner who prints a model sees the same line for torch.nn.X and normlib.X."""
    assert repr(getattr(normlib, name)(*args, **kwargs)) == repr(getattr(nn, name)(*args, **kwargs))
