"""BatchNorm1d/2d/3d: parity with torch.nn and the facts the chapters rest on."""

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
    random_shapes,
    randomize_params,
    skip_unsupported,
)

import normlib

# (normlib class name, spatial dims of the input)
BN_KINDS = [
    pytest.param("BatchNorm1d", 0, id="bn1d-2D"),
    pytest.param("BatchNorm1d", 1, id="bn1d-3D"),
    pytest.param("BatchNorm2d", 2, id="bn2d"),
    pytest.param("BatchNorm3d", 3, id="bn3d"),
]

CONFIGS = [
    pytest.param({}, id="default"),
    pytest.param({"affine": False}, id="affine_off"),
    pytest.param({"track_running_stats": False}, id="no_running_stats"),
    pytest.param({"affine": False, "track_running_stats": False}, id="bare"),
    pytest.param({"momentum": None}, id="momentum_None"),
    pytest.param({"momentum": 0.0}, id="momentum_0"),
    pytest.param({"momentum": 1.0}, id="momentum_1"),
    pytest.param({"momentum": 0.3, "eps": 1e-3}, id="momentum_0.3_eps"),
]

# train, train, eval, train, eval, train: running stats evolve, eval reads them.
SCHEDULE = [True, True, False, True, False, True]


def make_pair(kind, C, config, dtype, device, gen):
    return module_pair(getattr(normlib, kind), getattr(nn, kind), (C,), config, dtype, device, gen)


@pytest.mark.parametrize("config", CONFIGS)
@pytest.mark.parametrize("dtype", PARITY_DTYPES)
@pytest.mark.parametrize("kind,spatial", BN_KINDS)
def test_batchnorm_parity_train_eval_sequence(kind, spatial, dtype, config, device):
    skip_unsupported(device, dtype)
    gen = make_gen(1000 + spatial)
    for shape in random_shapes(gen, 3, spatial, max_side=4):
        got, ref = make_pair(kind, shape[1], config, dtype, device, gen)
        steps = []
        for training in SCHEDULE:
            # the batch size changes between steps, the channel count does not
            s = (randint(2, 5, gen),) + shape[1:]
            steps.append((training, randn(s, gen)))
        check_steps(got, ref, steps, dtype, gen, msg=f"{kind}{config}", device=device)


@pytest.mark.parametrize("layout", [l for l in LAYOUTS if l != "contiguous"])
@pytest.mark.parametrize("kind,spatial", BN_KINDS)
def test_batchnorm_memory_layouts(kind, spatial, layout, device):
    if layout == "channels_last" and spatial < 2:
        pytest.skip("channels_last needs 4-D or 5-D input")
    gen = make_gen(2000 + spatial)
    for shape in random_shapes(gen, 2, spatial, min_batch=2, max_side=4):
        shape = (max(shape[0], 2), max(shape[1], 2)) + tuple(max(s, 2) for s in shape[2:])
        got, ref = make_pair(kind, shape[1], {}, torch.float32, device, gen)
        steps = [(t, randn(shape, gen)) for t in (True, False)]
        check_steps(got, ref, steps, torch.float32, gen, msg=kind, layout=layout, device=device)


def test_layouts_are_really_noncontiguous():
    x = torch.randn(2, 3, 4, 5)
    from conftest import make_layout

    for layout in ("channels_last", "transposed", "sliced"):
        assert not make_layout(x, layout).is_contiguous(), layout
        assert torch.equal(make_layout(x, layout), x)
    x5 = torch.randn(2, 3, 2, 4, 5)
    assert make_layout(x5, "channels_last").is_contiguous(memory_format=torch.channels_last_3d)


# --------------------------------------------------------------------------- pinned facts


def test_forward_uses_biased_variance():
    # Two values per channel: biased var = ((a-b)/2)^2, unbiased = 2x that. With eps tiny
    # the output is exactly +-1 (biased) and would be +-1/sqrt(2) (unbiased).
    x = torch.tensor([[1.0, -3.0, 10.0], [3.0, 5.0, 10.5]], dtype=torch.float64)
    bn = normlib.BatchNorm1d(3, eps=1e-12).double()
    y = bn(x)
    expected = torch.tensor([[-1.0, -1.0, -1.0], [1.0, 1.0, 1.0]], dtype=torch.float64)
    assert_close(y, expected, tol=(1e-9, 0))
    ref = nn.BatchNorm1d(3, eps=1e-12).double()
    assert_close(y, ref(x))


