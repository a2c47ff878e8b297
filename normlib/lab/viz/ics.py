"""Figures of chapter 3 (internal covariate shift): percentiles over seeds, a measurement
over seeds as a median with its range, and histogram frames of one unit for the explorer.

Import as ``from normlib.lab.viz import ics``; it draws with :mod:`normlib.lab.viz`'s style.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np

from .style import neutral_styles

__all__ = ["plot_percentiles", "plot_median_band", "plot_floor", "unit_histograms"]

_PERCENTILES = (("p85", "--"), ("p50", "-"), ("p15", ":"))


def plot_percentiles(ax, histories, color: str, *, band: bool = True):
    """The 85th, 50th and 15th percentiles of a probe (``"p85"``, ``"p50"``, ``"p15"``) over
    training: the mean over the seeds (``histories``, one :class:`normlib.lab.train.History` each) as a line
    (dashed, solid, dotted) and, with ``band``, their min-max range as a band. Returns ``ax``."""
    for key, style in _PERCENTILES:
        values = np.array([[float(v) for v in h.probes[key]] for h in histories])
        steps = np.asarray(histories[0].steps)
        ax.plot(steps, values.mean(0), style, color=color, label=f"{key[1:]}th percentile")
        if band and len(values) > 1:
            ax.fill_between(steps, values.min(0), values.max(0), color=color, alpha=0.2, linewidth=0)
    ax.set(xlabel="training step (updates)")
    return ax


def plot_median_band(ax, steps, values, *, color: str, label: str, linestyle: str = "-"):
    """``values[seed, time]`` at ``steps``: the median over seeds as a line and the min-max
    range as a band (drawn only with more than one seed). Returns ``ax``."""
    values = np.asarray(values, dtype=float)
    ax.plot(steps, np.median(values, axis=0), color=color, linestyle=linestyle, label=label)
    if len(values) > 1:
        ax.fill_between(steps, values.min(0), values.max(0), color=color, alpha=0.2, linewidth=0)
    return ax


def plot_floor(ax, steps, values, *, label: str):
    """``values[seed, time]`` at ``steps``: the median over seeds as hollow circles in the first
    neutral colour, without a line, so that a line drawn through the same points stays visible
    (a floor that coincides with a measurement). Returns ``ax``."""
    ax.plot(
        steps,
        np.median(np.asarray(values, dtype=float), axis=0),
        linestyle="none",
        marker="o",
        markersize=8,
        markerfacecolor="none",
        color=neutral_styles(1)[0]["color"],
        label=label,
    )
    return ax


def unit_histograms(
    values: Mapping[str, Mapping[int, np.ndarray]],
    steps: Sequence[int],
    *,
    colors: Mapping[str, str],
    labels: Mapping[str, str],
    xlabel: str,
    title: str,
    bins: int = 30,
):
    """A frame function for :func:`normlib.lab.viz.explorer`: frame ``i`` shows, side by side,
    the histogram of ``values[name][steps[i]]`` for every ``name``. Each panel keeps the same
    horizontal range and height over all frames (the extremes over ``steps``), so drift shows
    as movement. ``title`` is formatted with ``step=``."""
    values = {n: {s: np.asarray(v, dtype=float) for s, v in values[n].items()} for n in values}
    names = list(values)
    ranges = {
        n: (min(float(np.min(values[n][s])) for s in steps), max(float(np.max(values[n][s])) for s in steps))
        for n in names
    }
    tallest = {n: max(np.histogram(values[n][s], bins=bins, range=ranges[n])[0].max() for s in steps) for n in names}

    def frame(i: int):
        step = steps[i]
        fig, axes = plt.subplots(1, len(names), figsize=(3.2 * len(names), 2.7), squeeze=False)
        for ax, name in zip(axes[0], names):
            ax.hist(values[name][step], bins=bins, range=ranges[name], color=colors[name])
            ax.set(title=labels[name], xlabel=xlabel, ylim=(0, 1.05 * tallest[name]))
        axes[0][0].set_ylabel("probe images")
        fig.suptitle(title.format(step=step))
        return fig

    frame.ranges, frame.tallest = ranges, tallest
    return frame
