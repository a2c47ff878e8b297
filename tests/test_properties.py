"""Property tests (hypothesis): normlib against torch.nn on drawn layers, shapes and modes.

``test_layer_matches_torch`` draws a layer (each of normlib's BatchNorm, InstanceNorm, LayerNorm,
GroupNorm and RMSNorm classes), its arguments, an input shape (edge cases included: one value per
statistic, a channel count the layer was not built for), its memory layout, a dtype, train or
eval mode, whether the input requires grad and an in-place op applied to the output. normlib must
then behave as torch does: the same exception type at the same stage (construction, forward,
in-place op, backward), or the same output dtype, shape, ``requires_grad`` and warnings, the same
values (conftest's tolerances; bfloat16 against torch in float32, as in ``check_steps``), the
same input and parameter gradients for a fixed output gradient, and the same buffers after the
forward pass. ``test_found_difference`` keeps the differences it found as plain cases.

``test_normalize_matches_definition`` checks the core, ``normlib.functional.normalize``, on
random ``dims`` against the definition computed in float64: mean and biased variance over
``dims``, standardize, scale, shift.

Runs are deterministic (``derandomize=True``: the same examples on every run, no example
database); the ``@example`` cases are the edge cases that must be tried whatever is drawn.
"""

import dataclasses
import warnings
from typing import Any, Dict, Optional, Tuple

import pytest
import torch
from conftest import (
    LAYOUTS,
    TOL,
    assert_close,
    assert_grad_close,
    make_gen,
    make_layout,
    randn,
    randomize_params,
    ref_dtype,
)
from hypothesis import event, example, given, settings
from hypothesis import strategies as st

import normlib
from normlib import functional as NF

pytestmark = pytest.mark.usefixtures("eager_path")  # loops on and off (conftest)

DTYPES = (torch.float32, torch.float64, torch.bfloat16)
INPLACE_OPS = ("none", "relu_", "add_(1)", "mul_(2)", "+= other")

BATCH_NORMS = ("BatchNorm1d", "BatchNorm2d", "BatchNorm3d")
INSTANCE_NORMS = ("InstanceNorm1d", "InstanceNorm2d", "InstanceNorm3d")
KINDS = BATCH_NORMS + INSTANCE_NORMS + ("LayerNorm", "GroupNorm", "RMSNorm")

# Each property's example count: the whole file runs in about 6 s on one core of the 2-core CI
# machine (most examples are tensors of a few hundred values), well under 30 s on a busy one.
LAYER_EXAMPLES = 2000
NORMALIZE_EXAMPLES = 500


# --------------------------------------------------------------------------- strategies

sides = st.integers(1, 6)  # every dim but the batch
batches = st.integers(1, 5)


def _spatial(draw, rank):
    return tuple(draw(sides) for _ in range(rank))


@dataclasses.dataclass
class LayerCase:
    """One drawn layer and how it is run. ``args``/``kwargs`` build it (the same for torch.nn and
    normlib); ``shape`` is the input's; the rest says how the forward and backward passes go."""

    kind: str
    args: Tuple[Any, ...]
    kwargs: Dict[str, Any]
    shape: Tuple[int, ...]
    dtype: torch.dtype
    training: bool
    requires_grad: bool
    inplace: str
    num_batches_tracked: int = 0  # where the (randomized) running statistics' count starts
    seed: int = 0  # data, parameters, running statistics, the output gradient
    layout: str = "contiguous"  # the input's memory layout (conftest.make_layout)


