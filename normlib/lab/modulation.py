"""Where γ and β come from: InstanceNorm's descendants in style transfer and StyleGAN.

Each step keeps InstanceNorm's first three steps and changes only the source of step 4's
scale and shift:

* :class:`ConditionalInstanceNorm2d` -- one learned (γ, β) per class, picked by a label
  (Dumoulin, Shlens and Kudlur, 2017: one network, many painting styles);
* :func:`normlib.functional.adain` -- (γ, β) = the style image's (σ, μ) (Huang and
  Belongie, 2017);
* :class:`StyleAdaIN` with :func:`mapping_network` -- (γ, β) = a learned affine map of
  ``w = mapping(z)``, a latent vector (StyleGAN, Karras, Laine and Aila, 2019);
* :func:`modulated_conv2d` -- StyleGAN2's replacement (Karras et al., 2020): no statistics
  of the actual features at all. The style scales the convolution's input channels
  (modulation), and each output channel's weights are divided by their norm
  (demodulation), so that the output has unit variance *if* the inputs are i.i.d. with
  unit variance.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..functional import instance_norm

__all__ = ["ConditionalInstanceNorm2d", "StyleAdaIN", "mapping_network", "modulated_conv2d"]


def _scale_and_shift(normalized: Tensor, gamma: Tensor, beta: Tensor) -> Tensor:
    return gamma[:, :, None, None] * normalized + beta[:, :, None, None]


class ConditionalInstanceNorm2d(nn.Module):
    """InstanceNorm (no affine) followed by the ``label``-th row of a learned (γ, β) table.

    ``weight`` and ``bias`` have shape (num_classes, num_features), initialized to ones and
    zeros; ``forward(x, labels)`` takes labels of shape (N,)."""

    def __init__(self, num_features: int, num_classes: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(num_classes, num_features))
        self.bias = nn.Parameter(torch.zeros(num_classes, num_features))

    def forward(self, x: Tensor, labels: Tensor) -> Tensor:
        normalized = instance_norm(x, eps=self.eps)
        return _scale_and_shift(normalized, self.weight[labels], self.bias[labels])


class StyleAdaIN(nn.Module):
    """StyleGAN's AdaIN: InstanceNorm, then (γ, β) from a learned affine map of ``w``.

    ``affine`` maps (N, latent_dim) to (N, 2 C); its bias starts at (1, ..., 1, 0, ..., 0),
    so that γ starts near 1 and β near 0, as in StyleGAN."""

    def __init__(self, num_features: int, latent_dim: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.affine = nn.Linear(latent_dim, 2 * num_features)
        with torch.no_grad():
            self.affine.bias[:num_features].fill_(1.0)
            self.affine.bias[num_features:].zero_()

    def styles(self, w: Tensor) -> tuple[Tensor, Tensor]:
        """(γ, β), each (N, C), for the latent vectors ``w``."""
        gamma, beta = self.affine(w).chunk(2, dim=1)
        return gamma, beta

    def forward(self, x: Tensor, w: Tensor) -> Tensor:
        gamma, beta = self.styles(w)
        return _scale_and_shift(instance_norm(x, eps=self.eps), gamma, beta)


def mapping_network(latent_dim: int, depth: int = 4) -> nn.Sequential:
    """StyleGAN's mapping from ``z`` to ``w``: ``depth`` linear layers of width ``latent_dim``
    with LeakyReLU(0.2) between them (StyleGAN uses 8 layers of 512)."""
    if depth < 1:
        raise ValueError(f"mapping_network: depth must be positive, got {depth}")
    layers: list[nn.Module] = []
    for i in range(depth):
        layers.append(nn.Linear(latent_dim, latent_dim))
        if i < depth - 1:
            layers.append(nn.LeakyReLU(0.2))
    return nn.Sequential(*layers)


def modulated_conv2d(
    x: Tensor, weight: Tensor, styles: Tensor, *, demodulate: bool = True, padding: int = 0, eps: float = 1e-8
) -> Tensor:
    """StyleGAN2's modulated convolution (no bias).

    ``x`` is (N, I, H, W), ``weight`` (O, I, k, k), ``styles`` (N, I): image ``n`` is
    convolved with ``w'[o, i] = styles[n, i] * weight[o, i]``; with ``demodulate`` each
    output channel's ``w'`` is divided by ``sqrt(sum over i and the kernel of w'^2 + eps)``.
    Then an output's variance is 1 when the inputs are independent with variance 1, whatever
    the style: the scale is fixed by the weights, not measured on the features.
    """
    n, channels_in, height, width = x.shape
    channels_out = weight.shape[0]
    w = weight[None] * styles[:, None, :, None, None]  # (N, O, I, k, k)
    if demodulate:
        w = w * torch.rsqrt(w.square().sum(dim=(2, 3, 4), keepdim=True) + eps)
    # One grouped convolution: each image is a group with its own weights.
    out = nn.functional.conv2d(
        x.reshape(1, n * channels_in, height, width),
        w.reshape(n * channels_out, channels_in, *weight.shape[2:]),
        padding=padding,
        groups=n,
    )
    return out.reshape(n, channels_out, *out.shape[2:])
