"""normlib.convert / normlib.to_torch: which layers map, and what survives the swap.

The swap is in place and shares tensors, so most tests hold on to the *old* objects
(parameters, buffers, hook handles, the optimizer) and check that they still act on the
converted model.
"""

import copy
import gc

import pytest
import torch
from conftest import assert_close, make_gen, randn, randomize_params, skip_unsupported
from torch import nn

import normlib
from normlib.convert import CONVERSIONS

# (torch class name, args, kwargs, input shape): every option the constructor reads.
SPECS = [
    ("BatchNorm1d", (4,), {}, (6, 4)),
    ("BatchNorm1d", (4,), {"momentum": None, "eps": 1e-3}, (6, 4, 3)),
    ("BatchNorm1d", (4,), {"bias": False}, (6, 4)),
    ("BatchNorm2d", (3,), {"affine": False}, (4, 3, 3, 3)),
    ("BatchNorm2d", (3,), {"track_running_stats": False, "eps": 0.5}, (4, 3, 3, 3)),
    ("BatchNorm2d", (3,), {"momentum": 0.3, "bias": False}, (4, 3, 3, 3)),
    ("BatchNorm3d", (2,), {"momentum": None}, (3, 2, 2, 3, 2)),
    ("BatchNorm3d", (2,), {"affine": False, "track_running_stats": False}, (3, 2, 2, 3, 2)),
    ("InstanceNorm1d", (3,), {}, (2, 3, 5)),
    ("InstanceNorm1d", (3,), {"affine": True, "track_running_stats": True, "momentum": None}, (2, 3, 5)),
    ("InstanceNorm2d", (3,), {"affine": True, "bias": False, "eps": 1e-2}, (2, 3, 4, 4)),
    ("InstanceNorm2d", (3,), {"track_running_stats": True, "momentum": 0.25}, (2, 3, 4, 4)),
    ("InstanceNorm3d", (2,), {"affine": True, "track_running_stats": True}, (2, 2, 3, 2, 2)),
    ("LayerNorm", ((3, 4),), {"eps": 1e-3}, (2, 5, 3, 4)),
    ("LayerNorm", (4,), {"bias": False}, (3, 4)),
    ("LayerNorm", (4,), {"elementwise_affine": False}, (3, 4)),
    ("GroupNorm", (2, 6), {"eps": 0.1}, (3, 6, 2, 2)),
    ("GroupNorm", (3, 6), {"affine": False}, (3, 6, 4)),
    ("GroupNorm", (3, 6), {"bias": False}, (3, 6, 4)),
    ("RMSNorm", ((2, 5),), {}, (3, 2, 5)),
    ("RMSNorm", (5,), {"eps": 1e-4}, (3, 5)),
    ("RMSNorm", (5,), {"elementwise_affine": False}, (3, 5)),
]
SPECS = [s for s in SPECS if hasattr(nn, s[0])]  # RMSNorm: torch >= 2.4
IDS = [f"{c}-{'-'.join(f'{k}={v}' for k, v in kw.items()) or 'default'}" for c, a, kw, s in SPECS]
CONFIG_ATTRS = [
    "num_features",
    "eps",
    "momentum",
    "affine",
    "track_running_stats",
    "normalized_shape",
    "elementwise_affine",
    "num_groups",
    "num_channels",
]


def tensors(m):
    """A module's own parameters and buffers by name (absent ones left out)."""
    return {k: t for k, t in {**m._parameters, **m._buffers}.items() if t is not None}


def assert_equal_state(got, ref, msg=""):
    """Same keys; integer tensors (num_batches_tracked) equal, float ones close."""
    assert list(got) == list(ref), msg
    for k, r in ref.items():
        if r.is_floating_point():
            assert_close(got[k], r, msg=f"{msg}: {k}")
        else:
            assert torch.equal(got[k], r), f"{msg}: {k} {got[k]} vs {r}"


def trained_torch_layer(name, args, kw, shape, gen):
    """A torch layer in float64 with random gamma/beta and running stats moved by two steps."""
    m = randomize_params(getattr(nn, name)(*args, **kw).double(), gen)
    for _ in range(2):
        m(randn(shape, gen))
    return m