@st.composite
def layer_cases(draw):
    kind = draw(st.sampled_from(KINDS))
    # Now and then the layer is built for a channel count (normalized shape) other than the
    # input's: torch raises, or warns (InstanceNorm without affine), and so must normlib.
    mismatch = draw(st.integers(0, 9)) == 0
    kwargs: Dict[str, Any] = {"eps": draw(st.sampled_from([1e-5, 1e-3, 0.1]))}
    if kind in BATCH_NORMS or kind in INSTANCE_NORMS:
        rank = int(kind[-2])  # spatial dims
        channels = draw(sides)
        if kind == "BatchNorm1d":
            shape = (draw(batches), channels) + _spatial(draw, draw(st.integers(0, 1)))
        elif kind in BATCH_NORMS:
            shape = (draw(batches), channels) + _spatial(draw, rank)
        else:  # InstanceNorm takes batched and unbatched input
            batch = (draw(batches),) if draw(st.booleans()) else ()
            shape = batch + (channels,) + _spatial(draw, rank)
        args = (channels + mismatch,)
        kwargs["momentum"] = draw(st.sampled_from([0.1, 0.5, 1.0, None]))
        kwargs["affine"] = draw(st.booleans())
        kwargs["bias"] = draw(st.booleans())
        kwargs["track_running_stats"] = draw(st.booleans())
    elif kind == "GroupNorm":
        channels = draw(sides)
        groups = draw(st.sampled_from([g for g in range(1, channels + 1) if channels % g == 0]))
        shape = (draw(batches), channels) + _spatial(draw, draw(st.integers(0, 3)))
        args = (groups, channels + groups * mismatch)
        kwargs["affine"] = draw(st.booleans())
        kwargs["bias"] = draw(st.booleans())
    else:  # LayerNorm, RMSNorm: over the last k dims of any input
        shape = (draw(batches),) + _spatial(draw, draw(st.integers(0, 3)))
        k = draw(st.integers(1, len(shape)))
        normalized = shape[len(shape) - k :]
        if mismatch:
            normalized = normalized[:-1] + (normalized[-1] + 1,)
        args = (list(normalized) if draw(st.booleans()) or k > 1 else normalized[0],)
        kwargs["elementwise_affine"] = draw(st.booleans())
        if kind == "LayerNorm":
            kwargs["bias"] = draw(st.booleans())
        else:
            kwargs["eps"] = draw(st.sampled_from([None, 1e-5, 0.1]))
    return LayerCase(
        kind=kind,
        args=args,
        kwargs=kwargs,
        shape=shape,
        dtype=draw(st.sampled_from(DTYPES)),
        training=draw(st.booleans()),
        requires_grad=draw(st.booleans()),
        inplace=draw(st.sampled_from(INPLACE_OPS)),
        num_batches_tracked=draw(st.integers(0, 3)),
        seed=draw(st.integers(0, 2**16)),
        layout=draw(st.sampled_from(LAYOUTS)),
    )


# --------------------------------------------------------------------------- running one case


@dataclasses.dataclass
class Outcome:
    """What running a case gave: either ``error`` = (stage, exception type), or the rest."""

    error: Optional[Tuple[str, type]] = None
    y: Optional[torch.Tensor] = None
    requires_grad: bool = False
    warnings: Tuple[str, ...] = ()
    grads: Dict[str, Optional[torch.Tensor]] = dataclasses.field(default_factory=dict)
    state: Dict[str, torch.Tensor] = dataclasses.field(default_factory=dict)


def _inputs(case: LayerCase):
    """Input, the tensor added by ``+= other``, output gradient (float64, rounded through the
    case's dtype) and the randomized module state both libraries start from (None when torch
    cannot build the layer)."""
    gen = make_gen(case.seed)
    x = randn(case.shape, gen).to(case.dtype).double()
    other = torch.randn(case.shape, generator=gen, dtype=torch.float64).to(case.dtype).double()
    grad = torch.randn(case.shape, generator=gen, dtype=torch.float64).to(case.dtype).double()
    try:
        master = getattr(torch.nn, case.kind)(*case.args, **case.kwargs).double()
    except Exception:  # noqa: BLE001 - the case's own run reports it
        return x, other, grad, None
    randomize_params(master, gen)
    if getattr(master, "num_batches_tracked", None) is not None:
        master.num_batches_tracked.fill_(case.num_batches_tracked)
    state = {k: v.clone() for k, v in master.to(case.dtype).state_dict().items()}
    if case.inplace == "relu_":
        # relu's derivative jumps at 0, and an output that is 0 in exact arithmetic (bfloat16
        # data often holds x == running_mean exactly, or two equal values) comes out as +-1e-7
        # with either sign, depending on rounding. The output gradient is 0 there, so that the
        # gradients compared do not depend on the side of the kink rounding picked.
        try:
            with torch.no_grad(), warnings.catch_warnings():
                warnings.simplefilter("ignore")  # the case's own run compares them
                y = master.to(torch.float64).train(case.training)(x)
        except Exception:  # noqa: BLE001 - the case's own run reports it
            pass
        else:
            grad = grad.masked_fill(y.abs() < 1e-4, 0.0)
    return x, other, grad, state


def _apply_inplace(y: torch.Tensor, op: str, other: torch.Tensor) -> torch.Tensor:
    if op == "relu_":
        y.relu_()
    elif op == "add_(1)":
        y.add_(1)
    elif op == "mul_(2)":
        y.mul_(2)
    elif op == "+= other":
        y += other
    return y


