"""Figures for chapter 4, BatchNorm in training.

* :func:`jacobian_heatmap` -- a Jacobian as a heatmap whose symmetric colour range
  comes from its own entries, with a colourbar.
* :func:`plot_over_seeds` -- one line per method (the mean over seeds) and a dot
  per seed, so the spread is visible.
* :func:`plot_batch_noise` -- measured spread of one normalized value against the
  first-order formula, in shades of BatchNorm's colour, legend beside the axes.
* :func:`points_under_legend` -- the data points a legend hides (a check that a
  legend covers none).
"""

from __future__ import annotations

import math
from typing import Mapping, Sequence

import numpy as np

from .style import color, label, shades

__all__ = ["jacobian_heatmap", "plot_over_seeds", "plot_batch_noise", "points_under_legend"]


def jacobian_heatmap(ax, jacobian, *, cmap: str = "RdBu_r"):
    """Draw ``jacobian`` on ``ax`` with a colour range symmetric about 0 and as wide
    as its largest entry (so that small entries still show), plus a colourbar.
    Returns the image (``image.get_clim()`` gives the range)."""
    values = np.asarray(jacobian, dtype=float)
    limit = float(np.abs(values).max())
    image = ax.imshow(values, cmap=cmap, vmin=-limit, vmax=limit)
    ax.figure.colorbar(image, ax=ax, label=r"$\partial y_i / \partial x_j$")
    ax.set(xlabel="input j", ylabel="output i")
    return image


def plot_over_seeds(
    ax,
    xs: Sequence,
    values: Mapping[str, Sequence[Sequence[float]]],
    *,
    colors: Mapping[str, str] | None = None,
    labels: Mapping[str, str] | None = None,
    marker: str = "o",
):
    """For each series ``key``, ``values[key][i]`` holds one number per seed at
    ``xs[i]`` (NaN for a missing one): draw the mean over seeds as a line and every
    seed as a small dot of the same colour. Colours and labels default to the
    method's (``key`` a method name such as ``"bn"``)."""
    for key, per_x in values.items():
        colour = colors[key] if colors else color(key)
        name = labels[key] if labels else label(key)
        means = [np.nanmean(v) for v in per_x]
        ax.plot(xs, means, marker=marker, color=colour, label=f"{name} (mean)")
        for x, v in zip(xs, per_x):
            ax.plot([x] * len(v), v, ".", color=colour, alpha=0.6, markersize=5)


def plot_batch_noise(ax, sizes: Sequence[int], measured: Mapping[float, Sequence[float]]):
    """Measured standard deviation of one normalized value ``z`` over random batches
    (``measured[z][i]`` at batch size ``sizes[i]``) as markers, and the first-order
    formula sqrt((1 + z²/2) / N) as a dashed line of the same shade of BatchNorm's
    colour; log-log axes, legend beside the axes (it covers no point)."""
    tones = shades("bn", len(measured))
    for tone, (z, sds) in zip(tones, measured.items()):
        formula = [math.sqrt((1 + z * z / 2) / n) for n in sizes]
        ax.plot(sizes, sds, "o", color=tone, label=f"measured, z = {z}")
        ax.plot(sizes, formula, "--", color=tone, label=f"formula, z = {z}")
    ax.set(xscale="log", yscale="log", xlabel="batch size N")
    ax.set_xticks(sizes, [str(n) for n in sizes])
    ax.minorticks_off()
    ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0))


def points_under_legend(ax) -> int:
    """How many data points (line vertices) of ``ax`` lie inside its legend's box,
    in display coordinates (draws the figure once to place the legend)."""
    legend = ax.get_legend()
    if legend is None:
        return 0
    ax.figure.canvas.draw()
    box = legend.get_window_extent()
    count = 0
    for line in ax.get_lines():
        xy = ax.transData.transform(np.column_stack(line.get_data()))
        count += int(sum(box.contains(x, y) for x, y in xy))
    return count
