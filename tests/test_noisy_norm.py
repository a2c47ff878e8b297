"""normlib.lab.models.NoisyNorm: per-channel noise after a normalization layer (Santurkar et al. 2018)."""

import pytest
import torch

import normlib
from normlib.lab import models


def test_training_output_is_the_drawn_scale_and_shift_of_the_norm(device):
    torch.manual_seed(0)
    bn = normlib.BatchNorm2d(3).to(device)
    noisy = models.NoisyNorm(normlib.BatchNorm2d(3), scale=(0.5, 2.0), shift=(-2.0, 1.0)).to(device)
    x = torch.randn(4, 3, 5, 5, device=device) * 3 + 1
    out = noisy(x)
    a, b = noisy.last_scale, noisy.last_shift
    assert a.shape == b.shape == (3,) and a.device == out.device
    assert ((0.5 <= a) & (a <= 2.0)).all() and ((-2.0 <= b) & (b <= 1.0)).all()
    torch.testing.assert_close(out, bn(x) * a.reshape(1, 3, 1, 1) + b.reshape(1, 3, 1, 1))
    # One draw per channel, shared by the batch: each channel's mean moves to b, its std to a.
    torch.testing.assert_close(out.mean(dim=(0, 2, 3)), b, atol=1e-5, rtol=0)
    torch.testing.assert_close(out.std(dim=(0, 2, 3), correction=0), a, atol=1e-4, rtol=1e-4)
    # A new draw at every training-mode call.
    noisy(x)
    assert not torch.equal(noisy.last_scale, a) and not torch.equal(noisy.last_shift, b)


def test_eval_uses_the_expected_noise():
    torch.manual_seed(0)
    x = torch.randn(16, 4)
    default = models.NoisyNorm(normlib.BatchNorm1d(4))
    default(x)  # one training step moves the running statistics
    default.eval()
    torch.testing.assert_close(default(x), default.norm(x))  # E[a] = 1, E[b] = 0: the identity
    skewed = models.NoisyNorm(normlib.BatchNorm1d(4), scale=(1.0, 3.0), shift=(0.0, 1.0)).eval()
    torch.testing.assert_close(skewed(x), 2.0 * skewed.norm(x) + 0.5)


def test_the_noise_averages_to_its_expectation():
    torch.manual_seed(0)
    noisy = models.NoisyNorm(torch.nn.Identity())
    x = torch.randn(8, 200)
    scales, shifts = [], []
    for _ in range(200):
        noisy(x)
        scales.append(noisy.last_scale)
        shifts.append(noisy.last_shift)
    scales, shifts = torch.stack(scales), torch.stack(shifts)
    assert abs(float(scales.mean()) - 1.0) < 0.01 and abs(float(shifts.mean())) < 0.01
    assert abs(float(scales.var()) - 1.5**2 / 12) < 0.01  # U(0.25, 1.75): variance 1.5^2 / 12


def test_generator_makes_draws_reproducible_and_seed_controls_the_default():
    x = torch.randn(8, 5)
    draws = []
    for _ in range(2):
        noisy = models.NoisyNorm(normlib.BatchNorm1d(5), generator=torch.Generator().manual_seed(7))
        noisy(x)
        draws.append(noisy.last_shift)
    assert torch.equal(*draws)
    outputs = []
    for _ in range(2):
        normlib.seed(3)
        outputs.append(models.NoisyNorm(normlib.BatchNorm1d(5))(x))
    assert torch.equal(*outputs)


def test_bad_ranges_and_inputs_raise_clear_errors():
    with pytest.raises(ValueError, match="scale must be a range"):
        models.NoisyNorm(torch.nn.Identity(), scale=(1.5, 0.5))
    with pytest.raises(ValueError, match="scale must be a range"):
        models.NoisyNorm(torch.nn.Identity(), scale=(-1.0, 1.0))
    with pytest.raises(ValueError, match="shift must be a range"):
        models.NoisyNorm(torch.nn.Identity(), shift=(1.0, -1.0))
    with pytest.raises(ValueError, match=r"shape \(N, C, \*\)"):
        models.NoisyNorm(torch.nn.Identity())(torch.randn(5))


def test_in_an_mlp_the_inner_norm_is_found_and_state_dict_keys_are_the_norms():
    net = models.mlp(6, 2, hidden=(4,), norm=lambda w: models.NoisyNorm(normlib.BatchNorm1d(w)))
    assert list(models.norm_layers(net)) == ["norm1.norm"]
    assert "norm1.norm.running_mean" in net.state_dict()
    assert "scale=U(0.25, 1.75)" in repr(net.norm1)