def _torch_segfaults(lib, case: LayerCase) -> bool:
    """torch 2.13's CPU GroupNorm backward crashes the process (SIGSEGV) on a channels_last input
    that does not require grad when gamma/beta do:

        x = torch.randn(1, 2, 1, 2).contiguous(memory_format=torch.channels_last)
        y = torch.nn.GroupNorm(1, 2)(x); y.backward(torch.ones_like(y))  # Segmentation fault

    There torch runs on a contiguous copy of the input (the same values: the same answer)."""
    return (
        lib is torch.nn
        and case.kind == "GroupNorm"
        and case.layout == "channels_last"
        and len(case.shape) in (4, 5)
        and not case.requires_grad
        and case.kwargs.get("affine", True)
    )


def run_case(lib, case: LayerCase, dtype: torch.dtype) -> Outcome:
    """Build ``lib``'s layer, run forward, the in-place op and backward in ``dtype``."""
    x64, other64, grad64, state = _inputs(case)
    # channels_last needs a 4-D or 5-D input, transposed a 2-D one at least: others run contiguous.
    layout = case.layout
    if _torch_segfaults(lib, case) or (layout == "transposed" and len(case.shape) < 2):
        layout = "contiguous"
    x = make_layout(x64.to(dtype), layout)
    x = (x64.to(dtype).clone() if x is None else x).detach().requires_grad_(case.requires_grad)
    stage = "construct"
    try:
        layer = getattr(lib, case.kind)(*case.args, **case.kwargs)
        if state is not None:
            layer.to(case.dtype).load_state_dict(state)
        layer.to(dtype).train(case.training)
        stage = "forward"
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            y = layer(x)
        stage = "in-place op"
        y = _apply_inplace(y, case.inplace, other64.to(dtype))
        out = Outcome(
            y=y.detach().clone(),
            requires_grad=y.requires_grad,
            warnings=tuple(sorted({w.category.__name__ for w in caught})),
        )
        # Buffers right after the forward pass (the backward pass must not change them either).
        out.state = {k: v.detach().clone() for k, v in layer.state_dict().items()}
        stage = "backward"
        if y.requires_grad:
            y.backward(grad64.to(dtype))
        out.grads = {"input": x.grad, **{k: p.grad for k, p in layer.named_parameters()}}
        after = layer.state_dict()
        assert list(after) == list(out.state) and all(torch.equal(after[k], v) for k, v in out.state.items()), (
            f"{lib.__name__}: the backward pass changed the buffers"
        )
        return out
    except Exception as e:  # noqa: BLE001 - the type is what is compared
        return Outcome(error=(stage, type(e)))


def assert_output_close(got, ref, truth, dtype):
    """Each output value within conftest's TOL of torch's or, where a float64 ``truth`` is given,
    at most 4x torch's own error from it (plus TOL around the truth). The second arm is for
    torch's float32 kernels, which compute x * scale + shift with scale = 1/sqrt(var + eps): with
    one value per statistic (var = 0) torch returns ~1e-4 where the exact output is 0."""
    __tracebackhide__ = True
    atol, rtol = TOL[dtype]
    g, r = got.double(), ref.double()
    near_torch = (g - r).abs() <= atol + rtol * r.abs()
    if truth is None or bool(near_torch.all()):
        assert_close(got, ref, dtype=dtype, msg="output")
        return
    t = truth.double()
    no_worse = (g - t).abs() <= 4 * (r - t).abs() + atol + rtol * t.abs()
    bad = ~(near_torch | no_worse)
    assert not bool(bad.any()), (
        f"output: {int(bad.sum())} of {g.numel()} values are neither within (atol={atol}, rtol={rtol}) of "
        f"torch's nor as close as torch to the float64 result; first at {tuple(bad.nonzero()[0].tolist())}: "
        f"normlib {g[bad][0].item()!r}, torch {r[bad][0].item()!r}, float64 {t[bad][0].item()!r}"
    )


def _describe(error):
    return "no exception" if error is None else f"{error[1].__module__}.{error[1].__qualname__} in {error[0]}"


