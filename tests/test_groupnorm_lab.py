"""normlib.lab.groupnorm_lab: chapter 8's measurements, on data whose answers are known."""

import pytest
import torch
from torch import nn

import normlib
from normlib.lab import data, groupnorm_lab, models


def test_recipe_counts_match_the_formulas():
    counts = groupnorm_lab.recipe_counts((16, 8, 8), batch=2, num_groups=4)
    assert counts == {"bn": 2 * 64, "gn": 4 * 64, "ln": 16 * 64, "in": 64}
    flat = groupnorm_lab.recipe_counts((64,), batch=3, num_groups=4)
    assert flat == {"bn": 3, "gn": 16, "ln": 64, "in": None}


@pytest.mark.parametrize(
    "layer, expected",
    [
        (nn.BatchNorm2d(6, affine=False), 3 * 4 * 5),  # N*H*W
        (nn.GroupNorm(2, 6, affine=False), 3 * 4 * 5),  # (C/G)*H*W
        (nn.GroupNorm(1, 6, affine=False), 6 * 4 * 5),  # C*H*W
        (nn.InstanceNorm2d(6), 4 * 5),  # H*W
        (nn.Identity(), 1),
    ],
)
def test_shared_values_reads_the_layer(layer, expected):
    x = torch.randn(3, 6, 4, 5)
    assert groupnorm_lab.shared_values(layer.train(), x) == expected


def test_shared_values_sees_eval_mode():
    bn = nn.BatchNorm2d(6, affine=False)
    assert groupnorm_lab.shared_values(bn.eval(), torch.randn(3, 6, 4, 5)) == 1  # running stats


