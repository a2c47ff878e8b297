"""normlib.lab.ics: the matched-loss landscape seed by seed (by_seed, times_largest,
count_above) and normlib.lab.viz.ics.plot_floor."""

from types import SimpleNamespace

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402

from normlib.lab import ics  # noqa: E402
from normlib.lab.viz import ics as ics_plots  # noqa: E402


def _recorder(matched):
    return SimpleNamespace(matched=matched)


PLAIN = [
    _recorder({1.5: (496, {"loss_range": 6.0})}),
    _recorder({1.5: (404, {"loss_range": 0.1}), 1.0: (428, {"loss_range": 17.0})}),
]
BN = [
    _recorder({1.5: (8, {"loss_range": 0.5}), 1.0: (12, {"loss_range": 0.4})}),
    _recorder({1.5: (6, {"loss_range": 0.4}), 1.0: (12, {"loss_range": 0.2})}),
]


def test_by_seed_gives_none_where_a_seed_never_reached_the_level():
    assert ics.by_seed(PLAIN, 1.0, "loss_range") == [None, 17.0]
    assert ics.by_seed(PLAIN, 1.5, "step") == [496, 404]


def test_times_largest_divides_by_the_largest_reference_value():
    assert ics.times_largest(PLAIN, BN, 1.5, "loss_range") == pytest.approx([12.0, 0.2])
    assert ics.times_largest(PLAIN, BN, 1.0, "loss_range") == [None, pytest.approx(42.5)]
    with pytest.raises(ValueError, match="no reference seed"):
        ics.times_largest(PLAIN, BN, 0.5, "loss_range")


def test_count_above_counts_the_runs_above_every_reference_run():
    # level 1.5: 6.0 above both (0.5, 0.4), 0.1 below; level 1.0: 17.0 above
    assert ics.count_above(PLAIN, BN, [1.5, 1.0], "loss_range") == (2, 3)


def test_plot_floor_draws_hollow_markers_without_a_line():
    fig, ax = plt.subplots()
    ics_plots.plot_floor(ax, [50, 100], [[1.0, 2.0], [3.0, 4.0], [2.0, 9.0]], label="floor")
    (line,) = ax.lines
    assert line.get_linestyle() == "None" and line.get_markerfacecolor() == "none"
    assert list(line.get_ydata()) == [2.0, 4.0] and line.get_label() == "floor"
    plt.close(fig)
