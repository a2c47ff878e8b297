"""Figures for chapter 5 (BatchNorm at inference)."""

from __future__ import annotations

from typing import Optional, Sequence

import matplotlib.pyplot as plt
from matplotlib.figure import Figure

from .style import color, neutral_styles

__all__ = ["running_mean_frame"]


def running_mean_frame(
    batch_means: Sequence[float],
    true_mean: Sequence[float],
    running_mean: Sequence[float],
    momentum: Optional[float],
) -> Figure:
    """One frame of the momentum slider: the batch means (small dots), the true mean
    (dashed) and BatchNorm's ``running_mean`` (BatchNorm's colour) over the training steps.
    The dots and the dashed line are not methods, so they take neutral styles
    (:func:`~normlib.lab.viz.neutral_styles`), never the grey of "no normalization".
    The title states where the estimate ends and where the true mean is."""
    fig, ax = plt.subplots(figsize=(5.0, 3.0))
    steps = range(1, len(batch_means) + 1)
    dots, dashed = neutral_styles(2)
    ax.plot(steps, batch_means, ".", color=dots["color"], ms=2, label="batch means")
    ax.plot(steps, true_mean, color=dashed["color"], linestyle=dashed["linestyle"], lw=1, label="true mean")
    ax.plot(steps, running_mean, color=color("bn"), lw=1.8, label="running_mean")
    name = "None (cumulative)" if momentum is None else momentum
    ax.set(
        xlabel="training step (batches seen)",
        ylabel="value",
        ylim=(-1.5, 5.3),
        title=f"momentum = {name}: ends at {float(running_mean[-1]):.2f}, true mean {float(true_mean[-1]):g}",
    )
    ax.legend(loc="upper center", ncol=3, fontsize=8)
    return fig