def _synthetic(images, between, within, positions=16, correlated=0.0, seed=0):
    """x = a[m, c] + pattern[c, p] + e[m, c, p] with known variances per channel."""
    g = torch.Generator().manual_seed(seed)
    between, within = torch.tensor(between), torch.tensor(within)
    channels = len(between)
    a = torch.randn(images, channels, 1, generator=g) * between.sqrt()[:, None]
    pattern = 3 * torch.randn(1, channels, positions, generator=g)  # fixed: cancels
    e = torch.randn(images, channels, positions, generator=g) * within.sqrt()[:, None]
    shared = torch.randn(images, channels, 1, generator=g) * correlated**0.5
    x = 1.5 + a + pattern + e + shared
    return x.reshape(images, channels, 4, positions // 4)


def test_mean_variance_parts_recovers_known_parts():
    x = _synthetic(6000, between=[1.0, 0.25, 0.0], within=[1.0, 4.0, 2.0])
    parts = groupnorm_lab.mean_variance_parts(x)
    torch.testing.assert_close(parts["within"], torch.tensor([1.0, 4.0, 2.0]), rtol=0.05, atol=0)
    torch.testing.assert_close(parts["between"], torch.tensor([1.0, 0.25, 0.0]), rtol=0.1, atol=0.03)
    assert int(parts["positions"]) == 16
    # image_means = between + within / P, exactly (by construction of the estimates)
    torch.testing.assert_close(parts["image_means"], parts["between"] + parts["within"] / 16)


def test_the_parts_predict_the_variance_of_batch_means():
    x = _synthetic(3000, between=[0.5, 0.0], within=[2.0, 8.0])
    parts = groupnorm_lab.mean_variance_parts(x)
    for n in (2, 8):
        measured = groupnorm_lab.batch_mean_draws(x, n, 4000, seed=1).var(dim=0)
        predicted = parts["between"] / n + parts["within"] / (n * 16)
        torch.testing.assert_close(measured, predicted, rtol=0.1, atol=0)
    # the between part shrinks with N only; the within part with N*H*W
    assert parts["between"][0] / 2 > 3 * parts["within"][0] / (2 * 16)


def test_variance_split_and_study():
    x = _synthetic(3000, between=[1.0, 0.0], within=[1.0, 16.0])
    parts = groupnorm_lab.mean_variance_parts(x)
    split = groupnorm_lab.variance_split(parts, 4)
    torch.testing.assert_close(split["predicted"], parts["image_means"] / 4)
    assert split["between_share"][0] > 0.9 and abs(float(split["between_share"][1])) < 0.2
    study = groupnorm_lab.batch_mean_study({"a": x}, (2, 8), draws=2000)
    assert set(study) == {("a", 2), ("a", 8)} and study["a", 8]["values"] == 8 * 16
    for n in (2, 8):
        torch.testing.assert_close(study["a", n]["measured"], study["a", n]["predicted"], rtol=0.15, atol=0)
    # channel 1 (no between part): the mean of N*H*W independent values
    torch.testing.assert_close(study["a", 2]["measured"][1] * 2 * 16, parts["within"][1], rtol=0.15, atol=0)
    # ... channel 0 (between dominates) like about N * total / between, whatever H*W
    expected = 2 * parts["total"][0] / parts["image_means"][0]
    torch.testing.assert_close(study["a", 2]["effective"][0], expected, rtol=0.15, atol=0)


def test_correlated_pixels_count_as_between():
    """Noise shared by all positions of an image does not average out over positions."""
    independent = groupnorm_lab.mean_variance_parts(_synthetic(4000, [0.0], [1.0]))
    shared = groupnorm_lab.mean_variance_parts(_synthetic(4000, [0.0], [1.0], correlated=1.0))
    assert abs(float(independent["between"])) < 0.03
    assert abs(float(shared["between"]) - 1.0) < 0.1


def test_mean_variance_parts_refuses_bad_shapes():
    with pytest.raises(ValueError, match="need"):
        groupnorm_lab.mean_variance_parts(torch.randn(5, 3, 1, 1))


def test_counting_images_counts_training_passes_only():
    net = nn.Linear(3, 2)
    with groupnorm_lab.counting_images(net) as seen:
        net(torch.randn(5, 3))
        net.eval()(torch.randn(7, 3))
        net.train()(torch.randn(2, 3))
    net(torch.randn(4, 3))  # after the block: not counted
    assert seen == {"images": 7, "calls": 2}


def test_sweep_sees_the_same_images_at_every_batch_size():
    dataset = data.digits(standardize=True)
    networks = {"mlp": (dataset, ["bn", "gn"], lambda n: models.mlp(64, 10, hidden=(8,), norm=n, num_groups=2))}
    error, trained, seen = groupnorm_lab.sweep(
        networks, [2, 8], 32, optimizer="adam", lr=0.01, progress=False, eval_every=1000
    )
    assert set(seen.values()) == {32}
    assert len(error["mlp", "bn"]) == 2 and all(0 <= e <= 100 for e in error["mlp", "gn"])
    assert isinstance(trained["mlp", "gn", 8].norm1, normlib.GroupNorm)
    with pytest.raises(ValueError, match="multiple"):
        groupnorm_lab.sweep(networks, [3], 32)


def test_standardize_weight_per_filter():
    w = 2 * torch.randn(5, 3, 3, 3) + 1
    ws = groupnorm_lab.standardize_weight(w)
    torch.testing.assert_close(ws.mean(dim=(1, 2, 3)), torch.zeros(5), atol=1e-6, rtol=0)
    torch.testing.assert_close(ws.var(dim=(1, 2, 3), correction=0), torch.ones(5), atol=1e-4, rtol=0)
    # invariant to a per-filter scale and shift of the raw weights
    torch.testing.assert_close(groupnorm_lab.standardize_weight(3 * w + 2), ws, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("affine", [True, False])
def test_eval_affine_is_batchnorm_in_eval(affine):
    bn = nn.BatchNorm2d(4, affine=affine)
    with torch.no_grad():
        bn(3 * torch.randn(8, 4, 5, 5) + 2)  # running statistics move
        if affine:
            bn.weight.uniform_(0.5, 2)
            bn.bias.normal_()
    x = torch.randn(2, 4, 5, 5)
    scale, shift = groupnorm_lab.eval_affine(bn)
    expected = scale[:, None, None] * x + shift[:, None, None]
    torch.testing.assert_close(bn.eval()(x), expected)
    assert not torch.allclose(bn.train()(x), expected, atol=1e-2)
    with pytest.raises(ValueError, match="running"):
        groupnorm_lab.eval_affine(nn.BatchNorm2d(4, track_running_stats=False))