def check_layer_case(case: LayerCase, note=lambda label: None) -> None:
    """The property: normlib runs ``case`` as torch.nn does. ``note`` gets a label of the
    outcome (hypothesis's ``event``: ``--hypothesis-show-statistics`` counts them)."""
    __tracebackhide__ = True
    dtype = case.dtype
    want = run_case(torch.nn, case, dtype)
    got = run_case(normlib, case, dtype)
    note(f"{case.kind}: torch raised {_describe(want.error)}" if want.error else f"{case.kind}: ran")
    assert got.error == want.error, f"normlib: {_describe(got.error)}; torch: {_describe(want.error)}"
    if want.error is not None:
        return
    assert got.y.dtype == want.y.dtype, f"output dtype {got.y.dtype}, torch {want.y.dtype}"
    assert got.y.shape == want.y.shape, f"output shape {tuple(got.y.shape)}, torch {tuple(want.y.shape)}"
    assert got.requires_grad == want.requires_grad, (
        f"output requires_grad {got.requires_grad}, torch {want.requires_grad}"
    )
    assert got.warnings == want.warnings, f"warnings {got.warnings}, torch {want.warnings}"
    # Values: torch in ref_dtype(dtype) (float32 for bfloat16), as conftest's check_steps does.
    ref = want if ref_dtype(dtype) == dtype else run_case(torch.nn, case, ref_dtype(dtype))
    assert ref.error is None, f"torch in {ref_dtype(dtype)} raised {_describe(ref.error)}"
    truth = run_case(torch.nn, case, torch.float64) if dtype != torch.float64 else None
    assert_output_close(got.y, ref.y.to(dtype), None if truth is None else truth.y, dtype)
    # Gradients: close to torch's, or no farther than 4x torch's from a float64 run (conftest).
    assert sorted(got.grads) == sorted(want.grads), f"parameters {sorted(got.grads)}, torch {sorted(want.grads)}"
    for name in want.grads:
        assert (got.grads[name] is None) == (want.grads[name] is None), (
            f"grad of {name}: normlib {'has none' if got.grads[name] is None else 'has one'}, torch's differs"
        )
        assert_grad_close(
            got.grads[name],
            ref.grads[name],
            None if truth is None else truth.grads[name],
            dtype,
            msg=f"grad of {name}",
        )
    # Buffers (and parameters) after the forward pass: same keys, order and dtypes as torch's.
    assert list(got.state) == list(want.state), f"state_dict keys {list(got.state)}, torch {list(want.state)}"
    for k, v in want.state.items():
        assert got.state[k].dtype == v.dtype, f"{k}: dtype {got.state[k].dtype}, torch {v.dtype}"
        if k.endswith("num_batches_tracked"):
            assert int(got.state[k]) == int(v), f"{k}: {int(got.state[k])}, torch {int(v)}"
        else:
            assert_close(got.state[k], ref.state[k].to(v.dtype), dtype=dtype, msg=f"buffer {k}")


def _case(kind, args, shape, dtype=torch.float32, training=True, requires_grad=True, inplace="none", **kwargs):
    return LayerCase(kind, args, kwargs, shape, dtype, training, requires_grad, inplace, 0, 0)


# --------------------------------------------------------------------------- properties


@settings(max_examples=LAYER_EXAMPLES, deadline=None, derandomize=True)
@given(case=layer_cases())
# One value per statistic: torch raises ValueError (BatchNorm in training, InstanceNorm with the
# input's statistics, GroupNorm always); LayerNorm and RMSNorm over one value do not raise.
@example(case=_case("BatchNorm1d", (3,), (1, 3)))
@example(case=_case("BatchNorm2d", (2,), (1, 2, 1, 1), track_running_stats=False, training=False))
@example(case=_case("InstanceNorm2d", (2,), (2, 1, 1)))
@example(case=_case("InstanceNorm1d", (2,), (3, 2, 1), track_running_stats=True, training=False))
@example(case=_case("GroupNorm", (3, 3), (1, 3), training=False))
@example(case=_case("LayerNorm", ([1, 1],), (4, 1, 1)))
@example(case=_case("RMSNorm", (1,), (3, 1), eps=None))
# A channel count the layer was not built for: InstanceNorm warns without affine, raises with it.
@example(case=_case("InstanceNorm1d", (3,), (2, 4, 5)))
@example(case=_case("InstanceNorm1d", (3,), (2, 4, 5), affine=True))
# In-place ops on the output, as in `nn.Sequential(norm, nn.ReLU(inplace=True))` or a residual
# `y += x`: torch allows them in training and eval, with and without a grad-requiring input.
@example(case=_case("BatchNorm2d", (3,), (2, 3, 2, 2), inplace="relu_"))
@example(case=_case("BatchNorm1d", (3,), (4, 3), training=False, inplace="+= other"))
@example(case=_case("LayerNorm", (4,), (2, 4), inplace="add_(1)"))
@example(case=_case("LayerNorm", (4,), (2, 4), training=False, requires_grad=False, inplace="relu_"))
@example(case=_case("GroupNorm", (2, 4), (2, 4, 3), inplace="mul_(2)"))
@example(case=_case("InstanceNorm1d", (2,), (2, 5), inplace="relu_"))
@example(case=_case("RMSNorm", (4,), (3, 4), training=False, inplace="+= other"))
def test_layer_matches_torch(case):
    check_layer_case(case, note=event)


