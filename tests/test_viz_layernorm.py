"""normlib.lab.viz.layernorm: chapter 6's figures draw what they say, in the book's colours."""

import matplotlib
import pytest
import torch

matplotlib.use("Agg")
import matplotlib.colors as mcolors  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402

from normlib.lab import viz  # noqa: E402
from normlib.lab.viz import layernorm  # noqa: E402


def same_colour(a, b):
    return mcolors.to_hex(a) == mcolors.to_hex(b)


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def test_cell_state_figure_draws_a_network_without_norm_in_grey():
    mean, std = torch.randn(10, 5), torch.rand(10, 5)
    fig = layernorm.cell_state_figure(mean, std, units=3, title="drift")
    left, right = fig.axes
    assert len(left.lines) == 3 and len(right.lines) == 4
    grey_hue = mcolors.rgb_to_hsv(mcolors.to_rgb(viz.color("none")))
    for line in left.lines:
        r, g, b = mcolors.to_rgb(line.get_color())
        assert r == pytest.approx(g) == pytest.approx(b)  # a grey, no method's hue
        assert mcolors.rgb_to_hsv((r, g, b))[1] == pytest.approx(grey_hue[1])
    torch.testing.assert_close(torch.as_tensor(left.lines[0].get_ydata()), mean[:, 0], check_dtype=False)
    torch.testing.assert_close(torch.as_tensor(right.lines[-1].get_ydata()), std.mean(dim=1), check_dtype=False)
    assert not any(same_colour(line.get_color(), viz.color("bn")) for line in fig.axes[0].lines)
    assert fig._suptitle.get_text() == "drift"


def test_padding_frame_draws_the_column_means_and_counts():
    outputs = torch.randn(4, 6, 3)
    real = torch.tensor([[True] * 6, [True] * 4 + [False] * 2, [True] * 2 + [False] * 4, [True] * 6])
    outputs[~real] = 0
    fig = layernorm.padding_frame(outputs, real, t=3, unit=1)
    grid_ax, value_ax = fig.axes
    assert "3 real and 1 padded" in grid_ax.get_title()
    padded_in, real_only = [float(line.get_xdata()[0]) for line in value_ax.lines]
    assert padded_in == pytest.approx(float(outputs[:, 3, 1].mean()))
    assert real_only == pytest.approx(float(outputs[real[:, 3], 3, 1].mean()))
    assert all(same_colour(line.get_color(), viz.color("bn")) for line in value_ax.lines)
    dots, crosses = value_ax.collections
    assert same_colour(dots.get_facecolor()[0], viz.color("none"))
    assert len(dots.get_offsets()) == 3 and len(crosses.get_offsets()) == 1
    framed = [p for p in grid_ax.patches if same_colour(p.get_edgecolor(), viz.color("ln"))]
    assert len(framed) == 3  # one LayerNorm statistic per real cell of the column


def test_depth_figure_plots_both_arrangements_per_panel():
    depths = (2, 4)
    norms = {(p, d): torch.rand(d) for p in ("post", "pre") for d in depths}
    stream = {p: [1.0, 2.0, 3.0, 4.0, 5.0] for p in ("post", "pre")}
    fig = layernorm.depth_figure(norms, depths, stream, depth=4, title="finding")
    first, second, third = fig.axes
    assert [len(ax.lines) for ax in fig.axes] == [2, 2, 2]
    assert list(second.lines[1].get_ydata()) == pytest.approx([float(norms["pre", d][-1]) for d in depths])
    assert list(third.lines[0].get_ydata()) == stream["post"]
    assert all(same_colour(line.get_color(), viz.color("ln")) for ax in fig.axes for line in ax.lines)
    assert fig._suptitle.get_text() == "finding"
