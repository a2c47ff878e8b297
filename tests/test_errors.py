"""Bad inputs raise torch's exception type, with a message that names the problem.

Each case runs torch first to learn its exception type (so the test follows torch if torch
changes), then asserts normlib raises that same type with a message matching a key phrase.
"""

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import normlib
from normlib import functional as NF


def torch_exception(fn):
    try:
        fn()
    except Exception as e:  # noqa: BLE001 - we want whatever torch raises
        return type(e), str(e)
    pytest.fail("torch did not raise: the case is wrong")


def check_same_error(torch_fn, normlib_fn, pattern):
    __tracebackhide__ = True
    etype, emsg = torch_exception(torch_fn)
    with pytest.raises(Exception) as info:
        normlib_fn()
    assert type(info.value) is etype, (
        f"normlib raised {type(info.value).__name__}({info.value}); torch raises {etype.__name__}({emsg})"
    )
    import re

    assert re.search(pattern, str(info.value)), f"message {str(info.value)!r} does not match {pattern!r}"


# (id, torch call, normlib call, regex the message must match)
CASES = [
    # wrong rank
    ("bn1d_4D", lambda m: m.BatchNorm1d(4)(torch.randn(2, 4, 3, 3)), r"expected 2D or 3D input \(got 4D input\)"),
    ("bn2d_3D", lambda m: m.BatchNorm2d(4)(torch.randn(2, 4, 3)), r"expected 4D input \(got 3D input\)"),
    (
        "bn2d_5D_eval",
        lambda m: m.BatchNorm2d(4).eval()(torch.randn(2, 4, 3, 3, 3)),
        r"expected 4D input \(got 5D input\)",
    ),
    ("bn3d_4D", lambda m: m.BatchNorm3d(4)(torch.randn(2, 4, 3, 3)), r"expected 5D input \(got 4D input\)"),
    ("in1d_4D", lambda m: m.InstanceNorm1d(4)(torch.randn(2, 4, 3, 3)), r"expected 2D or 3D input \(got 4D input\)"),
    ("in2d_2D", lambda m: m.InstanceNorm2d(4)(torch.randn(2, 4)), r"expected 3D or 4D input \(got 2D input\)"),
    ("in3d_3D", lambda m: m.InstanceNorm3d(4)(torch.randn(2, 4, 3)), r"expected 4D or 5D input \(got 3D input\)"),
    # wrong channel count
    (
        "bn2d_channels_train",
        lambda m: m.BatchNorm2d(4)(torch.randn(2, 5, 3, 3)),
        r"running_mean should contain 5 elements not 4",
    ),
    (
        "bn2d_channels_eval",
        lambda m: m.BatchNorm2d(4).eval()(torch.randn(2, 5, 3, 3)),
        r"running_mean should contain 5 elements not 4",
    ),
    (
        "bn1d_channels_no_stats",
        lambda m: m.BatchNorm1d(4, track_running_stats=False)(torch.randn(3, 5)),
        r"weight should contain 5 elements not 4",
    ),
    (
        "in2d_affine_channels",
        lambda m: m.InstanceNorm2d(4, affine=True)(torch.randn(2, 5, 3, 3)),
        r"num_features \(4\).*5",
    ),
    (
        "gn_channels",
        lambda m: m.GroupNorm(2, 4)(torch.randn(2, 6, 3)),
        r"weight to be a vector of size equal to the number of channels",
    ),
    # groups not dividing channels
    ("gn_ctor_indivisible", lambda m: m.GroupNorm(3, 4), r"num_channels \(4\) must be divisible by num_groups \(3\)"),
    (
        "gn_input_indivisible",
        lambda m: m.GroupNorm(2, 4, affine=False)(torch.randn(2, 5, 3)),
        r"divisible by num_groups",
    ),
    # one value per channel in training
    (
        "bn1d_batch_of_one",
        lambda m: m.BatchNorm1d(4)(torch.randn(1, 4)),
        r"Expected more than 1 value per channel when training",
    ),
    (
        "bn1d_3D_batch_of_one",
        lambda m: m.BatchNorm1d(4)(torch.randn(1, 4, 1)),
        r"Expected more than 1 value per channel when training",
    ),
    (
        "bn2d_batch_of_one",
        lambda m: m.BatchNorm2d(4)(torch.randn(1, 4, 1, 1)),
        r"Expected more than 1 value per channel when training",
    ),
    (
        "bn_no_stats_batch_of_one",
        lambda m: m.BatchNorm1d(4, track_running_stats=False).eval()(torch.randn(1, 4)),
        r"Expected more than 1 value per channel when training",
    ),
    (
        "in2d_one_spatial",
        lambda m: m.InstanceNorm2d(4)(torch.randn(2, 4, 1, 1)),
        r"Expected more than 1 spatial element when training",
    ),
    ("gn_one_value_per_group", lambda m: m.GroupNorm(4, 4)(torch.randn(1, 4, 1, 1)), r"Expected more than 1 value"),
    # LayerNorm / RMSNorm shape mismatch
    ("ln_shape", lambda m: m.LayerNorm(5)(torch.randn(2, 4)), r"normalized_shape=\[5\].*\[2, 4\]"),
    ("ln_multi_shape", lambda m: m.LayerNorm([3, 5])(torch.randn(2, 4, 5)), r"normalized_shape=\[3, 5\]"),
    ("ln_too_few_dims", lambda m: m.LayerNorm([2, 3, 4])(torch.randn(3, 4)), r"normalized_shape"),
    # weight_norm along a dim the weight does not have
    (
        "weight_norm_dim_out_of_range",
        lambda m: (torch.nn.utils.parametrizations if m is nn else normlib).weight_norm(nn.Linear(5, 6), dim=2),
        r"Dimension out of range",
    ),
    (
        "weight_norm_negative_dim_out_of_range",
        lambda m: (torch.nn.utils.parametrizations if m is nn else normlib).weight_norm(nn.Conv1d(2, 3, 2), dim=-4),
        r"Dimension out of range",
    ),
    ("rms_shape", lambda m: m.RMSNorm(5)(torch.randn(2, 4)), r"normalized_shape=\[5\]"),
]


