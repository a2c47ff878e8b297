"""normlib.FrozenBatchNorm2d against torch.nn.BatchNorm2d in eval() mode, and the state-dict
layout of torchvision's FrozenBatchNorm2d (weight, bias, running_mean, running_var)."""

import pytest
import torch

import normlib


def _trained_batchnorm(channels=4, affine=True, seed=0):
    torch.manual_seed(seed)
    bn = torch.nn.BatchNorm2d(channels, affine=affine)
    with torch.no_grad():
        for _ in range(3):
            bn(3 * torch.randn(8, channels, 5, 5) + 2)
        if affine:
            bn.weight.copy_(torch.rand(channels) + 0.5)
            bn.bias.copy_(torch.randn(channels))
    return bn.eval()


def test_state_dict_keys_buffers_and_no_parameters():
    frozen = normlib.FrozenBatchNorm2d(6)
    assert list(frozen.state_dict()) == ["weight", "bias", "running_mean", "running_var"]
    assert list(frozen.parameters()) == []
    assert torch.equal(frozen.weight, torch.ones(6)) and not frozen.bias.any()
    assert repr(frozen) == "FrozenBatchNorm2d(6, eps=1e-05)"


@pytest.mark.parametrize("affine", [True, False])
def test_equals_batchnorm_in_eval_mode_in_either_mode(affine):
    bn = _trained_batchnorm(affine=affine)
    frozen = normlib.FrozenBatchNorm2d.from_batchnorm(bn)
    x = 2 * torch.randn(3, 4, 7, 7) - 1
    with torch.no_grad():
        expected = bn(x)
        for mode in (True, False):
            torch.testing.assert_close(frozen.train(mode)(x), expected)


def test_forward_changes_no_buffer_and_gradients_reach_only_the_input():
    frozen = normlib.FrozenBatchNorm2d.from_batchnorm(_trained_batchnorm())
    before = {k: v.clone() for k, v in frozen.state_dict().items()}
    x = torch.randn(2, 4, 3, 3, requires_grad=True)
    frozen.train()(x).sum().backward()
    assert all(torch.equal(before[k], v) for k, v in frozen.state_dict().items())
    scale = frozen.weight / torch.sqrt(frozen.running_var + frozen.eps)
    torch.testing.assert_close(x.grad, scale.reshape(1, -1, 1, 1).expand_as(x))


def test_loads_a_batchnorm_checkpoint_strictly_dropping_the_counter():
    bn = _trained_batchnorm()
    state = bn.state_dict()
    assert "num_batches_tracked" in state
    frozen = normlib.FrozenBatchNorm2d(4)
    frozen.load_state_dict(state)  # strict=True
    assert "num_batches_tracked" in state  # the caller's dict is left alone
    for key in ("weight", "bias", "running_mean", "running_var"):
        assert torch.equal(getattr(frozen, key), state[key])
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), _trained_batchnorm())
    frozen_model = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), normlib.FrozenBatchNorm2d(4))
    frozen_model.load_state_dict(model.state_dict())
    x = torch.randn(2, 1, 6, 6)
    with torch.no_grad():
        torch.testing.assert_close(frozen_model(x), model.eval()(x))
    with pytest.raises(RuntimeError, match="running_var"):
        normlib.FrozenBatchNorm2d(4).load_state_dict({"weight": torch.ones(4)})


def test_from_batchnorm_copies_and_rejects_layers_without_statistics():
    bn = _trained_batchnorm()
    frozen = normlib.FrozenBatchNorm2d.from_batchnorm(bn)
    with torch.no_grad():
        bn.running_mean.add_(1.0)
    assert not torch.equal(frozen.running_mean, bn.running_mean)
    ours = normlib.BatchNorm2d(4).eval()
    x = torch.randn(2, 4, 3, 3)
    with torch.no_grad():
        torch.testing.assert_close(normlib.FrozenBatchNorm2d.from_batchnorm(ours)(x), ours(x))
    with pytest.raises(ValueError, match="running statistics"):
        normlib.FrozenBatchNorm2d.from_batchnorm(torch.nn.BatchNorm2d(4, track_running_stats=False))


def test_moves_with_to_and_keeps_dtype():
    frozen = normlib.FrozenBatchNorm2d(3).to(torch.float64)
    assert all(b.dtype == torch.float64 for b in frozen.buffers())
    assert frozen(torch.randn(1, 3, 2, 2, dtype=torch.float64)).dtype == torch.float64