def test_specs_cover_every_conversion():
    """Every class in CONVERSIONS is tested below, and maps to normlib's class of the same name."""
    assert {getattr(nn, c) for c, *_ in SPECS} == set(CONVERSIONS)
    for torch_cls, normlib_cls in CONVERSIONS.items():
        assert normlib_cls is getattr(normlib, torch_cls.__name__)
        assert normlib_cls.__module__.startswith("normlib.")


@pytest.mark.parametrize("spec", SPECS, ids=IDS)
def test_each_class_maps_and_keeps_its_options(spec):
    """convert gives the normlib class with the same configuration, tensors and outputs;
    to_torch gives the torch class back, again with the same configuration."""
    name, args, kw, shape = spec
    gen = make_gen(1)
    old = trained_torch_layer(name, args, kw, shape, gen)
    ref = copy.deepcopy(old)
    old_tensors = tensors(old)
    new = normlib.convert(old)
    assert type(new) is getattr(normlib, name)
    assert new.extra_repr() == ref.extra_repr()
    for attr in CONFIG_ATTRS:
        if hasattr(ref, attr):
            assert getattr(new, attr) == getattr(ref, attr), attr
            assert type(getattr(new, attr)) is type(getattr(ref, attr)), attr
    new_tensors = tensors(new)
    assert list(new_tensors) == list(old_tensors)
    for k, t in old_tensors.items():
        assert new_tensors[k] is t, f"{k} is not the old layer's tensor"
    for training in (True, False):
        new.train(training)
        ref.train(training)
        x = randn(shape, gen)
        assert_close(new(x), ref(x), msg=f"{name}{kw} {'train' if training else 'eval'}")
        assert_equal_state(tensors(new), tensors(ref), msg=f"{name}{kw}")
    back = normlib.to_torch(new)
    assert type(back) is getattr(nn, name)
    assert back.extra_repr() == ref.extra_repr()
    assert all(tensors(back)[k] is t for k, t in old_tensors.items())


def test_convert_is_in_place_and_returns_the_model():
    """A container is changed in place and returned; its other modules are the same objects."""
    conv, act = nn.Conv2d(3, 4, 3), nn.ReLU()
    model = nn.Sequential(conv, nn.BatchNorm2d(4), act)
    assert normlib.convert(model) is model
    assert model[0] is conv and model[2] is act
    assert type(model[1]) is normlib.BatchNorm2d
    assert normlib.to_torch(model) is model
    assert type(model[1]) is nn.BatchNorm2d


def test_convert_reaches_nested_lists_and_dicts():
    """Norm layers inside ModuleList, ModuleDict and nested Sequentials are all converted."""
    model = nn.ModuleDict(
        {
            "a": nn.ModuleList([nn.LayerNorm(3), nn.Sequential(nn.Linear(3, 3), nn.GroupNorm(1, 3))]),
            "b": nn.Sequential(nn.Sequential(nn.InstanceNorm1d(3))),
        }
    )
    normlib.convert(model)
    kinds = [type(m) for m in model.modules()]
    assert not set(kinds) & set(CONVERSIONS)
    assert {normlib.LayerNorm, normlib.GroupNorm, normlib.InstanceNorm1d} <= set(kinds)


def test_root_norm_layer_returns_the_new_layer():
    """When the root is a norm layer, convert/to_torch return its replacement, tensors shared."""
    ln = nn.LayerNorm(4)
    new = normlib.convert(ln)
    assert type(new) is normlib.LayerNorm and new is not ln
    assert new.weight is ln.weight and new.bias is ln.bias
    back = normlib.to_torch(new)
    assert type(back) is nn.LayerNorm and back.weight is ln.weight


