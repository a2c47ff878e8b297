"""Chapter 11's figures: the errors of three variance algorithms, and the bandwidth of a
copy and of LayerNorm against tensor size (the frames of a slider).

The series here are algorithms and operations, not normalization methods, so they are
drawn in :func:`~normlib.lab.viz.neutral_styles`, never in a method's colour. A chapter
imports the module as ``from normlib.lab.viz import speed``.
"""

from __future__ import annotations

from typing import Dict, Sequence

import matplotlib.pyplot as plt

from .style import neutral_styles

__all__ = ["size_label", "cache_relation", "variance_errors", "bandwidth_frame"]


def size_label(nbytes: int) -> str:
    """A tensor size for a label: ``"16 KiB"``, ``"4 MiB"``, ``"128 MiB"`` (powers of 1024)."""
    if nbytes >= 2**20:
        return f"{nbytes / 2**20:.3g} MiB"
    return f"{nbytes / 2**10:.3g} KiB"


def cache_relation(nbytes: int, cache_bytes: int) -> str:
    """How a tensor of ``nbytes`` compares with a cache of ``cache_bytes``, in words."""
    if nbytes <= cache_bytes:
        return f"fits in the {size_label(cache_bytes)} last-level cache"
    return f"{nbytes / cache_bytes:.3g}× the {size_label(cache_bytes)} last-level cache"


def variance_errors(shifts: Sequence[float], errors: Dict[str, Sequence[float]], u: float):
    """Log-log plot of each algorithm's relative error of the variance against the mean
    over the standard deviation, with the lines ``u (mu/sigma)^2`` and ``u mu/sigma``."""
    fig, ax = plt.subplots(figsize=(5.5, 3.4))
    for (name, values), style in zip(errors.items(), neutral_styles(len(errors))):
        ax.loglog(shifts, values, label=name, **style)
    for power, line, text in ((2, ":", r"$u\,(\mu/\sigma)^2$"), (1, "--", r"$u\,\mu/\sigma$")):
        reference = [u * s**power for s in shifts]
        ax.loglog(shifts, reference, line, color="#888888", lw=1, label=text)
    ax.set(
        xlabel=r"mean / standard deviation, $\mu/\sigma$",
        ylabel="relative error of the variance",
        title="One pass loses digits as (mean/std)²; Welford as mean/std",
    )
    ax.legend(fontsize=8)
    return fig


def bandwidth_frame(sizes: Sequence[int], curves: Dict[str, Sequence[float]], i: int, cache_bytes: int):
    """One slider frame: effective bandwidth (GB/s) against tensor size in bytes for every
    curve, the cache size marked, and bars for size ``sizes[i]`` on their own scale.

    The title says where the size stands against the cache: a fact about the machine, not
    a measurement, so that it holds on every build.
    """
    fig, (left, right) = plt.subplots(1, 2, figsize=(7.2, 2.9), gridspec_kw={"width_ratios": [3, 2]})
    styles = neutral_styles(len(curves))
    for (name, values), style in zip(curves.items(), styles):
        left.semilogx(sizes, values, label=name, markersize=4, **style)
    left.axvline(cache_bytes, color="#888888", lw=1, ls=":", label="last-level cache")
    left.axvline(sizes[i], color="k", lw=0.8)
    left.set(xlabel="tensor size (bytes)", ylabel="bandwidth (GB/s)")
    left.legend(fontsize=7)
    values = [curves[name][i] for name in curves]
    bars = right.barh(list(curves), values, color=[s["color"] for s in styles])
    right.bar_label(bars, fmt="%.3g", fontsize=7, padding=2)
    right.set(xlabel="GB/s at this size", xlim=(0, 1.3 * max(values)))
    right.invert_yaxis()
    right.tick_params(axis="y", labelsize=7)
    fig.suptitle(
        f"{size_label(sizes[i])}: {cache_relation(sizes[i], cache_bytes)} (measured at build)",
        fontsize=9,
    )
    return fig
