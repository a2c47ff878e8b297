"""Chapter 8's figures (GroupNorm and the batch-size problem).

* :func:`plot_batch_sweep` -- the paper's ResNet-50 numbers beside our sweeps;
* :func:`group_frame` -- one frame of the grouping slider (which cells share a statistic,
  and each channel's standard deviation after GroupNorm, coloured by group);
* :func:`plot_group_sweep` -- test error against G, every seed and the spread;
* :func:`plot_data_parallel` -- per-device against synchronized BatchNorm.

Colours: a method's colour means that method; a sweep within GroupNorm uses
:func:`~normlib.lab.viz.shades`; reference lines and series that are not methods use
:func:`~normlib.lab.viz.neutral_styles` (grey is "no normalization" only).
"""

from __future__ import annotations

from typing import Mapping, Sequence

import matplotlib.pyplot as plt

from .axes import draw_norm_axes
from .style import color, label, neutral_styles, shades

__all__ = ["plot_batch_sweep", "group_frame", "group_colors", "plot_group_sweep", "plot_data_parallel"]


def _log2_batches(ax, ticks: Sequence[int]) -> None:
    ax.set_xscale("log", base=2)
    ax.set_xticks(list(ticks), [str(t) for t in ticks])
    ax.minorticks_off()
    ax.set_xlim(min(ticks) / 1.3, max(ticks) * 1.3)  # the axis ends at the data
    ax.set_ylim(bottom=0)
    ax.legend(fontsize=8)


def plot_batch_sweep(
    paper_sizes: Sequence[int],
    paper_error: Mapping[str, Sequence[float]],
    paper_at_32: Mapping[str, float],
    batch_sizes: Sequence[int],
    error: Mapping[tuple, Sequence[float]],
    titles: Mapping[str, str],
    suptitle: str,
):
    """Three panels: the paper's top-1 error against images per GPU (its x-axis spans the
    paper's sizes only), then one panel per network of ``titles`` with the test error of
    each ``(network, norm)`` of ``error`` against ``batch_sizes``. Returns the figure."""
    fig, axes = plt.subplots(1, 1 + len(titles), figsize=(11, 3.6))
    ax = axes[0]
    for norm, values in paper_error.items():
        ax.plot(paper_sizes, values, "o-", color=color(norm), label=label(norm))
    for norm, value in paper_at_32.items():
        ax.plot([32], [value], "s", color=color(norm), label=label(norm))
    ax.set(title="Paper: ResNet-50, ImageNet", ylabel="top-1 error (%)", xlabel="images per GPU")
    _log2_batches(ax, sorted(paper_sizes))
    for ax, (network, title) in zip(axes[1:], titles.items()):
        for (net, norm), values in error.items():
            if net == network:
                ax.plot(batch_sizes, values, "o-", color=color(norm), label=label(norm))
        ax.set(title=title, ylabel="test error (%)", xlabel="batch size")
        _log2_batches(ax, batch_sizes)
    fig.suptitle(suptitle)
    return fig