# Differences from torch that the property found, each kept as a plain case so that it runs
# whatever hypothesis draws (minimal reproductions in each comment).
FOUND = [
    # torch checks "more than 1 value per channel" before the channel count: ValueError;
    # normlib checks the weight's size first: RuntimeError.
    #   torch.nn.GroupNorm(1, 2)(torch.randn(1, 1))                  ValueError
    #   normlib.GroupNorm(1, 2)(torch.randn(1, 1))                   RuntimeError
    pytest.param(_case("GroupNorm", (1, 2), (1, 1)), id="GroupNorm-one-value-wrong-channels"),
    # ... and before divisibility, with C // G rounded down:
    #   torch.nn.functional.group_norm(torch.randn(1, 3), 2)         ValueError
    #   normlib.functional.group_norm(torch.randn(1, 3), 2)          RuntimeError
    pytest.param(_case("GroupNorm", (2, 4), (1, 3)), id="GroupNorm-one-value-indivisible-channels"),
    # torch checks "more than 1 spatial element" before the running statistics' size.
    #   torch.nn.InstanceNorm1d(2, track_running_stats=True)(torch.randn(3, 1, 1))   ValueError
    #   normlib.InstanceNorm1d(2, track_running_stats=True)(torch.randn(3, 1, 1))    RuntimeError
    pytest.param(
        _case("InstanceNorm1d", (2,), (3, 1, 1), track_running_stats=True),
        id="InstanceNorm-one-value-wrong-channels",
    ),
    # float32 input gradient with few values per statistic far from 0 (|mean| / std large):
    # normlib's closed-form backward assembles dx from x itself (k * x + c, where the two terms
    # nearly cancel), an error of ~u * |mean| / std relative to |dy| / std; torch's BatchNorm
    # kernel (also InstanceNorm's) works on x - mean and is exact to ~1e-7. For example
    #   x = torch.tensor([[10.0], [10.02]]), dy = [[0.5], [1.0]], BatchNorm1d(1) in training:
    #   float64 dx = +-2.1668252, torch float32 +-2.1668253, normlib [-2.1660156, 2.1679688].
    pytest.param(
        LayerCase("BatchNorm1d", (1,), {}, (2, 1), torch.float32, True, True, "none", 0, 1605),
        id="BatchNorm-backward-accuracy",
    ),
    pytest.param(
        LayerCase("InstanceNorm1d", (1,), {}, (1, 2), torch.float32, True, True, "none", 0, 1948),
        id="InstanceNorm-backward-accuracy",
    ),
]


@pytest.mark.parametrize("case", FOUND)
def test_found_difference(case):
    check_layer_case(case)


@dataclasses.dataclass
class NormalizeCase:
    shape: Tuple[int, ...]
    dims: Any  # an int or a tuple, possibly negative, in any order
    eps: float
    weight_shape: Optional[Tuple[int, ...]]
    bias_shape: Optional[Tuple[int, ...]]
    center: bool
    dtype: torch.dtype
    scale: float  # of the data; its mean is 2 * scale (a mean the recipe must remove)
    seed: int


@st.composite
def normalize_cases(draw):
    shape = tuple(draw(sides) for _ in range(draw(st.integers(1, 4))))
    ndim = len(shape)
    axes = draw(st.permutations(range(ndim)))[: draw(st.integers(1, ndim))]
    dims = tuple(a - ndim if draw(st.booleans()) else a for a in axes)
    if len(dims) == 1 and draw(st.booleans()):
        dims = dims[0]

    def broadcast_shape():
        # Each dim 1 or the input's; leading dims may be left out.
        full = tuple(s if draw(st.booleans()) else 1 for s in shape)
        return full[draw(st.integers(0, ndim)) :]

    return NormalizeCase(
        shape=shape,
        dims=dims,
        eps=draw(st.sampled_from([1e-5, 1e-3, 0.1, 1.0])),
        weight_shape=broadcast_shape() if draw(st.booleans()) else None,
        bias_shape=broadcast_shape() if draw(st.booleans()) else None,
        center=draw(st.booleans()),
        dtype=draw(st.sampled_from(DTYPES)),
        scale=draw(st.sampled_from([0.01, 1.0, 3.0, 100.0])),
        seed=draw(st.integers(0, 2**16)),
    )


