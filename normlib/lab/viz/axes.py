"""The N x C x (H.W) box of Wu & He (2018, Figure 2) with the cells that share statistics."""

from __future__ import annotations

from typing import Sequence

import numpy as np
from matplotlib.collections import PolyCollection
from matplotlib.colors import to_rgb

from .style import _key, color, label

# --------------------------------------------------------------------------- the N x C x (H.W) box

_REDUCED_OVER = {
    "bn": "N, H·W",
    "ln": "C, H·W",
    "in": "H·W",
    "gn": "C/G, H·W",
    "ibn": "H·W (IN half); N, H·W (BN half)",
}


def statistic_ids(
    method: str, shape: Sequence[int] = (4, 6, 5), num_groups: int = 2, instance_channels: int | None = None
) -> np.ndarray:
    """Integer array of ``shape`` (N, C, H·W): cells with the same id share one mean and one
    variance under ``method`` ("bn", "ln", "in", "gn" or "ibn"). For "ibn" the first
    ``instance_channels`` channels (default C // 2) are instance-normalized, the rest
    batch-normalized, as in :class:`normlib.IBNorm`."""
    key = _key(method)
    N, C, HW = shape
    n, c, _ = np.meshgrid(np.arange(N), np.arange(C), np.arange(HW), indexing="ij")
    if key == "bn":
        return c
    if key == "ln":
        return n
    if key == "in":
        return n * C + c
    if key == "gn":
        if C % num_groups:
            raise ValueError(f"C={C} is not divisible by num_groups={num_groups}")
        return n * num_groups + c // (C // num_groups)
    if key == "ibn":
        k = C // 2 if instance_channels is None else int(instance_channels)
        if not 0 < k < C:
            raise ValueError(f"instance_channels={k} must be between 1 and C - 1 = {C - 1}")
        # Instance sets n * k + c for c < k; then one batch set per remaining channel.
        return np.where(c < k, n * k + c, N * k + (c - k))
    raise ValueError(f"draw_norm_axes handles 'bn', 'ln', 'in', 'gn', 'ibn', not {method!r}")


def _mix(rgb, weight):
    """rgb blended towards white; weight 1 keeps the colour, 0 gives white."""
    return tuple(weight * np.asarray(rgb) + (1 - weight) * np.ones(3))


def draw_norm_axes(
    ax,
    method: str,
    num_groups: int = 2,
    shape: Sequence[int] = (4, 6, 5),
    *,
    title: str | None = None,
    note: str | None = None,
    show_partition: bool = False,
    depth: tuple[float, float] = (0.45, 0.32),
    instance_channels: int | None = None,
):
    """Draw the N x C x (H·W) tensor as a box of cells, Wu & He (2018) Figure 2 style.

    N runs left to right, H·W (all spatial positions flattened) bottom to top, and C into
    the page. The cells that share ONE mean and variance -- those of sample 0, channel 0's
    set -- are filled with the method's colour. With ``show_partition=True`` the other sets
    are tinted lightly (alternating shades), so the number of sets can be counted.

    ``method`` is one of "bn", "ln", "in", "gn", "ibn"; ``num_groups`` is used by "gn" only,
    ``instance_channels`` (default C // 2) by "ibn" only.
    ``title`` replaces the default title (method name and the dims it reduces over);
    ``note`` is a line of text under the box. Returns ``ax``.
    """
    key = _key(method)
    N, C, HW = (int(s) for s in shape)
    ids = statistic_ids(key, (N, C, HW), num_groups, instance_channels)
    chosen = ids[0, 0, 0]
    base = to_rgb(color(key))
    dx, dy = depth

    def fill(cell_id):
        if cell_id == chosen:
            return base
        if show_partition:
            return _mix(base, 0.12 if cell_id % 2 else 0.28)
        return (1.0, 1.0, 1.0)

    polys, faces = [], []
    # Front face (channel 0): one square per (n, position).
    for n in range(N):
        for k in range(HW):
            polys.append([(n, k), (n + 1, k), (n + 1, k + 1), (n, k + 1)])
            faces.append(fill(ids[n, 0, k]))
    # Top face (last position): one parallelogram per (n, c).
    for n in range(N):
        for c in range(C):
            x0, y0 = n + c * dx, HW + c * dy
            polys.append([(x0, y0), (x0 + 1, y0), (x0 + 1 + dx, y0 + dy), (x0 + dx, y0 + dy)])
            faces.append(_mix(fill(ids[n, c, HW - 1]), 0.85))
    # Right face (last sample): one parallelogram per (c, position).
    for c in range(C):
        for k in range(HW):
            x0, y0 = N + c * dx, k + c * dy
            polys.append([(x0, y0), (x0 + dx, y0 + dy), (x0 + dx, y0 + 1 + dy), (x0, y0 + 1)])
            faces.append(_mix(fill(ids[N - 1, c, k]), 0.7))
    ax.add_collection(PolyCollection(polys, facecolors=faces, edgecolors="0.35", linewidths=0.6))

    # Axis labels along three edges of the box.
    ax.annotate("", xy=(N, -0.35), xytext=(0, -0.35), arrowprops=dict(arrowstyle="->", color="0.2", lw=0.8))
    ax.text(N / 2, -0.6, "N", ha="center", va="top")
    ax.annotate("", xy=(-0.35, HW), xytext=(-0.35, 0), arrowprops=dict(arrowstyle="->", color="0.2", lw=0.8))
    ax.text(-0.6, HW / 2, "H·W", ha="right", va="center", rotation=90)
    ax.annotate(
        "",
        xy=(C * dx - 0.3, HW + C * dy + 0.25),
        xytext=(-0.3, HW + 0.25),
        arrowprops=dict(arrowstyle="->", color="0.2", lw=0.8),
    )
    ax.text(C * dx / 2 - 0.55, HW + C * dy / 2 + 0.45, "C", ha="right", va="bottom")

    if title is None:
        name = label(key) + (f" (G={num_groups})" if key == "gn" else "")
        title = f"{name}\nstatistics over {_REDUCED_OVER[key]}"
    ax.set_title(title)
    bottom = -1.4
    if note:
        ax.text((N + C * dx) / 2, -1.3, note, ha="center", va="top", fontsize=9)
        bottom = -2.2 - 0.45 * note.count("\n")
    ax.set_xlim(-1.5, N + C * dx + 0.3)
    ax.set_ylim(bottom, HW + C * dy + 0.6)
    ax.set_aspect("equal")
    ax.axis("off")
    return ax
