"""Drop-in parity where real models break bare-tensor tests: an in-place op after a layer
(``ReLU(inplace=True)``, ``out += identity``), channels-last inputs, and torch.autocast.

Each case runs torch's layer and normlib's converted copy on the same input and compares the
output, its memory format, the input gradient and every parameter gradient.
"""

import copy

import pytest
import torch
from conftest import assert_close, assert_grad_close
from torch import nn

import normlib

pytestmark = pytest.mark.usefixtures("eager_path")  # loops on and off (conftest)

LAYERS = [
    ("BatchNorm1d", lambda: nn.BatchNorm1d(6), (5, 6)),
    ("BatchNorm1d-3d", lambda: nn.BatchNorm1d(6), (5, 6, 4)),
    ("BatchNorm2d", lambda: nn.BatchNorm2d(6), (4, 6, 3, 5)),
    ("BatchNorm3d", lambda: nn.BatchNorm3d(6), (2, 6, 2, 3, 4)),
    ("InstanceNorm1d", lambda: nn.InstanceNorm1d(6, affine=True), (3, 6, 7)),
    ("InstanceNorm2d", lambda: nn.InstanceNorm2d(6, affine=True), (3, 6, 4, 5)),
    ("InstanceNorm3d", lambda: nn.InstanceNorm3d(6, affine=True, track_running_stats=True), (2, 6, 2, 3, 4)),
    ("LayerNorm", lambda: nn.LayerNorm(5), (4, 3, 5)),
    ("LayerNorm-2axes", lambda: nn.LayerNorm([3, 5]), (4, 3, 5)),
    ("GroupNorm", lambda: nn.GroupNorm(3, 6), (4, 6, 3, 5)),
    ("GroupNorm-3d", lambda: nn.GroupNorm(2, 6), (2, 6, 2, 3, 4)),
    ("RMSNorm", lambda: nn.RMSNorm(5), (4, 3, 5)),
]

INPLACE_OPS = {
    "relu_": lambda y: torch.relu_(y),
    "iadd": lambda y: y.__iadd__(torch.linspace(-1, 1, y.shape[-1], dtype=y.dtype)),
    "add_": lambda y: y.add_(1.5),
    "mul_": lambda y: y.mul_(-2.0),
    "none": lambda y: y,
}


def _run(module, x, op, dy_seed=1):
    x = x.detach().clone().requires_grad_(True)
    y = op(module(x))
    dy = torch.randn(y.shape, generator=torch.Generator().manual_seed(dy_seed), dtype=y.dtype)
    y.backward(dy)
    grads = {name: p.grad for name, p in module.named_parameters()}
    return y.detach(), x.grad, grads


@pytest.mark.parametrize("mode", ["train", "eval"])
@pytest.mark.parametrize("op", list(INPLACE_OPS))
@pytest.mark.parametrize("name,make,shape", LAYERS, ids=[c[0] for c in LAYERS])
def test_inplace_op_after_layer_matches_torch(name, make, shape, op, mode):
    """Every layer's output accepts an in-place op, in training and eval(), with torch's gradients."""
    torch.manual_seed(0)
    ref = make()
    ours = normlib.convert(copy.deepcopy(ref))
    assert type(ours).__module__.startswith("normlib")
    ref.train(mode == "train")
    ours.train(mode == "train")
    x = torch.randn(shape, dtype=torch.float64) * 2 + 0.5
    ref.double()
    ours.double()
    y_ref, dx_ref, g_ref = _run(ref, x, INPLACE_OPS[op])
    y, dx, g = _run(ours, x, INPLACE_OPS[op])
    assert_close(y, y_ref, msg=f"{name} {mode} {op}: output")
    assert_grad_close(dx, dx_ref, None, torch.float64, msg=f"{name} {mode} {op}: input gradient")
    assert g.keys() == g_ref.keys()
    for key in g_ref:
        assert_grad_close(g[key], g_ref[key], None, torch.float64, msg=f"{name} {mode} {op}: {key}.grad")
    for key, buf in ref.named_buffers():
        assert_close(dict(ours.named_buffers())[key], buf, dtype=torch.float64, msg=f"{name} {mode} {op}: buffer {key}")