@settings(max_examples=NORMALIZE_EXAMPLES, deadline=None, derandomize=True)
@given(case=normalize_cases())
@example(case=NormalizeCase((4, 3), 0, 1e-5, None, None, True, torch.float32, 1.0, 0))
@example(case=NormalizeCase((2, 3, 4), (-1, 0), 1e-5, (3, 1), (4,), True, torch.float64, 3.0, 1))
@example(case=NormalizeCase((1, 1), (0, 1), 1e-5, None, None, True, torch.float32, 1.0, 2))  # one value
@example(case=NormalizeCase((5, 2), (1,), 1e-3, (2,), None, False, torch.bfloat16, 3.0, 3))  # uncentered
def test_normalize_matches_definition(case):
    gen = make_gen(case.seed)
    x = randn(case.shape, gen, dtype=case.dtype, scale=case.scale, shift=2 * case.scale)

    def param(shape):
        return None if shape is None else (torch.rand(shape, generator=gen, dtype=torch.float64) + 0.5).to(case.dtype)

    weight, bias = param(case.weight_shape), param(case.bias_shape)
    y, mean, var = NF.normalize(x, case.dims, case.eps, weight=weight, bias=bias, center=case.center)

    # The definition, in float64 on the same (rounded) values.
    dims = (case.dims,) if isinstance(case.dims, int) else case.dims
    x64 = x.double()
    mean64 = x64.mean(dim=dims, keepdim=True)
    centered = x64 - mean64 if case.center else x64
    var64 = centered.square().mean(dim=dims, keepdim=True)  # biased (divide by m); mean square if uncentered
    y64 = centered / torch.sqrt(var64 + case.eps)
    if weight is not None:
        y64 = y64 * weight.double()
    if bias is not None:
        y64 = y64 + bias.double()

    assert y.dtype == x.dtype and y.shape == x.shape, f"y is {y.dtype} {tuple(y.shape)}"
    stats_shape = tuple(1 if d in {a % x.dim() for a in dims} else s for d, s in enumerate(x.shape))
    assert var.shape == stats_shape, f"var shape {tuple(var.shape)}, expected {stats_shape}"
    # A float32 mean is off by a few roundings of the values summed, ~u * mean(|x|), and every
    # deviation x - mean inherits that error: divided by the standard deviation, it is an error
    # of ~u * mean(|x|) / std in y that no float32 implementation avoids (torch's own layer_norm
    # is off by as much; it matters where values are far from 0 and close to each other).
    u = torch.finfo(ref_dtype(case.dtype)).eps
    rounding = 4 * u * x64.abs().mean(dim=dims, keepdim=True) / torch.sqrt(var64 + case.eps) if case.center else 0
    if weight is not None:
        rounding = rounding * weight.double().abs()
    atol, rtol = TOL[case.dtype]
    err = (y.double() - y64).abs()
    bad = err > atol + rtol * y64.abs() + rounding
    assert not bool(bad.any()), (
        f"y: {int(bad.sum())} of {y.numel()} values off the definition by more than (atol={atol}, rtol={rtol}) "
        f"plus float rounding of the mean; the first at {tuple(bad.nonzero()[0].tolist())}: "
        f"normlib {y.double()[bad][0].item()!r}, float64 {y64[bad][0].item()!r}"
    )
    # The statistics are returned in the computation dtype (float32 for bfloat16): judge them at
    # that dtype's tolerance.
    stat_dtype = ref_dtype(case.dtype)
    assert var.dtype == stat_dtype, f"var dtype {var.dtype}"
    assert_close(var, var64, dtype=stat_dtype, msg="var")
    if case.center:
        assert mean.shape == stats_shape and mean.dtype == stat_dtype, f"mean is {mean.dtype} {tuple(mean.shape)}"
        assert_close(mean, mean64, dtype=stat_dtype, msg="mean", scale_atol=True)
    else:
        assert mean is None, "uncentered: mean must be None"
