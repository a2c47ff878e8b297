"""normlib.lab.style (AdaIN on a fixed random encoder, decoded by pixel optimization) and the
data helpers chapter 7 uses: exposure_task and sample_image."""

import pytest
import torch

import normlib
from normlib.functional import adain
from normlib.lab import data, style

# --------------------------------------------------------------------------- RandomEncoder


def test_random_encoder_is_frozen_seeded_and_leaves_the_global_rng_alone():
    torch.manual_seed(123)
    before = torch.random.get_rng_state()
    a, b, c = style.RandomEncoder(seed=1), style.RandomEncoder(seed=1), style.RandomEncoder(seed=2)
    assert torch.equal(torch.random.get_rng_state(), before)
    assert all(not p.requires_grad for p in a.parameters())
    for conv_a, conv_b, conv_c in zip(a.stages, b.stages, c.stages):
        assert torch.equal(conv_a.weight, conv_b.weight) and not torch.equal(conv_a.weight, conv_c.weight)
        assert not conv_a.bias.any()
        # He-normal: variance 2 / fan-in, so the features do not shrink from stage to stage
        fan_in = conv_a.weight[0].numel()
        assert 0.7 < float(conv_a.weight.var() * fan_in / 2) < 1.3


def test_random_encoder_stages_and_shapes():
    enc = style.RandomEncoder(channels=(8, 16, 4))
    feats = enc(torch.rand(2, 3, 16, 16))
    assert [tuple(f.shape) for f in feats] == [(2, 8, 16, 16), (2, 16, 8, 8), (2, 4, 4, 4)]
    assert all(float(f.min()) >= 0 for f in feats)  # after ReLU
    with pytest.raises(ValueError, match="at least one stage"):
        style.RandomEncoder(channels=())


def test_channel_stats_are_instance_statistics():
    x = torch.randn(3, 4, 5, 6, dtype=torch.float64) * 2 + 1
    mean, std = style.channel_stats(x)
    torch.testing.assert_close(mean, x.mean((2, 3)))
    torch.testing.assert_close(std, torch.sqrt(x.var((2, 3), correction=0) + 1e-5))


# --------------------------------------------------------------------------- stylize


@pytest.fixture(scope="module")
def images():
    torch.manual_seed(0)
    content = torch.rand(1, 3, 16, 16)
    smooth = torch.nn.functional.avg_pool2d(torch.rand(1, 3, 20, 20), 5, stride=1)  # 16 x 16
    return content, 0.2 + 0.5 * smooth


def test_stylize_lowers_the_objective_and_moves_statistics_towards_the_style(images):
    content, target_style = images
    enc = style.RandomEncoder(channels=(8, 8), seed=0)
    out, losses = style.stylize(content, target_style, enc, steps=60, lr=0.03, return_losses=True)
    assert out.shape == content.shape and float(out.min()) >= 0 and float(out.max()) <= 1
    assert len(losses) == 61 and losses[-1] < 0.2 * losses[0]
    # The deepest layer's channel statistics are now closer to the style's than the content's were.
    with torch.no_grad():
        gap = lambda img: sum(
            (a - b).abs().mean()
            for a, b in zip(style.channel_stats(enc(img)[-1]), style.channel_stats(enc(target_style)[-1]))
        )
        assert gap(out) < 0.5 * gap(content)


def test_stylize_with_its_own_style_changes_nothing(images, device):
    content, _ = images
    content = content.to(device)
    enc = style.RandomEncoder(channels=(8, 8), seed=0).to(device)
    out, losses = style.stylize(content, content, enc, steps=5, lr=0.01, return_losses=True)
    assert losses[0] < 1e-10  # adain(f(c), f(c)) == f(c) and the statistics already match
    # Adam rescales even a vanishing gradient, so pixels may move, but by at most lr per step.
    assert float((out - content).abs().max()) <= 5 * 0.01 + 1e-6
    assert out.device.type == device.type


