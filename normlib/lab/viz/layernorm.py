"""Figures of chapter 6 (LayerNorm in recurrent networks and Transformers).

* :func:`cell_state_figure` -- the batch mean and spread of an LSTM's cell state at every
  time step (what a per-step BatchNorm would use), for a network without normalization:
  drawn in the grey of "no normalization";
* :func:`padding_frame` -- one frame of the padded-batch explorer: which values one
  BatchNorm statistic and one LayerNorm statistic cover at time step ``t``;
* :func:`depth_figure` -- post-LN vs pre-LN Transformers at initialization: gradient norms
  per block and against depth, and the size of the residual stream.

Import it as ``from normlib.lab.viz import layernorm``. Each function returns the Figure.
"""

from __future__ import annotations

from typing import Dict, Optional, Sequence

import matplotlib.pyplot as plt

from .style import color, neutral_styles, shades

__all__ = ["cell_state_figure", "padding_frame", "depth_figure"]


def cell_state_figure(batch_mean, batch_std, units: int = 3, title: str = ""):
    """Two panels over time steps: ``batch_mean[:, u]`` and ``batch_std[:, u]`` for the first
    ``units`` units (shades of grey: no normalization), and the spread averaged over all
    units (dark dashed). Both inputs have shape (T, H)."""
    steps = range(batch_mean.shape[0])
    greys = shades("none", units + 1)[:0:-1]  # unit 0 darkest; not the lightest
    fig, axes = plt.subplots(1, 2, figsize=(8, 3.0))
    for unit in range(units):
        label = f"unit {unit}"
        axes[0].plot(steps, batch_mean[:, unit].tolist(), color=greys[unit], label=label)
        axes[1].plot(steps, batch_std[:, unit].tolist(), color=greys[unit])
    average = neutral_styles(2)[1]
    average.pop("marker")
    axes[1].plot(steps, batch_std.mean(dim=1).tolist(), label=f"mean over the {batch_std.shape[1]} units", **average)
    axes[0].set(xlabel="time step t", ylabel="mean of $c_t$ over the batch", title="Per-step batch mean")
    axes[1].set(xlabel="time step t", ylabel="std of $c_t$ over the batch", title="Per-step batch standard deviation")
    axes[0].legend()
    axes[1].legend()
    fig.suptitle(title)
    return fig


def padding_frame(outputs, real, t: int, unit: int = 0, limit: Optional[float] = None):
    """The padded batch at step ``t``: left, the (N, T) grid of real (light) and padded
    (dark) positions, BatchNorm's column at ``t`` framed in BatchNorm's colour and each
    real cell there in LayerNorm's (one LayerNorm statistic each); right, unit ``unit`` of
    ``outputs`` (N, T, D) at step ``t`` -- real values as grey dots (the LSTM has no
    normalization), padding as dark crosses -- and BatchNorm's mean of the column with and
    without the padding."""
    n = real.shape[0]
    at_t = real[:, t]
    values = outputs[:, t, unit]
    if limit is None:
        limit = 1.1 * float(outputs[..., unit].abs().max())
    fig, (grid_ax, value_ax) = plt.subplots(1, 2, figsize=(7.2, 3.3), gridspec_kw={"width_ratios": [1.6, 1]})
    grid_ax.imshow(real.float().numpy(), cmap="Greys_r", vmin=-0.6, vmax=1.4, aspect="auto", interpolation="none")
    grid_ax.add_patch(plt.Rectangle((t - 0.5, -0.5), 1, n, fill=False, ec=color("bn"), lw=2.5))
    for row in range(n):
        if at_t[row]:
            grid_ax.add_patch(plt.Rectangle((t - 0.4, row - 0.4), 0.8, 0.8, fill=False, ec=color("ln")))
    running = int(at_t.sum())
    grid_ax.set(
        xlabel="time step",
        ylabel="sequence",
        title=f"step {t}: BN's column holds {running} real and {n - running} padded values",
    )
    real_rows = [r for r in range(n) if at_t[r]]
    padded_rows = [r for r in range(n) if not at_t[r]]
    value_ax.scatter(values[at_t].tolist(), real_rows, color=color("none"), zorder=3, label="real (no norm)")
    value_ax.scatter(values[~at_t].tolist(), padded_rows, color="#222222", marker="x", zorder=3, label="padding")
    value_ax.axvline(float(values.mean()), color=color("bn"), ls="--", label="BN mean, padding in")
    value_ax.axvline(float(values[at_t].mean()), color=color("bn"), label="BN mean, real only")
    value_ax.set(
        xlim=(-limit, limit),
        ylim=(n - 0.5, -0.5),
        yticks=[],
        xlabel=f"unit {unit} of $h_t$",
        title="the column's values",
    )
    value_ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.22), ncol=2, fontsize=7)
    return fig


def depth_figure(
    norms: Dict[tuple, Sequence[float]],
    depths: Sequence[int],
    stream: Dict[str, Sequence[float]],
    depth: int = 12,
    title: str = "",
):
    """Three panels, post-LN dashed with open markers and pre-LN solid, both in LayerNorm's
    colour: ``norms[position, depth]`` per block; the last block's value against the number
    of blocks ``depths``; ``stream[position]`` (mean token norm entering each block and
    leaving the last) for the model of ``depth`` blocks."""
    style = {
        "post": dict(ls="--", marker="o", mfc="white", label="post-LN"),
        "pre": dict(ls="-", marker="o", label="pre-LN"),
    }
    fig, axes = plt.subplots(1, 3, figsize=(9.5, 3.0))
    for position in ("post", "pre"):
        kw = dict(color=color("ln"), **style[position])
        axes[0].plot(range(1, depth + 1), [float(v) for v in norms[position, depth]], **kw)
        axes[1].plot(depths, [float(norms[position, d][-1]) for d in depths], **kw)
        axes[2].plot(range(depth + 1), [float(v) for v in stream[position]], **kw)
    ticks = sorted({1, *range(4, depth + 1, 4)})
    axes[0].set_xticks(ticks)
    axes[2].set_xticks([0, *ticks[1:]])
    axes[0].set(
        xlabel=f"block l (of {depth})",
        ylabel=r"$\|\partial \mathrm{loss} / \partial W_2\|$ of block l",
        title=f"Per block, depth {depth}",
    )
    axes[1].set(xlabel="number of blocks L", ylabel="the same, last block", title="Last block vs depth", xscale="log")
    axes[1].set_xticks(list(depths), [str(d) for d in depths])
    axes[1].minorticks_off()
    axes[2].set(
        xlabel="after block l (0: embedding)", ylabel="mean token norm", title=f"Residual stream, depth {depth}"
    )
    axes[0].legend()
    fig.suptitle(title)
    return fig