def group_colors(groups: int, channels: int) -> list[str]:
    """One colour per channel: GroupNorm's colour in ``groups`` shades, one per group."""
    if channels % groups:
        raise ValueError(f"group_colors: {channels} channels do not split into {groups} groups")
    palette = shades("gn", groups)
    return [palette[c // (channels // groups)] for c in range(channels)]


def group_frame(groups: int, channel_std, top: float):
    """One slider frame: left, which cells of an (N = 3, C, H·W = 4) tensor share a
    statistic under GroupNorm with ``groups`` groups, C the number of channels of
    ``channel_std``; right, the standard deviation of each channel after GroupNorm
    (``channel_std``), coloured by group. Returns the figure."""
    channel_std = [float(v) for v in channel_std]
    channels = len(channel_std)
    fig, (ax_box, ax_bar) = plt.subplots(1, 2, figsize=(7.6, 3.0), gridspec_kw={"width_ratios": [1, 1.4]})
    draw_norm_axes(
        ax_box,
        "gn",
        num_groups=groups,
        shape=(3, channels, 4),
        show_partition=True,
        title=f"G = {groups} of C = {channels} channels",
    )
    ax_bar.bar(range(channels), channel_std, color=group_colors(groups, channels))
    ax_bar.set(
        xlabel="channel (shade: group)",
        ylabel="std after GroupNorm",
        ylim=(0, top),
        title=f"one digit, {channels} channels, G = {groups}",
    )
    return fig


def plot_group_sweep(group_error: Mapping[int, Sequence[float]], tick_labels: Sequence[str], title: str):
    """Test error against the number of groups: each seed a dot, the mean a line, and the
    range over seeds a vertical bar. Returns the figure."""
    counts = list(group_error)
    fig, ax = plt.subplots(figsize=(5, 3.2))
    gn = color("gn")
    lows = [min(v) for v in group_error.values()]
    highs = [max(v) for v in group_error.values()]
    means = [sum(v) / len(v) for v in group_error.values()]
    ax.vlines(counts, lows, highs, color=gn, alpha=0.45, lw=6, label="range over seeds")
    for g, values in group_error.items():
        ax.plot([g] * len(values), values, "o", color=gn, mfc="white", ms=5)
    ax.plot(counts, means, "-", color=gn, label=f"mean of {len(group_error[counts[0]])} seeds")
    ax.set_xscale("log", base=2)
    ax.set_xticks(counts, list(tick_labels))
    ax.minorticks_off()
    ax.set(xlabel="number of groups G", ylabel="test error (%)", ylim=(0, None), title=title)
    ax.legend()
    return fig


def plot_data_parallel(dp_error, seeds, sweep_levels: Mapping[str, float], spread, workers: int):
    """Left: test error of per-device and synchronized BatchNorm per seed and worker
    (``dp_error[mode][worker][seed]``), with the one-process sweep's errors
    (``sweep_levels``: text -> error) as reference lines. Right: per channel, the variance
    of a worker's batch mean against that of the synchronized mean (``spread``), with the
    line of ratio 1/``workers``. Returns the figure."""
    fig, (ax_err, ax_var) = plt.subplots(1, 2, figsize=(9.5, 3.4))
    bn = color("bn")
    for mode, marker in (("per-device", "o"), ("synchronized", "s")):
        for k in range(workers):
            ax_err.plot(
                [s + 0.08 * (k - 0.5) for s in seeds],
                dp_error[mode][k],
                marker,
                color=bn,
                mfc="none" if mode == "per-device" else bn,
                label=f"{mode} BN" if k == 0 else None,
            )
    reference = neutral_styles(2)[1]
    for level, text in ((v, k) for k, v in sweep_levels.items()):
        ax_err.axhline(level, color=reference["color"], ls=reference["linestyle"], lw=1)
        ax_err.text(max(seeds) + 0.25, level, f"one process,\n{text}", va="center", fontsize=8)
    ax_err.set(
        xticks=list(seeds),
        xlim=(min(seeds) - 0.4, max(seeds) + 0.9),
        ylim=(0, None),
        xlabel="seed",
        ylabel="test error (%)",
        title=f"{workers} workers × 2 digits: synced ≈ batch 4",
    )
    ax_err.legend(fontsize=8, loc="center left")
    worker, synced = ([float(v) for v in spread[k]] for k in ("worker", "synchronized"))
    top = 1.1 * max(worker)
    ax_var.plot([0, top], [0, top / workers], ls=reference["linestyle"], color=reference["color"], lw=1)
    ax_var.plot(worker, synced, "o", ms=3, color=bn)
    ax_var.set(
        xlabel="variance of a worker's batch mean",
        ylabel="variance of the synced mean",
        title="Per channel: synced mean varies half as much",
    )
    ax_var.text(0.03, 0.92, "dashed: ratio 1/K", transform=ax_var.transAxes, fontsize=8)
    return fig