def test_batch_of_one_message_says_the_output_would_be_beta():
    """The normalized value of a lone value is 0; the layer would output beta, not 0."""
    layer = normlib.BatchNorm1d(4)
    with torch.no_grad():
        layer.bias.fill_(0.5)
    with pytest.raises(ValueError) as error:
        layer(torch.randn(1, 4))
    message = str(error.value)
    assert "would normalize it to 0 and output beta alone" in message
    assert "would output 0" not in message
    # what the message says: with a second value, a lone repeated value gives beta
    same = layer(torch.full((2, 4), 3.0))
    assert torch.allclose(same, layer.bias.expand(2, 4))


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_module_errors_match_torch(case):
    _, call, pattern = case
    check_same_error(lambda: call(nn), lambda: call(normlib), pattern)


FUNCTIONAL_CASES = [
    ("group_norm_indivisible", lambda f: f.group_norm(torch.randn(2, 4, 3), 3), r"divisible by num_groups"),
    ("group_norm_1D", lambda f: f.group_norm(torch.randn(4), 2), r"at least 2 dimensions"),
    (
        "batch_norm_one_value",
        lambda f: f.batch_norm(torch.randn(1, 3), None, None, training=True),
        r"Expected more than 1 value per channel when training",
    ),
    (
        "batch_norm_running_size",
        lambda f: f.batch_norm(torch.randn(4, 3), torch.zeros(2), torch.ones(2), training=True),
        r"running_mean should contain 3 elements not 2",
    ),
    ("layer_norm_shape", lambda f: f.layer_norm(torch.randn(2, 4), (5,)), r"normalized_shape"),
    (
        "layer_norm_weight_shape",
        lambda f: f.layer_norm(torch.randn(2, 4), (4,), torch.ones(3)),
        r"weight to be of same shape as normalized_shape",
    ),
    ("rms_norm_shape", lambda f: f.rms_norm(torch.randn(2, 4), (5,)), r"normalized_shape"),
    (
        "instance_norm_one_spatial",
        lambda f: f.instance_norm(torch.randn(2, 3, 1)),
        r"Expected more than 1 spatial element",
    ),
    # integer input: torch's kernels are "not implemented" for integer dtypes
    (
        "batch_norm_int",
        lambda f: f.batch_norm(torch.ones(4, 3, dtype=torch.long), None, None, training=True),
        r"not implemented for",
    ),
    ("layer_norm_int", lambda f: f.layer_norm(torch.ones(2, 3, dtype=torch.long), (3,)), r"not implemented for"),
    ("group_norm_int", lambda f: f.group_norm(torch.ones(2, 4, 3, dtype=torch.long), 2), r"not implemented for"),
]


@pytest.mark.parametrize("case", FUNCTIONAL_CASES, ids=[c[0] for c in FUNCTIONAL_CASES])
def test_functional_errors_match_torch(case):
    _, call, pattern = case
    check_same_error(lambda: call(F), lambda: call(NF), pattern)


def test_make_norm_unknown_name_lists_valid_names():
    with pytest.raises(ValueError) as info:
        normlib.make_norm("batchnorm", 8)
    for name in normlib.NORM_NAMES:
        assert repr(name) in str(info.value) or name in str(info.value), name
    assert "batchnorm" in str(info.value)


def test_errors_do_not_touch_running_stats():
    # A rejected input must not have incremented num_batches_tracked (torch checks first).
    for lib in (nn, normlib):
        bn = lib.BatchNorm2d(4)
        with pytest.raises(ValueError):
            bn(torch.randn(2, 4, 3))
        assert int(bn.num_batches_tracked) == 0, lib.__name__