def test_stylize_target_is_adain_of_the_features(images):
    content, target_style = images
    enc = style.RandomEncoder(channels=(8, 8), seed=0)
    # Zero steps: the content comes back, and the objective's first term is |f(c) - adain(f(c), f(s))|^2.
    out, losses = style.stylize(content, target_style, enc, steps=0, style_weight=0.0, return_losses=True)
    torch.testing.assert_close(out, content)
    with torch.no_grad():
        fc, fs = enc(content)[-1], enc(target_style)[-1]
        expected = (fc - adain(fc, fs)).square().mean()
    assert losses == [pytest.approx(float(expected), rel=1e-5)]
    with pytest.raises(ValueError, match="non-negative"):
        style.stylize(content, target_style, enc, steps=-1)


# --------------------------------------------------------------------------- data helpers


def test_exposure_task_labels_are_the_factors():
    base = data.digits(image=True, device="cpu")
    task = data.exposure_task(base, factors=(0.5, 2.0), seed=3)
    assert task.num_classes == 2 and task.name == "digits-exposure"
    assert task.x_train.shape == base.x_train.shape and task.y_train.dtype == torch.int64
    factors = torch.tensor([0.5, 2.0])
    for x, x0, y in ((task.x_train, base.x_train, task.y_train), (task.x_test, base.x_test, task.y_test)):
        torch.testing.assert_close(x, x0 * factors[y].reshape(-1, 1, 1, 1))
    assert 0.4 < task.y_train.float().mean() < 0.6  # both levels drawn
    again = data.exposure_task(base, factors=(0.5, 2.0), seed=3)
    assert torch.equal(again.y_train, task.y_train)
    assert not torch.equal(data.exposure_task(base, factors=(0.5, 2.0), seed=4).y_train, task.y_train)


def test_exposure_task_rejects_bad_factors():
    base = data.digits(device="cpu")
    for bad in ((1.0,), (1.0, 1.0), (0.0, 1.0), (-1.0, 2.0)):
        with pytest.raises(ValueError, match="factors"):
            data.exposure_task(base, factors=bad)


def test_instance_norm_cannot_tell_exposure_levels_apart():
    base = data.digits(image=True, device="cpu", dtype=torch.float64)
    task = data.exposure_task(base, factors=(0.25, 2.0))
    conv = torch.nn.Conv2d(1, 4, 3, padding=1).double()
    with torch.no_grad():
        dark, bright = conv(task.x_test[task.y_test == 0][:20]), conv(task.x_test[task.y_test == 1][:20])
        # The first convolution's output is a * (w * x) + b; IN removes b and, but for eps, a.
        for eps, tol in ((1e-12, 1e-6), (1e-5, 5e-2)):
            a = normlib.functional.instance_norm(conv(base.x_test[:20] * 0.25), eps=eps)
            b = normlib.functional.instance_norm(conv(base.x_test[:20] * 2.0), eps=eps)
            torch.testing.assert_close(a, b, atol=tol, rtol=0)
    # ... while the raw features tell the levels apart at a glance.
    assert float(bright.std((2, 3)).mean()) > 4 * float(dark.std((2, 3)).mean())


@pytest.mark.parametrize("name", data.SAMPLE_IMAGES)
def test_sample_image_ships_offline(name, monkeypatch):
    import socket

    def no_network(*args, **kwargs):
        raise AssertionError("sample_image tried to open a network connection")

    monkeypatch.setattr(socket, "create_connection", no_network)
    image = data.sample_image(name, 24, device="cpu")
    assert image.shape == (1, 3, 24, 24) and image.dtype == torch.float32
    assert 0.0 <= float(image.min()) and float(image.max()) <= 1.0 and float(image.std()) > 0.01


def test_sample_image_grey_is_three_equal_channels_and_bad_names_fail():
    grey = data.sample_image("camera", 16, device="cpu", dtype=torch.float64)
    torch.testing.assert_close(grey[:, 0], grey[:, 1])
    torch.testing.assert_close(grey[:, 0], grey[:, 2])
    with pytest.raises(ValueError, match="unknown image"):
        data.sample_image("lena")
    with pytest.raises(ValueError, match="size"):
        data.sample_image("coffee", 0)