def test_optimizer_made_before_convert_still_trains_the_model():
    """The parameters are the same objects: an SGD (with momentum state) built on the torch
    model updates the converted one exactly as it updates an unconverted copy."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 6), nn.BatchNorm1d(6), nn.ReLU(), nn.Linear(6, 3), nn.LayerNorm(3)).double()
    ref = copy.deepcopy(model)
    params_before = list(model.parameters())
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    opt_ref = torch.optim.SGD(ref.parameters(), lr=0.1, momentum=0.9)
    normlib.convert(model)
    assert type(model[1]) is normlib.BatchNorm1d and type(model[4]) is normlib.LayerNorm
    assert all(a is b for a, b in zip(model.parameters(), params_before))
    gen = make_gen(2)
    w0 = model[1].weight.detach().clone()
    for _ in range(3):
        x, g = randn((8, 5), gen), randn((8, 3), gen)
        for m, o in ((model, opt), (ref, opt_ref)):
            o.zero_grad()
            m(x).backward(g)
            o.step()
    assert not torch.equal(model[1].weight, w0), "the optimizer did not move the converted layer's weight"
    assert_equal_state(model.state_dict(), ref.state_dict(), msg="after 3 SGD steps")


def test_requires_grad_false_is_kept():
    """A frozen gamma stays frozen (no gradient) while beta still trains."""
    bn = nn.BatchNorm2d(3)
    bn.weight.requires_grad_(False)
    new = normlib.convert(bn)
    assert new.weight.requires_grad is False and new.bias.requires_grad is True
    new(torch.randn(2, 3, 4, 4)).sum().backward()
    assert new.weight.grad is None and new.bias.grad is not None


def test_training_mode_is_kept_per_layer():
    """One layer in eval inside a model in train stays in eval: its running stats don't move,
    while those of the layers in train do."""
    model = nn.Sequential(
        nn.Linear(4, 5), nn.BatchNorm1d(5), nn.Sequential(nn.BatchNorm1d(5), nn.Linear(5, 5)), nn.BatchNorm1d(5)
    )
    model.train()
    model[2][0].eval()
    modes = {name: m.training for name, m in model.named_modules()}
    normlib.convert(model)
    assert {name: m.training for name, m in model.named_modules()} == modes
    assert type(model[2][0]) is normlib.BatchNorm1d and model[2][0].training is False
    with torch.no_grad():
        model(torch.randn(8, 4))
    assert torch.equal(model[2][0].running_mean, torch.zeros(5))
    assert int(model[2][0].num_batches_tracked) == 0
    assert int(model[1].num_batches_tracked) == 1 and int(model[3].num_batches_tracked) == 1


def test_forward_hooks_fire_after_convert_and_handles_remove_them():
    """Forward, forward-pre (plain and with kwargs) and always-called hooks registered on the
    torch layer run on the normlib layer, which they receive as ``module``; remove() works."""
    calls = []
    bn = nn.BatchNorm1d(3)
    handles = [
        bn.register_forward_pre_hook(lambda m, args: calls.append(("pre", m))),
        bn.register_forward_pre_hook(lambda m, args, kwargs: calls.append(("pre_kw", m)), with_kwargs=True),
        bn.register_forward_hook(lambda m, args, out: calls.append(("fwd", m))),
        bn.register_forward_hook(lambda m, args, kwargs, out: calls.append(("fwd_kw", m)), with_kwargs=True),
        bn.register_forward_hook(lambda m, args, out: calls.append(("always", m)), always_call=True),
    ]
    model = normlib.convert(nn.Sequential(bn))
    new = model[0]
    assert type(new) is normlib.BatchNorm1d
    model(torch.randn(4, 3))
    assert [k for k, _ in calls] == ["pre", "pre_kw", "fwd", "fwd_kw", "always"]
    assert all(m is new for _, m in calls)
    for h in handles:
        h.remove()
    calls.clear()
    model(torch.randn(4, 3))
    assert calls == []


def test_forward_hook_can_change_the_output_after_convert():
    """A forward hook's return value still replaces the converted layer's output."""
    ln = nn.LayerNorm(3)
    ln.register_forward_hook(lambda m, args, out: out * 0 + 7)
    new = normlib.convert(ln)
    assert torch.equal(new(torch.randn(2, 3)), torch.full((2, 3), 7.0))


@pytest.mark.parametrize("direction", ["convert", "to_torch"])
def test_backward_hooks_fire_after_convert_and_handles_remove_them(direction):
    """Full backward hooks and full backward pre-hooks move with the layer (both ways)."""
    calls = []
    gn = nn.GroupNorm(1, 3) if direction == "convert" else normlib.GroupNorm(1, 3)
    handles = [
        gn.register_full_backward_pre_hook(lambda m, grad_out: calls.append(("bw_pre", m))),
        gn.register_full_backward_hook(lambda m, grad_in, grad_out: calls.append(("bw", m))),
    ]
    new = getattr(normlib, direction)(gn)
    assert type(new) is not type(gn)
    x = torch.randn(2, 3, 4, requires_grad=True)
    new(x).sum().backward()
    assert [k for k, _ in calls] == ["bw_pre", "bw"]
    assert all(m is new for _, m in calls)
    for h in handles:
        h.remove()
    calls.clear()
    new(x).sum().backward()
    assert calls == []


def test_state_dict_hooks_fire_after_convert_and_handles_remove_them():
    """state_dict pre/post hooks and load_state_dict pre/post hooks move with the layer: they
    receive the new layer, and still work once the old torch layer is garbage-collected
    (torch binds a load_state_dict pre-hook to its module by a weak reference)."""
    calls = []
    model = nn.Sequential(nn.LayerNorm(3))
    handles = [
        model[0].register_state_dict_pre_hook(lambda m, prefix, keep_vars: calls.append(("sd_pre", m))),
        model[0].register_state_dict_post_hook(lambda m, sd, prefix, meta: calls.append(("sd_post", m))),
        model[0].register_load_state_dict_pre_hook(lambda m, sd, prefix, *rest: calls.append(("load_pre", m))),
        model[0].register_load_state_dict_post_hook(lambda m, keys: calls.append(("load_post", m))),
    ]
    normlib.convert(model)
    gc.collect()  # nothing holds the torch layer any more
    new = model[0]
    assert type(new) is normlib.LayerNorm
    sd = model.state_dict()
    model.load_state_dict(sd)
    assert [k for k, _ in calls] == ["sd_pre", "sd_post", "load_pre", "load_post"]
    assert all(m is new for _, m in calls)
    for h in handles:
        h.remove()
    calls.clear()
    model.load_state_dict(model.state_dict())
    assert calls == []


def test_shared_layer_becomes_one_normlib_layer_everywhere():
    """A layer used twice in one container, and in two containers, becomes one normlib layer
    used at every place; the state_dict keys (one per place) stay the same."""
    bn = nn.BatchNorm1d(3)
    twice = nn.Sequential(bn, nn.ReLU(), bn)
    keys = list(twice.state_dict())
    normlib.convert(twice)
    assert type(twice[0]) is normlib.BatchNorm1d
    assert twice[2] is twice[0], f"second use is {type(twice[2])}"
    assert list(twice.state_dict()) == keys

    ln = nn.LayerNorm(3)
    model = nn.Module()
    model.a = nn.Sequential(ln)
    model.b = nn.Sequential(nn.Linear(3, 3), ln)
    normlib.convert(model)
    assert type(model.a[0]) is normlib.LayerNorm and model.b[1] is model.a[0]
    normlib.to_torch(model)
    assert type(model.a[0]) is nn.LayerNorm and model.b[1] is model.a[0]


def test_dtype_and_device_are_kept(device):
    """float64 parameters and buffers keep their dtype and device (and stay the same tensors);
    num_batches_tracked stays int64; the converted model runs there."""
    skip_unsupported(device, torch.float64)
    model = nn.Sequential(nn.Conv2d(2, 4, 3), nn.BatchNorm2d(4), nn.GroupNorm(2, 4), nn.InstanceNorm2d(4, affine=True))
    model = model.to(device=device, dtype=torch.float64)
    before = {k: (v, v.device, v.dtype) for k, v in model.state_dict(keep_vars=True).items()}
    normlib.convert(model)
    after = model.state_dict(keep_vars=True)
    assert list(after) == list(before)
    for k, (t, dev, dt) in before.items():
        assert after[k] is t and after[k].device == dev and after[k].dtype == dt, k
    assert model[1].num_batches_tracked.dtype == torch.int64
    assert model[1].weight.dtype == torch.float64 and model[1].weight.device.type == device.type
    y = model(torch.randn(2, 2, 5, 5, dtype=torch.float64, device=device))
    assert y.dtype == torch.float64 and y.device.type == device.type


class MyBatchNorm2d(nn.BatchNorm2d):
    """A user's subclass: it may change forward, so convert must refuse it."""


