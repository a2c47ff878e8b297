"""Channel statistics as "style": AdaIN on the features of a fixed random network.

Huang and Belongie (2017) transfer style by giving the content image's feature maps the
per-channel mean and standard deviation of the style image's (:func:`normlib.functional.adain`),
then decoding the result into an image with a trained decoder. Here the encoder is a small
convolutional network with *fixed random* weights (:class:`RandomEncoder`), and the decoder
is replaced by gradient descent on the pixels (:func:`stylize`): find an image whose deepest
features match the AdaIN target and whose channel statistics at every layer match the
style's. Random filters are enough to carry texture statistics; nothing is trained or
downloaded.
"""

from __future__ import annotations

from typing import List, Sequence, Tuple

import torch
from torch import Tensor, nn

from ..functional import adain, norm_dims, normalize

__all__ = ["RandomEncoder", "channel_stats", "stylize"]


class RandomEncoder(nn.Module):
    """Conv 3 x 3 -> ReLU stages with fixed random weights; ``forward`` returns every stage's output.

    The first stage keeps the resolution, each further stage halves it (stride 2).
    Reflection padding avoids dark borders. The weights are He-normal (variance 2 / fan-in,
    so the features keep the input's scale from stage to stage instead of shrinking, and
    statistics stay well above ``eps``), the biases zero; they are drawn from ``seed``
    (the global random state is left untouched), and no parameter requires a gradient.
    """

    def __init__(self, in_channels: int = 3, channels: Sequence[int] = (32, 32, 64), *, seed: int = 0) -> None:
        super().__init__()
        if not channels:
            raise ValueError("RandomEncoder needs at least one stage")
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            stages, width_in = [], in_channels
            for i, width in enumerate(channels):
                conv = nn.Conv2d(width_in, width, 3, stride=1 if i == 0 else 2, padding=1, padding_mode="reflect")
                nn.init.kaiming_normal_(conv.weight, nonlinearity="relu")
                nn.init.zeros_(conv.bias)
                stages.append(conv)
                width_in = width
        self.stages = nn.ModuleList(stages)
        self.requires_grad_(False)

    def forward(self, x: Tensor) -> List[Tensor]:
        features = []
        for conv in self.stages:
            x = torch.relu(conv(x))
            features.append(x)
        return features


def channel_stats(features: Tensor, eps: float = 1e-5) -> Tuple[Tensor, Tensor]:
    """Per-sample, per-channel mean and standard deviation ``sqrt(var + eps)`` over the
    spatial axes (InstanceNorm's statistics), each of shape (N, C)."""
    _, mean, var = normalize(features, norm_dims("in", features.dim()))
    return mean.flatten(2).squeeze(2), torch.sqrt(var + eps).flatten(2).squeeze(2)


def _objective(features, target, style_stats, style_weight):
    loss = (features[-1] - target).square().mean()
    for feature, (style_mean, style_std) in zip(features, style_stats):
        mean, std = channel_stats(feature)
        loss = loss + style_weight * ((mean - style_mean).square().mean() + (std - style_std).square().mean())
    return loss


def stylize(
    content: Tensor,
    style: Tensor,
    encoder: nn.Module,
    *,
    steps: int = 150,
    lr: float = 0.02,
    style_weight: float = 50.0,
    return_losses: bool = False,
):
    """An image with the content's layout and the style's channel statistics.

    ``encoder(x)`` returns a list of feature maps (e.g. :class:`RandomEncoder`). The target of
    the deepest map is ``adain(f(content), f(style))`` (Huang and Belongie's AdaIN); the
    loss is its mean squared error plus ``style_weight`` times the squared differences of
    the channel means and standard deviations at every layer. Starting from ``content``, the
    pixels take ``steps`` Adam steps of size ``lr`` and are kept in [0, 1].

    ``content`` and ``style`` are (N, 3, H, W) images in [0, 1] (``style`` may have another
    size, or N = 1). Returns the image, or ``(image, losses)`` with the loss before every
    step and after the last one when ``return_losses``. With ``style`` equal to ``content``
    the objective is zero at the start (Adam still moves each pixel by up to ``lr`` per
    step, since it rescales even a vanishing gradient).
    """
    if steps < 0:
        raise ValueError(f"stylize: steps must be non-negative, got {steps}")
    with torch.no_grad():
        content_features, style_features = encoder(content), encoder(style)
        target = adain(content_features[-1], style_features[-1])
        style_stats = [channel_stats(f) for f in style_features]
    image = content.detach().clone().requires_grad_(True)
    optimizer = torch.optim.Adam([image], lr=lr)
    losses = []
    with torch.enable_grad():
        for _ in range(steps):
            loss = _objective(encoder(image), target, style_stats, style_weight)
            losses.append(loss.item())
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            with torch.no_grad():
                image.clamp_(0.0, 1.0)
    result = image.detach()
    if not return_losses:
        return result
    with torch.no_grad():
        losses.append(float(_objective(encoder(result), target, style_stats, style_weight)))
    return result, losses