@pytest.mark.parametrize("kind,spatial", BN_KINDS)
def test_running_var_uses_unbiased_variance(kind, spatial):
    gen = make_gen(3)
    shape = (2, 3) + (2,) * spatial
    x = randn(shape, gen)
    dims = [0] + list(range(2, x.dim()))
    bn = getattr(normlib, kind)(3, momentum=1.0).double()
    bn(x)
    n = x.numel() // 3
    unbiased = x.var(dim=dims, correction=1)
    biased = x.var(dim=dims, correction=0)
    assert_close(bn.running_var, unbiased)
    assert not torch.allclose(bn.running_var, biased)
    assert_close(unbiased, biased * n / (n - 1))  # sanity of the test itself
    assert_close(bn.running_mean, x.mean(dim=dims))


def test_momentum_is_torch_convention_not_keras():
    # torch: running = (1 - m) * running + m * batch, m = 0.1 weighs the NEW value.
    # Keras would be running = m * running + (1 - m) * batch with m = 0.99 on the old one;
    # swapping roles with m = 0.1 would give 0.9 * batch after one step.
    gen = make_gen(4)
    x1, x2 = randn((6, 4), gen), randn((6, 4), gen)
    bn = normlib.BatchNorm1d(4).double()
    assert bn.momentum == 0.1
    bn(x1)
    m1, v1 = x1.mean(0), x1.var(0, correction=1)
    assert_close(bn.running_mean, 0.1 * m1, tol=(1e-12, 0))
    assert_close(bn.running_var, 0.9 * 1.0 + 0.1 * v1, tol=(1e-12, 0))
    bn(x2)
    m2, v2 = x2.mean(0), x2.var(0, correction=1)
    assert_close(bn.running_mean, 0.9 * (0.1 * m1) + 0.1 * m2, tol=(1e-12, 0))
    assert_close(bn.running_var, 0.9 * (0.9 + 0.1 * v1) + 0.1 * v2, tol=(1e-12, 0))


@pytest.mark.parametrize("kind,spatial", BN_KINDS)
def test_momentum_none_is_cumulative_average(kind, spatial):
    gen = make_gen(5)
    bn = getattr(normlib, kind)(3, momentum=None).double()
    assert bn.num_batches_tracked.dtype == torch.int64
    xs = [randn((randint(2, 5, gen), 3) + (2,) * spatial, gen) for _ in range(4)]
    dims = [0] + list(range(2, xs[0].dim()))
    for k, x in enumerate(xs, start=1):
        bn.train()
        bn(x)
        assert bn.num_batches_tracked.dtype == torch.int64
        assert int(bn.num_batches_tracked) == k
        # Cumulative average of the per-batch statistics (initial value weighs nothing).
        means = torch.stack([xx.mean(dim=dims) for xx in xs[:k]]).mean(0)
        vars_ = torch.stack([xx.var(dim=dims, correction=1) for xx in xs[:k]]).mean(0)
        assert_close(bn.running_mean, means, tol=(1e-12, 1e-12))
        assert_close(bn.running_var, vars_, tol=(1e-12, 1e-12))
        bn.eval()
        bn(x)  # eval: no update, no increment
        assert int(bn.num_batches_tracked) == k
        assert_close(bn.running_mean, means, tol=(1e-12, 1e-12))


@pytest.mark.parametrize("momentum", [0.1, 0.0, 1.0])
def test_num_batches_tracked_increments_every_training_forward(momentum):
    bn = normlib.BatchNorm2d(2, momentum=momentum)
    x = torch.randn(3, 2, 2, 2)
    for k in range(1, 4):
        bn(x)
        assert int(bn.num_batches_tracked) == k
    bn.eval()
    bn(x)
    assert int(bn.num_batches_tracked) == 3


def test_momentum_zero_and_one():
    gen = make_gen(6)
    x = randn((5, 3, 2, 2), gen)
    bn0 = normlib.BatchNorm2d(3, momentum=0.0).double()
    bn0(x)
    assert torch.equal(bn0.running_mean, torch.zeros(3, dtype=torch.float64))
    assert torch.equal(bn0.running_var, torch.ones(3, dtype=torch.float64))
    assert int(bn0.num_batches_tracked) == 1
    bn1 = normlib.BatchNorm2d(3, momentum=1.0).double()
    bn1(randn((5, 3, 2, 2), gen))
    bn1(x)  # only the last batch counts
    assert_close(bn1.running_mean, x.mean((0, 2, 3)))
    assert_close(bn1.running_var, x.var((0, 2, 3), correction=1))