class MyNormlibLayerNorm(normlib.LayerNorm):
    pass


def test_subclass_and_lazy_layers_raise_type_error_naming_the_class():
    """A subclass of a norm class and a lazy layer raise TypeError with the class name, from
    anywhere in the model; once a lazy layer has run it is an ordinary layer and converts."""
    with pytest.raises(TypeError, match="MyBatchNorm2d"):
        normlib.convert(nn.Sequential(nn.Conv2d(3, 3, 1), MyBatchNorm2d(3)))
    with pytest.raises(TypeError, match="MyBatchNorm2d"):
        normlib.convert(MyBatchNorm2d(3))
    with pytest.raises(TypeError, match="MyNormlibLayerNorm"):
        normlib.to_torch(nn.Sequential(MyNormlibLayerNorm(3)))
    lazy = nn.Sequential(nn.Conv2d(3, 3, 1), nn.LazyBatchNorm2d())
    with pytest.raises(TypeError, match="LazyBatchNorm2d"):
        normlib.convert(lazy)
    lazy(torch.randn(2, 3, 4, 4))
    assert type(normlib.convert(lazy)[1]) is normlib.BatchNorm2d


@pytest.mark.parametrize("fn", [normlib.convert, normlib.to_torch])
@pytest.mark.parametrize("arg", [torch.zeros(3), [nn.BatchNorm1d(3)], None], ids=["tensor", "list", "none"])
def test_non_module_raises_type_error(fn, arg):
    """Anything but an nn.Module is refused with a TypeError that names what was given."""
    with pytest.raises(TypeError, match=type(arg).__name__):
        fn(arg)


