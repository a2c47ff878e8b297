"""normlib.lab.viz.groupnorm: chapter 8's figures."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.colors as mcolors  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from normlib.lab import viz  # noqa: E402
from normlib.lab.viz import groupnorm  # noqa: E402

GREY = mcolors.to_hex("#999999")


def _line_colors(fig):
    return [mcolors.to_hex(line.get_color()) for ax in fig.axes for line in ax.get_lines()]


def test_batch_sweep_paper_axis_ends_at_its_data_and_colours_are_methods():
    error = {("cnn", "bn"): [5, 6, 7], ("cnn", "gn"): [6, 6, 6], ("mlp", "bn"): [40, 8, 5]}
    fig = groupnorm.plot_batch_sweep(
        [32, 16, 8, 4, 2], {"bn": [23.6] * 5}, {"ln": 25.3}, [2, 8, 64], error, {"cnn": "a", "mlp": "b"}, "t"
    )
    paper, cnn, mlp = fig.axes
    assert 32 <= paper.get_xlim()[1] < 64  # the old figure shared 2..64 with ours
    assert cnn.get_xlim()[1] >= 64
    assert {mcolors.to_hex(line.get_color()) for line in cnn.get_lines()} == {
        mcolors.to_hex(viz.color(m)) for m in ("bn", "gn")
    }
    assert GREY not in _line_colors(fig)
    plt.close(fig)


def test_group_colors_one_shade_per_group():
    colors = groupnorm.group_colors(4, 16)
    assert colors[:4] == [colors[0]] * 4 and len(set(colors)) == 4
    assert set(colors) == set(viz.shades("gn", 4))
    assert len(set(groupnorm.group_colors(16, 16))) == 16  # G = C: every channel its own
    assert GREY not in colors
    with pytest.raises(ValueError, match="split"):
        groupnorm.group_colors(3, 16)


@pytest.mark.parametrize("groups", [1, 2, 4, 8, 16])
def test_group_frame_panels_agree(groups):
    fig = groupnorm.group_frame(groups, torch.rand(16), 2.0)
    left, right = fig.axes
    assert left.get_title() == f"G = {groups} of C = 16 channels"  # not capped at 8
    assert right.get_title().endswith(f"G = {groups}")
    assert len(right.patches) == 16
    plt.close(fig)


def test_group_sweep_shows_every_seed_and_the_range():
    errors = {1: [5.0, 7.0, 6.0], 2: [4.0, 4.5, 5.0], 4: [9.0, 3.0, 6.0]}
    fig = groupnorm.plot_group_sweep(errors, ["1", "2", "4"], "t")
    ax = fig.axes[0]
    dots = [line for line in ax.get_lines() if line.get_marker() == "o"]
    assert sum(len(line.get_ydata()) for line in dots) == 9
    mean_line = [line for line in ax.get_lines() if line.get_linestyle() == "-" and line.get_marker() != "o"]
    assert list(mean_line[0].get_ydata()) == pytest.approx([6.0, 4.5, 6.0])
    segments = ax.collections[0].get_segments()
    assert [(s[0][1], s[1][1]) for s in segments] == [(5.0, 7.0), (4.0, 5.0), (3.0, 9.0)]
    plt.close(fig)


def test_data_parallel_figure_uses_no_grey():
    dp_error = {"per-device": [[50, 55], [52, 54]], "synchronized": [[10, 12], [10, 12]]}
    spread = {"worker": torch.rand(8) + 1, "synchronized": torch.rand(8)}
    fig = groupnorm.plot_data_parallel(dp_error, [0, 1], {"batch 2": 46.0, "batch 4": 8.2}, spread, 2)
    colors = _line_colors(fig)
    assert GREY not in colors and mcolors.to_hex("0.5") not in colors and mcolors.to_hex("0.3") not in colors
    assert mcolors.to_hex(viz.color("bn")) in colors
    plt.close(fig)