@pytest.mark.parametrize("kind,spatial", BN_KINDS)
def test_no_running_stats_uses_batch_stats_in_eval(kind, spatial):
    gen = make_gen(7)
    got = getattr(normlib, kind)(4, track_running_stats=False).double()
    ref = getattr(nn, kind)(4, track_running_stats=False).double()
    assert got.running_mean is None and got.running_var is None and got.num_batches_tracked is None
    assert list(got.state_dict()) == list(ref.state_dict())
    assert [n for n, _ in got.named_buffers()] == []
    x = randn((3, 4) + (3,) * spatial, gen)
    got.eval()
    dims = [0] + list(range(2, x.dim()))
    expected = (x - x.mean(dims, keepdim=True)) / torch.sqrt(x.var(dims, correction=0, keepdim=True) + 1e-5)
    assert_close(got(x), expected)
    got.train()
    assert_close(got(x), expected)


@pytest.mark.parametrize("cls", ["BatchNorm1d", "BatchNorm2d", "BatchNorm3d"])
def test_affine_off_has_no_parameters(cls):
    got = getattr(normlib, cls)(5, affine=False)
    ref = getattr(nn, cls)(5, affine=False)
    assert got.weight is None and got.bias is None
    assert list(got.parameters()) == []
    assert list(got.state_dict()) == list(ref.state_dict())
    on = getattr(normlib, cls)(5)
    assert isinstance(on.weight, nn.Parameter) and isinstance(on.bias, nn.Parameter)
    assert torch.equal(on.weight, torch.ones(5)) and torch.equal(on.bias, torch.zeros(5))


@pytest.mark.parametrize("kind,spatial", BN_KINDS)
def test_eval_uses_running_stats(kind, spatial):
    gen = make_gen(8)
    bn = getattr(normlib, kind)(3).double()
    randomize_params(bn, gen)
    bn.eval()
    x = randn((2, 3) + (2,) * spatial, gen)
    shape = (1, 3) + (1,) * spatial
    rm, rv = bn.running_mean.view(shape), bn.running_var.view(shape)
    w, b = bn.weight.view(shape), bn.bias.view(shape)
    expected = (x - rm) / torch.sqrt(rv + bn.eps) * w + b
    assert_close(bn(x), expected)
    # one sample alone gives the same answer in eval (no dependence on the batch)
    assert_close(bn(x[:1]), expected[:1])


def test_buffers_and_attributes_match_torch():
    for cls in ("BatchNorm1d", "BatchNorm2d", "BatchNorm3d"):
        got, ref = getattr(normlib, cls)(7), getattr(nn, cls)(7)
        assert isinstance(got, nn.Module)
        for attr in ("num_features", "eps", "momentum", "affine", "track_running_stats"):
            assert getattr(got, attr) == getattr(ref, attr), (cls, attr)
        assert [n for n, _ in got.named_buffers()] == [n for n, _ in ref.named_buffers()]
        assert [n for n, _ in got.named_parameters()] == [n for n, _ in ref.named_parameters()]
        for n, b in ref.named_buffers():
            assert torch.equal(dict(got.named_buffers())[n], b), n
            assert dict(got.named_buffers())[n].dtype == b.dtype, n


@pytest.mark.parametrize(
    "name, shape", [("BatchNorm1d", (0, 3)), ("BatchNorm2d", (2, 3, 0, 2)), ("InstanceNorm1d", (2, 3, 0))]
)
@pytest.mark.parametrize("momentum", [0.1, None])
def test_empty_batch_leaves_running_stats_alone(name, shape, momentum):
    """A batch with no values has no statistics: the running ones stay as they were (torch too)."""
    kwargs = {"momentum": momentum, "track_running_stats": True}
    ref, got = getattr(nn, name)(3, **kwargs), getattr(normlib, name)(3, **kwargs)
    for module in (ref, got):
        torch.manual_seed(5)
        module(torch.randn([size or 2 for size in shape]))  # a real batch first: stats not the defaults
    before = {key: value.clone() for key, value in got.state_dict().items()}
    for module in (ref, got):
        module(torch.randn(shape))
    for key, value in ref.state_dict().items():
        assert_close(got.state_dict()[key], value, dtype=torch.float32, msg=key)
    assert_close(got.running_mean, before["running_mean"])
    assert_close(got.running_var, before["running_var"])


def test_instance_norm_empty_batch_keeps_running_stats():
    """A deliberate difference: torch 2.13's InstanceNorm turns its running stats into NaN
    on a batch of N = 0 (the mean of no per-instance statistics); normlib keeps them."""
    got = normlib.InstanceNorm1d(3, track_running_stats=True)
    got(torch.randn(2, 3, 4))
    before = got.running_mean.clone(), got.running_var.clone()
    assert got(torch.randn(0, 3, 4)).shape == (0, 3, 4)
    assert torch.equal(got.running_mean, before[0]) and torch.equal(got.running_var, before[1])
