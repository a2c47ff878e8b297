"""normlib.lab.style's trained route: TinyAutoencoder, train_autoencoder, transfer and the
edge measures chapter 7 uses to check that the content's structure survives."""

import pytest
import torch

from normlib.functional import adain
from normlib.lab import style


@pytest.fixture(scope="module")
def smooth_images():
    generator = torch.Generator().manual_seed(0)
    noise = torch.rand(4, 3, 28, 28, generator=generator)
    return torch.nn.functional.avg_pool2d(noise, 5, stride=1)  # (4, 3, 24, 24), smooth


def test_autoencoder_shapes_and_full_resolution():
    model = style.TinyAutoencoder(width=8)
    x = torch.rand(2, 3, 10, 12)
    assert tuple(model.encode(x).shape) == (2, 8, 10, 12)
    assert tuple(model(x).shape) == (2, 3, 10, 12)


def test_training_lowers_the_loss_is_seeded_and_freezes_the_model(smooth_images):
    torch.manual_seed(5)
    before = torch.random.get_rng_state()
    model, losses = style.train_autoencoder(smooth_images, width=8, steps=60, crop=16, seed=1)
    assert torch.equal(torch.random.get_rng_state(), before)
    assert len(losses) == 60 and sum(losses[-5:]) < 0.2 * sum(losses[:5])
    assert not model.training and not any(p.requires_grad for p in model.parameters())
    again, _ = style.train_autoencoder(smooth_images, width=8, steps=60, crop=16, seed=1)
    other, _ = style.train_autoencoder(smooth_images, width=8, steps=60, crop=16, seed=2)
    first = next(model.parameters())
    assert torch.equal(first, next(again.parameters())) and not torch.equal(first, next(other.parameters()))


def test_training_rejects_bad_arguments(smooth_images):
    with pytest.raises(ValueError, match="steps"):
        style.train_autoencoder(smooth_images, steps=0)
    with pytest.raises(ValueError, match="crop"):
        style.train_autoencoder(smooth_images, crop=64)


def test_transfer_decodes_adain_of_the_features(smooth_images):
    model = style.TinyAutoencoder(width=8).eval()
    content, style_image = smooth_images[:1], smooth_images[1:2]
    expected = model.decode(adain(model.encode(content), model.encode(style_image))).clamp(0, 1)
    torch.testing.assert_close(style.transfer(model, content, style_image), expected)


def test_edge_map_and_correlation():
    image = torch.zeros(1, 3, 6, 6)
    image[..., 3:] = 1.0  # one vertical edge between columns 2 and 3
    edges = style.edge_map(image)
    assert tuple(edges.shape) == (1, 5, 5)
    assert torch.equal(edges[0, :, 2], torch.ones(5)) and edges[0, :, [0, 1, 3, 4]].abs().sum() == 0
    generator = torch.Generator().manual_seed(0)
    a, b = torch.rand(2, 3, 16, 16, generator=generator).chunk(2)
    # a change of contrast and brightness keeps the edges; another image does not
    torch.testing.assert_close(style.edge_correlation(a, 0.3 * a + 0.5), torch.ones(1))
    assert abs(float(style.edge_correlation(a, b))) < 0.3


def test_fine_detail_share():
    generator = torch.Generator().manual_seed(0)
    noise = torch.rand(1, 3, 24, 24, generator=generator)
    smooth = torch.nn.functional.avg_pool2d(noise, 5, stride=1)
    # a change of contrast and brightness keeps it; white noise has far more fine detail
    torch.testing.assert_close(style.fine_detail_share(0.3 * noise + 0.5), style.fine_detail_share(noise))
    # (independent pixels: the Laplacian's variance is (16 + 4) times a pixel's)
    assert abs(float(style.fine_detail_share(noise)) - 20**0.5) < 0.3
    assert float(style.fine_detail_share(noise)) > 2 * float(style.fine_detail_share(smooth))
    # the 4-neighbour Laplacian, by hand at one position
    grey = noise.mean(dim=1)[0]
    centre = grey[1:-1, 1:-1]
    by_hand = grey[:-2, 1:-1] + grey[2:, 1:-1] + grey[1:-1, :-2] + grey[1:-1, 2:] - 4 * centre
    torch.testing.assert_close(style.fine_detail_share(noise)[0], by_hand.std() / grey.std())
    # a linear ramp has no second differences
    ramp = torch.linspace(0, 1, 10).expand(1, 3, 10, 10)
    assert float(style.fine_detail_share(ramp)) < 1e-5
