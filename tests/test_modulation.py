"""normlib.lab.modulation: conditional InstanceNorm, StyleGAN's AdaIN and StyleGAN2's
modulated, demodulated convolution."""

import pytest
import torch

from normlib.functional import adain, instance_norm
from normlib.lab import modulation


def test_conditional_instance_norm_uses_the_labels_row():
    torch.manual_seed(0)
    layer = modulation.ConditionalInstanceNorm2d(3, num_classes=4)
    with torch.no_grad():
        layer.weight.copy_(torch.rand(4, 3) + 0.5)
        layer.bias.copy_(torch.randn(4, 3))
    x, labels = 5 * torch.randn(2, 3, 6, 6) + 2, torch.tensor([3, 1])
    expected = layer.weight[labels][:, :, None, None] * instance_norm(x) + layer.bias[labels][:, :, None, None]
    torch.testing.assert_close(layer(x, labels), expected)
    assert tuple(layer.weight.shape) == (4, 3)


def test_adain_is_conditional_instance_norm_with_the_styles_statistics():
    torch.manual_seed(1)
    x, s = torch.randn(1, 3, 8, 8), 3 * torch.randn(1, 3, 8, 8) + 1
    layer = modulation.ConditionalInstanceNorm2d(3, num_classes=1)
    with torch.no_grad():
        layer.weight.copy_(torch.sqrt(s.var(dim=(2, 3), correction=0) + 1e-5))
        layer.bias.copy_(s.mean(dim=(2, 3)))
    torch.testing.assert_close(layer(x, torch.tensor([0])), adain(x, s))


def test_style_adain_starts_at_identity_affine_and_follows_w():
    torch.manual_seed(2)
    layer = modulation.StyleAdaIN(4, latent_dim=6)
    gamma, beta = layer.styles(torch.zeros(1, 6))
    torch.testing.assert_close(gamma, torch.ones(1, 4))
    torch.testing.assert_close(beta, torch.zeros(1, 4))
    x, w = torch.randn(2, 4, 5, 5), torch.randn(2, 6)
    gamma, beta = layer.styles(w)
    torch.testing.assert_close(layer(x, w), gamma[:, :, None, None] * instance_norm(x) + beta[:, :, None, None])
    torch.testing.assert_close(layer(7 * x, w), layer(x, w), atol=1e-5, rtol=1e-4)  # IN erases the scale


def test_mapping_network_depth():
    net = modulation.mapping_network(8, depth=3)
    assert sum(isinstance(m, torch.nn.Linear) for m in net) == 3
    assert tuple(net(torch.randn(5, 8)).shape) == (5, 8)
    with pytest.raises(ValueError):
        modulation.mapping_network(8, depth=0)


def test_modulated_conv_matches_per_image_convolution():
    torch.manual_seed(3)
    x, weight, styles = torch.randn(3, 4, 7, 7), torch.randn(5, 4, 3, 3), torch.rand(3, 4) + 0.5
    for demodulate in (False, True):
        out = modulation.modulated_conv2d(x, weight, styles, demodulate=demodulate, padding=1)
        for n in range(3):
            w = weight * styles[n][None, :, None, None]
            if demodulate:
                w = w / torch.sqrt(w.square().sum(dim=(1, 2, 3), keepdim=True) + 1e-8)
            torch.testing.assert_close(out[n : n + 1], torch.nn.functional.conv2d(x[n : n + 1], w, padding=1))


def test_demodulation_gives_unit_variance_for_iid_unit_inputs():
    torch.manual_seed(4)
    x = torch.randn(128, 8, 10, 10)
    weight, styles = torch.randn(6, 8, 3, 3), 4 * torch.rand(128, 8)
    variance = modulation.modulated_conv2d(x, weight, styles).var(dim=(0, 2, 3))
    torch.testing.assert_close(variance, torch.ones(6), atol=0.08, rtol=0)
    plain = modulation.modulated_conv2d(x, weight, styles, demodulate=False).var(dim=(0, 2, 3))
    assert (plain > 5).all()