def small_model(seed):
    """A torch model with each kind of running-stat and affine tensor, in float64."""
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(2, 4, 3),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.GroupNorm(2, 4),
        nn.InstanceNorm2d(4, affine=True, track_running_stats=True),
        nn.Flatten(2),
        nn.LayerNorm(9),
    ).double()


def train_a_bit(model, gen):
    model.train()
    for _ in range(2):
        model(randn((3, 2, 5, 5), gen))
    return randomize_params(model, gen)


def test_state_dict_keys_unchanged_and_checkpoints_load_across():
    """The keys are identical after convert; a torch checkpoint loads (strict) into the
    converted model, which then computes as the torch model does; and its state_dict loads back
    into a fresh torch model."""
    gen = make_gen(3)
    model = small_model(0)
    keys = list(model.state_dict())
    normlib.convert(model)
    assert list(model.state_dict()) == keys
    trained = train_a_bit(small_model(1), gen)
    model.load_state_dict(trained.state_dict(), strict=True)
    fresh = small_model(2)
    fresh.load_state_dict(model.state_dict(), strict=True)
    for k, v in trained.state_dict().items():
        assert torch.equal(model.state_dict()[k], v) and torch.equal(fresh.state_dict()[k], v), k
    for training in (False, True):
        x = randn((3, 2, 5, 5), gen)
        for m in (trained, model, fresh):
            m.train(training)
        y = trained(x)
        assert_close(model(x), y, msg=f"converted ({'train' if training else 'eval'})")
        assert torch.equal(fresh(x), y)


def test_rmsnorm_has_no_bias_attribute_like_torch():
    """torch's RMSNorm has no ``bias`` at all; normlib's neither, before and after a round trip."""
    assert not hasattr(nn.RMSNorm(3), "bias")
    assert not hasattr(normlib.RMSNorm(3), "bias")
    back = normlib.to_torch(nn.Sequential(normlib.RMSNorm(3)))
    assert list(back[0]._parameters) == ["weight"]
