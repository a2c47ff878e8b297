"""Channel statistics as "style": AdaIN in the feature space of a small network.

Huang and Belongie (2017) transfer style by giving the content image's feature maps the
per-channel mean and standard deviation of the style image's (:func:`normlib.functional.adain`),
then decoding the result into an image. Two small versions, nothing downloaded:

* :class:`TinyAutoencoder` and :func:`train_autoencoder` (what chapter 7 shows): a two-layer
  encoder and a decoder trained in seconds, on crops of scikit-image photographs, to
  reconstruct images, so that the decoder inverts the encoder; :func:`transfer` decodes
  ``adain(encode(content), encode(style))``, and :func:`edge_correlation` measures how much
  of the content's structure survives.
* :class:`RandomEncoder` and :func:`stylize`: an encoder with *fixed random* weights and,
  instead of a decoder, gradient descent on the pixels towards the AdaIN target and the
  style's channel statistics at every layer.
"""

from __future__ import annotations

from typing import List, Sequence, Tuple

import torch
from torch import Tensor, nn

from ..functional import adain, norm_dims, normalize

__all__ = [
    "RandomEncoder",
    "TinyAutoencoder",
    "channel_stats",
    "edge_correlation",
    "edge_map",
    "fine_detail_share",
    "stylize",
    "train_autoencoder",
    "transfer",
]


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


# --------------------------------------------------------------------------- a trained decoder


def _conv(width_in: int, width_out: int) -> nn.Conv2d:
    return nn.Conv2d(width_in, width_out, 3, padding=1, padding_mode="reflect")


class TinyAutoencoder(nn.Module):
    """Encoder: two 3 x 3 convolutions with LeakyReLU(0.2), ``width`` channels each, full
    resolution (no stride, so no grid artefacts; each feature sees a 5 x 5 patch). Decoder: a
    3 x 3 convolution with LeakyReLU(0.2) and a 3 x 3 convolution back to 3 channels.
    Reflection padding. The leaky slope keeps every channel alive: with a plain ReLU, most
    channels of such a small encoder end up zero on every image, and AdaIN has nothing to
    scale there."""

    def __init__(self, width: int = 32) -> None:
        super().__init__()
        self.encoder = nn.Sequential(_conv(3, width), nn.LeakyReLU(0.2), _conv(width, width), nn.LeakyReLU(0.2))
        self.decoder = nn.Sequential(_conv(width, width), nn.LeakyReLU(0.2), _conv(width, 3))

    def encode(self, x: Tensor) -> Tensor:
        """(N, 3, H, W) images to (N, width, H, W) features."""
        return self.encoder(x)

    def decode(self, features: Tensor) -> Tensor:
        """(N, width, H, W) features to (N, 3, H, W) images (not clamped)."""
        return self.decoder(features)

    def forward(self, x: Tensor) -> Tensor:
        return self.decode(self.encode(x))


def _random_crops(images: Tensor, count: int, size: int, generator: torch.Generator) -> Tensor:
    n, _, height, width = images.shape
    which = torch.randint(0, n, (count,), generator=generator).tolist()
    tops = torch.randint(0, height - size + 1, (count,), generator=generator).tolist()
    lefts = torch.randint(0, width - size + 1, (count,), generator=generator).tolist()
    return torch.stack([images[k, :, t : t + size, s : s + size] for k, t, s in zip(which, tops, lefts)])


def train_autoencoder(
    images: Tensor,
    *,
    width: int = 32,
    steps: int = 200,
    crop: int = 32,
    batch_size: int = 16,
    lr: float = 3e-3,
    seed: int = 0,
) -> Tuple[TinyAutoencoder, List[float]]:
    """Train a :class:`TinyAutoencoder` to reconstruct ``images`` (N, 3, H, W) in [0, 1].

    Each of ``steps`` Adam steps (size ``lr``) sees ``batch_size`` random ``crop`` x ``crop``
    crops and minimizes the mean squared reconstruction error. Weights and crops are drawn
    from ``seed`` (the global random state is left untouched). Returns the model, in
    ``eval()`` mode with gradients switched off, and the loss of every step.
    """
    if steps < 1:
        raise ValueError(f"train_autoencoder: steps must be positive, got {steps}")
    if crop > min(images.shape[-2:]):
        raise ValueError(f"train_autoencoder: crop {crop} is larger than the images {tuple(images.shape[-2:])}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = TinyAutoencoder(width).to(images.device)
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    losses = []
    with torch.enable_grad():
        for _ in range(steps):
            batch = _random_crops(images, batch_size, crop, generator)
            loss = (model(batch) - batch).square().mean()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
    return model.eval().requires_grad_(False), losses


@torch.no_grad()
def transfer(autoencoder: TinyAutoencoder, content: Tensor, style: Tensor, eps: float = 1e-5) -> Tensor:
    """AdaIN in the autoencoder's feature space: ``decode(adain(encode(content),
    encode(style)))``, clamped to [0, 1]."""
    features = adain(autoencoder.encode(content), autoencoder.encode(style), eps=eps)
    return autoencoder.decode(features).clamp(0.0, 1.0)


def edge_map(image: Tensor) -> Tensor:
    """Gradient magnitude of the grey image (the channel mean), (N, H - 1, W - 1): large on
    edges, zero on flat regions."""
    grey = image.mean(dim=1)
    dx = grey[:, :-1, 1:] - grey[:, :-1, :-1]
    dy = grey[:, 1:, :-1] - grey[:, :-1, :-1]
    return torch.sqrt(dx.square() + dy.square())


def edge_correlation(a: Tensor, b: Tensor) -> Tensor:
    """Pearson correlation, per image, of the :func:`edge_map` of ``a`` and ``b``: 1 when one
    image's edges are a positive multiple of the other's (a change of colour or contrast
    keeps it at 1), about 0 for unrelated images."""
    x, y = edge_map(a).flatten(1), edge_map(b).flatten(1)
    x, y = x - x.mean(dim=1, keepdim=True), y - y.mean(dim=1, keepdim=True)
    return (x * y).sum(dim=1) / (x.norm(dim=1) * y.norm(dim=1))


def fine_detail_share(image: Tensor) -> Tensor:
    """Fine-scale variation relative to overall contrast, per image: the standard deviation
    of the grey image's Laplacian (4-neighbour, valid positions) divided by the grey
    image's standard deviation. A change of contrast and brightness leaves it unchanged;
    a fine-grained texture gives a larger value than a smooth photograph."""
    grey = image.mean(dim=1)
    laplacian = (
        grey[:, :-2, 1:-1] + grey[:, 2:, 1:-1] + grey[:, 1:-1, :-2] + grey[:, 1:-1, 2:] - 4 * grey[:, 1:-1, 1:-1]
    )
    return laplacian.flatten(1).std(dim=1) / grey.flatten(1).std(dim=1)
