"""normlib.default_num_groups never silently degenerates to GroupNorm's ends.

A bare "largest divisor of C up to 32" rule returns G = C (InstanceNorm) for every C <= 32
and G = 1 (LayerNorm) for a prime C > 32. These tests fail on that rule.
"""

import pytest
import torch

import normlib


@pytest.mark.parametrize("channels", [4, 6, 8, 12, 16, 20, 24, 32, 40, 48, 64, 96, 128, 256, 512, 33, 100])
def test_default_is_strictly_between_layernorm_and_instancenorm(channels):
    groups = normlib.default_num_groups(channels)
    assert channels % groups == 0
    assert 1 < groups < channels  # neither LayerNorm's statistics nor InstanceNorm's
    assert groups <= 32 and channels // groups >= 2
    layer = normlib.make_norm("gn", channels)
    assert layer.num_groups == groups
    # The layer's statistics really are shared by C/G channels: perturbing channel 0
    # moves exactly the outputs of the channels of its group.
    x = torch.randn(2, channels, 3, 3)
    changed = x.clone()
    changed[0, 0] += 3.0
    with torch.no_grad():
        moved = (layer(changed) - layer(x)).abs().amax(dim=(2, 3))[0] > 1e-6
    assert int(moved.sum()) == channels // groups


def test_narrow_layers_get_groups_of_at_least_two_channels():
    # the old rule: 16 -> 16 and 32 -> 32 groups, i.e. InstanceNorm
    assert normlib.default_num_groups(16) == 8
    assert normlib.default_num_groups(32) == 16
    assert normlib.default_num_groups(8) == 4
    # wide layers keep the GN paper's G = 32
    assert normlib.default_num_groups(64) == 32
    assert normlib.default_num_groups(2048) == 32
    # a larger minimum group size is honoured
    assert normlib.default_num_groups(64, min_group_size=4) == 16
    assert normlib.default_num_groups(24, max_groups=4) == 4


@pytest.mark.parametrize("channels", [1, 2, 3, 5, 7, 37, 101])
def test_only_an_end_is_possible_raises(channels):
    with pytest.raises(ValueError, match="Pass num_groups explicitly"):
        normlib.default_num_groups(channels)
    with pytest.raises(ValueError, match="LayerNorm"):
        normlib.make_norm("gn", channels)
    # asking for an end explicitly still works
    assert normlib.make_norm("gn", channels, num_groups=channels).num_groups == channels
    assert normlib.make_norm("gn", channels, num_groups=1).num_groups == 1


def test_invalid_arguments_raise():
    with pytest.raises(ValueError, match="positive"):
        normlib.default_num_groups(0)
    with pytest.raises(ValueError, match="positive"):
        normlib.default_num_groups(16, min_group_size=0)
    with pytest.raises(ValueError, match="Pass num_groups"):
        normlib.default_num_groups(16, min_group_size=16)  # only G = 1 left
