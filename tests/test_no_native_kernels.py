"""normlib computes with its own code: torch's normalization kernels are the reference only.

Two independent guards: (1) every Python entry point to torch's norm kernels is monkeypatched
to raise; (2) a TorchDispatchMode fails on any aten normalization op reaching the dispatcher
(catches routes such as torch.ops.aten.* that bypass the Python names). Torch references are
computed before either is active; normlib's forward and backward then run under both.
"""

import copy

import pytest
import torch
import torch.nn as nn
from conftest import assert_close, make_gen, randn
from torch.utils._python_dispatch import TorchDispatchMode

import normlib
from normlib import functional as NF

PATCHED = [
    (torch.nn.functional, "batch_norm"),
    (torch.nn.functional, "layer_norm"),
    (torch.nn.functional, "group_norm"),
    (torch.nn.functional, "instance_norm"),
    (torch.nn.functional, "rms_norm"),
    (torch, "batch_norm"),
    (torch, "layer_norm"),
    (torch, "group_norm"),
    (torch, "instance_norm"),
    (torch, "rms_norm"),
    (torch, "native_batch_norm"),
    (torch, "native_layer_norm"),
    (torch, "native_group_norm"),
    (torch, "_weight_norm"),
    (torch, "_weight_norm_interface"),
    (torch, "norm_except_dim"),
]

FORBIDDEN_OP_WORDS = (
    "batch_norm",
    "layer_norm",
    "group_norm",
    "instance_norm",
    "rms_norm",
    "weight_norm",
    "norm_except_dim",
)


class NoNormOps(TorchDispatchMode):
    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.name()
        if any(w in name for w in FORBIDDEN_OP_WORDS):
            raise AssertionError(f"normlib reached torch's normalization op {name}")
        return func(*args, **(kwargs or {}))


def _cases():
    """(name, torch module or fn, normlib module or fn, input shape). Modules are built here,
    the normlib ones loaded with the torch one's state."""
    gen = make_gen(130)
    specs = [
        ("BatchNorm1d", (3,), {}, (4, 3)),
        ("BatchNorm1d", (3,), {"momentum": None}, (4, 3, 2)),
        ("BatchNorm2d", (3,), {}, (2, 3, 2, 2)),
        ("BatchNorm3d", (2,), {}, (2, 2, 2, 2, 2)),
        ("InstanceNorm1d", (3,), {"affine": True, "track_running_stats": True}, (2, 3, 4)),
        ("InstanceNorm2d", (3,), {}, (2, 3, 3, 3)),
        ("InstanceNorm3d", (2,), {"affine": True}, (2, 2, 2, 2, 2)),
        ("LayerNorm", ([3, 4],), {}, (2, 3, 4)),
        ("GroupNorm", (2, 4), {}, (2, 4, 3)),
        ("RMSNorm", (4,), {}, (3, 4)),
        ("RMSNorm", (4,), {"eps": 1e-3}, (3, 4)),
    ]
    cases = []
    for name, args, kw, shape in specs:
        ref = getattr(nn, name)(*args, **kw).double()
        with torch.no_grad():
            for p in ref.parameters():
                p.copy_(torch.rand(p.shape, generator=gen, dtype=torch.float64) + 0.5)
        got = getattr(normlib, name)(*args, **kw).double()
        got.load_state_dict(ref.state_dict())
        for training in (True, False):
            cases.append((f"{name}{kw}-{'train' if training else 'eval'}", training, ref, got, shape))
    # weight_norm on a Linear and a Conv2d
    torch.manual_seed(0)
    for base, shape in ((nn.Linear(4, 3).double(), (2, 4)), (nn.Conv2d(2, 3, 2).double(), (2, 2, 3, 3))):
        ref = torch.nn.utils.parametrizations.weight_norm(copy.deepcopy(base))
        got = normlib.weight_norm(copy.deepcopy(base))
        cases.append((f"weight_norm-{type(base).__name__}", True, ref, got, shape))
    return cases, gen


FUNCTIONALS = [
    (
        "normalize",
        lambda lib, x: (
            NF.normalize(x, (0, 2))[0]
            if lib is NF
            else (x - x.mean((0, 2), keepdim=True)) / torch.sqrt(x.var((0, 2), correction=0, keepdim=True) + 1e-5)
        ),
    ),
    (
        "batch_norm",
        lambda lib, x: lib.batch_norm(x, torch.zeros(3, dtype=x.dtype), torch.ones(3, dtype=x.dtype), training=True),
    ),
    (
        "batch_norm_eval",
        lambda lib, x: lib.batch_norm(x, torch.zeros(3, dtype=x.dtype) + 0.5, torch.ones(3, dtype=x.dtype) * 2),
    ),
    ("layer_norm", lambda lib, x: lib.layer_norm(x, (4,))),
    ("group_norm", lambda lib, x: lib.group_norm(x, 3)),
    ("instance_norm", lambda lib, x: lib.instance_norm(x)),
    ("rms_norm", lambda lib, x: lib.rms_norm(x, (3, 4))),
    (
        "BatchNormFunction",
        lambda lib, x: (
            NF.BatchNormFunction.apply(x, None, None, 1e-5)[0]
            if lib is NF
            else torch.nn.functional.batch_norm(x, None, None, training=True)
        ),
    ),
]