def test_inplace_op_is_refused_on_a_view_no_more():
    """The failure this file guards against: autograd forbids in-place ops on a view made inside a
    custom Function. normlib's output is no such view (it has no view base)."""
    for layer, shape in [(normlib.BatchNorm2d(3), (2, 3, 4, 4)), (normlib.LayerNorm(4), (2, 4))]:
        y = layer(torch.randn(shape, requires_grad=True))
        assert y._base is None, f"{type(layer).__name__} returned a view"


CONV_LAYERS = [c for c in LAYERS if len(c[2]) in (4, 5)]


@pytest.mark.parametrize("mode", ["train", "eval"])
@pytest.mark.parametrize("name,make,shape", CONV_LAYERS, ids=[c[0] for c in CONV_LAYERS])
def test_channels_last_input_keeps_torchs_memory_format(name, make, shape, mode):
    """BatchNorm and GroupNorm return channels-last for a channels-last input (as torch's do); the
    others return a contiguous tensor (as torch's do). Values and gradients are torch's."""
    torch.manual_seed(0)
    ref = make()
    ours = normlib.convert(copy.deepcopy(ref))
    ref.train(mode == "train")
    ours.train(mode == "train")
    fmt = torch.channels_last if len(shape) == 4 else torch.channels_last_3d
    x = torch.randn(shape).contiguous(memory_format=fmt)
    y_ref, dx_ref, g_ref = _run(ref, x, INPLACE_OPS["relu_"])
    y, dx, g = _run(ours, x, INPLACE_OPS["relu_"])
    for memory_format in (torch.contiguous_format, fmt):
        assert y.is_contiguous(memory_format=memory_format) == y_ref.is_contiguous(memory_format=memory_format), (
            f"{name} {mode}: torch's output is{'' if y_ref.is_contiguous(memory_format=memory_format) else ' not'} "
            f"{memory_format}"
        )
    assert_close(y, y_ref, msg=f"{name} {mode}: output")
    assert_grad_close(dx, dx_ref, None, torch.float32, msg=f"{name} {mode}: input gradient")
    for key in g_ref:
        assert_grad_close(g[key], g_ref[key], None, torch.float32, msg=f"{name} {mode}: {key}.grad")


@pytest.mark.parametrize("mode", ["train", "eval"])
@pytest.mark.parametrize("name,make,shape", LAYERS, ids=[c[0] for c in LAYERS])
def test_cpu_autocast_bfloat16_output_matches_torch(name, make, shape, mode):
    """Under torch.autocast("cpu", bfloat16) a Linear before the layer makes a bfloat16 input with
    float32 parameters; the output dtype is torch's (bfloat16 on the CPU) and the values equal
    torch's up to one bfloat16 rounding (2**-8 relative). Gradients, with backward() inside the
    autocast region, agree to a few bfloat16 roundings."""
    torch.manual_seed(0)
    ref = make()
    ours = normlib.convert(copy.deepcopy(ref))
    ref.train(mode == "train")
    ours.train(mode == "train")
    lin = nn.Linear(shape[-1], shape[-1])
    x = torch.randn(shape)
    # a random weighting: a loss constant per channel would make BatchNorm's input gradient zero
    weights = torch.randn(shape, generator=torch.Generator().manual_seed(2))
    results = []
    for layer in (ref, ours):
        xi = x.clone().requires_grad_(True)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            h = lin(xi)
            assert h.dtype == torch.bfloat16
            y = layer(h)
            (y.float() * weights).sum().backward()
        results.append((y, xi.grad, {k: p.grad for k, p in layer.named_parameters()}))
        lin.zero_grad()
    (y_ref, dx_ref, g_ref), (y, dx, g) = results
    assert y.dtype == y_ref.dtype
    scale = float(y_ref.detach().float().abs().max())
    assert_close(y.float(), y_ref.float(), tol=(2**-8 * scale, 2**-8), msg=f"{name} {mode}: output")
    for got, want, what in [(dx, dx_ref, "input")] + [(g[k], g_ref[k], k) for k in g_ref]:
        tol = 4 * 2**-8 * float(want.abs().max())
        assert_close(got, want, tol=(tol, 0), msg=f"{name} {mode}: {what} gradient")
