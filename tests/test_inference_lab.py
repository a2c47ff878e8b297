"""normlib.lab.inference and normlib.lab.viz.inference (chapter 5's helpers)."""

import math

import matplotlib
import matplotlib.colors
import pytest
import torch

import normlib
from normlib.lab import inference, models, viz
from normlib.lab.viz import inference as inference_viz

matplotlib.use("Agg")


def test_trajectories_follow_the_ema_and_the_cumulative_mean():
    torch.manual_seed(0)
    feed = [torch.randn(8, 2) + 3 for _ in range(12)]
    paths = inference.running_mean_trajectories(feed, [0.1, None])
    assert tuple(paths[0.1].shape) == (12, 2)
    expected = torch.zeros(2)
    for t, batch in enumerate(feed):
        expected = 0.9 * expected + 0.1 * batch.mean(dim=0)
        torch.testing.assert_close(paths[0.1][t], expected)
    torch.testing.assert_close(paths[None][-1], torch.stack([b.mean(dim=0) for b in feed]).mean(dim=0))


@pytest.mark.parametrize("momentum", [0.01, 0.1, 0.3])
def test_forgetting_steps_match_the_closed_form(momentum):
    assert inference.forgetting_steps(momentum) == math.ceil(math.log(0.01) / math.log(1 - momentum))


def test_batchnorm_mlp_uses_the_momentum():
    model = inference.batchnorm_mlp(0.01)
    layers = list(models.norm_layers(model).values())
    assert len(layers) == 3 and all(type(m) is normlib.BatchNorm1d and m.momentum == 0.01 for m in layers)
    assert model.linear1.bias is None


def test_reset_statistics_copies_and_resets():
    model = inference.batchnorm_mlp()
    with torch.no_grad():
        model.train()(torch.randn(16, 64) * 3 + 1)
    reset = inference.reset_statistics(model)
    assert int(model.norm1.num_batches_tracked) == 1 and model.norm1.running_mean.any()
    assert int(reset.norm1.num_batches_tracked) == 0 and not reset.norm1.running_mean.any()
    assert torch.equal(reset.norm1.running_var, torch.ones(64))


def test_running_mean_frame_title_states_the_end():
    fig = inference_viz.running_mean_frame([1.0, 2.0], [3.0, 0.0], [0.5, 0.25], None)
    title = fig.axes[0].get_title()
    assert "None (cumulative)" in title and "0.25" in title and "true mean 0" in title
    matplotlib.pyplot.close(fig)


def test_running_mean_frame_uses_neutral_styles_not_the_no_normalization_grey():
    fig = inference_viz.running_mean_frame([1.0, 2.0], [3.0, 0.0], [0.5, 0.25], 0.1)
    dots, true_mean, running = fig.axes[0].get_lines()
    grey = matplotlib.colors.to_hex(viz.color("none"))
    neutral = {matplotlib.colors.to_hex(s["color"]) for s in viz.neutral_styles(2)}
    for line in (dots, true_mean):
        assert matplotlib.colors.to_hex(line.get_color()) in neutral
        assert matplotlib.colors.to_hex(line.get_color()) != grey
    assert true_mean.get_linestyle() == "--"
    assert matplotlib.colors.to_hex(running.get_color()) == viz.color("bn").lower()
    matplotlib.pyplot.close(fig)