def _run(fn, x, g):
    x = x.clone().requires_grad_(True)
    y = fn(x)
    y.backward(g)
    return y.detach(), x.grad


def test_normlib_never_calls_torch_norm_kernels(monkeypatch):
    cases, gen = _cases()
    # --- references, before any patching
    refs = {}
    for name, training, ref, got, shape in cases:
        x = randn(shape, gen)
        ref.train(training)
        y_shape = copy.deepcopy(ref)(x).shape  # a copy: running stats move only once
        g = torch.randn(y_shape, generator=gen, dtype=torch.float64)
        refs[name] = (x, g, *_run(ref, x, g), {k: p.grad.clone() for k, p in ref.named_parameters()})
    fx = randn((2, 3, 4), gen)
    fg = torch.randn((2, 3, 4), generator=gen, dtype=torch.float64)
    frefs = {name: _run(lambda x: fn(torch.nn.functional, x), fx, fg) for name, fn in FUNCTIONALS}

    # --- patch every entry point
    def forbidden(qualname):
        def boom(*a, **k):
            raise AssertionError(f"normlib called torch's {qualname}")

        return boom

    for owner, attr in PATCHED:
        if hasattr(owner, attr):
            monkeypatch.setattr(owner, attr, forbidden(f"{owner.__name__}.{attr}"))
    # the patch itself works (otherwise this test could not fail)
    with pytest.raises(AssertionError, match="called torch's"):
        nn.BatchNorm1d(3)(torch.randn(4, 3))
    with pytest.raises(AssertionError, match="normalization op"), NoNormOps():
        torch.ops.aten.native_layer_norm(torch.randn(2, 3), [3], None, None, 1e-5)

    # --- normlib under both guards, compared with the references
    with NoNormOps():
        for name, training, ref, got, shape in cases:
            x, g, y_ref, dx_ref, pgrads = refs[name]
            got.train(training)
            y, dx = _run(got, x, g)
            assert_close(y, y_ref, msg=f"{name} output")
            assert_close(dx, dx_ref, msg=f"{name} input grad")
            for k, p in got.named_parameters():
                assert_close(p.grad, pgrads[k], msg=f"{name} grad {k}")
        for name, fn in FUNCTIONALS:
            y, dx = _run(lambda x: fn(NF, x), fx, fg)
            assert_close(y, frefs[name][0], msg=f"functional {name}")
            assert_close(dx, frefs[name][1], msg=f"functional {name} grad")
        # factory-made layers too
        for norm in normlib.NORM_NAMES:
            m = normlib.make_norm(norm, 4, spatial_dims=0 if norm == "rms" else 2).double()
            xin = randn((3, 4) if norm == "rms" else (3, 4, 2, 2), gen).requires_grad_(True)
            m(xin).sum().backward()
            assert xin.grad is not None


def test_recurrent_and_transformer_modules_use_normlib_norms(monkeypatch):
    """The LN-LSTM/GRU, TimeStepBatchNorm, Transformer blocks and the invariance table run
    without any torch normalization kernel (forward and backward)."""
    from normlib.lab.invariance import invariance_table
    from normlib.lab.transformer import TinyTransformer

    torch.manual_seed(0)
    modules = [
        (normlib.LayerNormLSTM(3, 4, num_layers=2), (torch.randn(5, 2, 3),), {"lengths": [5, 3]}),
        (normlib.LayerNormGRU(3, 4), (torch.randn(5, 2, 3),), {}),
        (normlib.LayerNormLSTMCell(3, 4), (torch.randn(2, 3),), {}),
        (normlib.TimeStepBatchNorm(3, 5), (torch.randn(5, 4, 3),), {"lengths": [5, 5, 4, 2]}),
    ]
    for position in ("pre", "post"):
        for norm in ("ln", "rms"):
            modules.append(
                (
                    TinyTransformer(
                        7, 7, 4, depth=2, d_model=8, num_heads=2, dim_feedforward=16, norm=norm, position=position
                    ),
                    (torch.randint(0, 7, (2, 4)),),
                    {},
                )
            )
    for owner, attr in PATCHED:
        if hasattr(owner, attr):
            monkeypatch.setattr(owner, attr, lambda *a, **k: (_ for _ in ()).throw(AssertionError("torch norm called")))
    with NoNormOps():
        for module, args, kwargs in modules:
            out = module(*args, **kwargs)
            out = out[0] if isinstance(out, tuple) else out
            out.sum().backward()
            assert all(p.grad is not None for p in module.parameters()), type(module).__name__
        table = invariance_table()
        assert table["weight matrix re-centering"]["ln"] < 1e-12
