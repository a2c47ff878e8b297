"""Figures of chapter 2 ("Why normalize"): conditioning of inputs, and scale through depth.

* :func:`loss_curves` -- the excess loss of gradient descent on several versions of the same
  inputs (series that are not methods: :func:`~normlib.lab.viz.neutral_styles`);
* :func:`stretch_frame` -- loss contours of least squares in the plane of two weights and
  the path of gradient descent, one frame of the "stretch one feature" slider;
* :func:`gain_frame` -- scale, saturation and gradient of every layer of two networks (no
  normalization and BatchNorm) at one weight gain, one frame of the "weight scale" slider;
  every frame shares axes that hold every value of every frame;
* :func:`drift_figure` -- the scale of every layer during training, one panel per network,
  the evaluation steps in shades of the method's colour (the last step darkest).

Imported as ``from normlib.lab.viz import conditioning``; experiment code lives in
:mod:`normlib.lab.conditioning`.
"""

from __future__ import annotations

import math
from typing import Dict, Mapping, Optional, Sequence, Tuple

import matplotlib.pyplot as plt
import numpy as np

from .. import conditioning as lab
from .style import color, label, neutral_styles, shades

__all__ = ["loss_curves", "stretch_frame", "gain_frame", "GAIN_PANELS", "drift_figure", "DRIFT_PANELS"]


def loss_curves(curves: Mapping[str, np.ndarray], title: str):
    """One line per entry of ``curves`` (name -> excess loss per step), log-log axes. The
    last entry is drawn thickest (the chapter's standardized inputs).

    ``curve[t]`` is the excess loss after ``t`` steps, so ``curve[0]`` is the start (1 for
    excess relative to the start). Step ``t`` is drawn at ``x = t``: from step 1 on, since a
    log axis has no 0."""
    fig, ax = plt.subplots(figsize=(6, 3.4))
    styles = neutral_styles(len(curves))[::-1]  # the last entry: dark, solid
    for (name, curve), style in zip(curves.items(), styles):
        style.pop("marker")
        width = 2.4 if name == list(curves)[-1] else 1.5
        ax.plot(np.arange(1, len(curve)), curve[1:], label=name, linewidth=width, **style)
    ax.set(
        xscale="log",
        yscale="log",
        xlabel="gradient-descent step t",
        ylabel="excess loss / starting excess",
        title=title,
    )
    ax.legend(loc="lower left")
    return fig


def stretch_frame(X: np.ndarray, y: np.ndarray, stretch: float, drawn: int = 30, max_steps: int = 20_000):
    """Loss contours of ``|Xw - y|^2 / (2n)`` for a two-column ``X`` (no intercept: centre
    ``X`` and ``y``), drawn to the same scale on both axes, and the first ``drawn`` steps
    of gradient descent from ``w = 0`` at the best constant learning rate; the axes hold the
    minimizer and every drawn step. Returns
    ``(figure, steps)``, ``steps`` being the steps to an excess loss of 1e-6 of the start
    (or ``max_steps`` if it got no further; the title then says so)."""
    excess, path = lab.gradient_descent(X, y, lab.best_learning_rate(X), max_steps=max_steps, weights=True)
    steps, converged = len(excess) - 1, excess[-1] <= 1e-6
    H = lab.hessian(X)
    w_star = np.linalg.solve(H, X.T @ y / len(X))
    shown = path[: drawn + 1]
    # Axes that hold the minimizer and every drawn step (early steps may overshoot it).
    half = 1.1 * max(np.abs(w_star).max(), np.abs(shown).max())
    grid = np.linspace(-half, half, 201)
    W1, W2 = np.meshgrid(grid, grid)
    E = np.stack([W1 - w_star[0], W2 - w_star[1]], axis=-1)
    excess_grid = 0.5 * np.einsum("...i,ij,...j->...", E, H, E)
    fig, ax = plt.subplots(figsize=(4.2, 3.9))
    levels = np.geomspace(0.05, 300, 12)
    ax.contour(W1, W2, excess_grid, levels=levels, colors="#c8c8c8", linewidths=0.7)
    style = neutral_styles(1)[0]
    ax.plot(shown[:, 0], shown[:, 1], markersize=2.5, linewidth=1, **style)
    ax.plot(*w_star, "*", color="black", markersize=9)
    kappa = lab.condition_number(X)
    reached = f"{steps} steps to 1e-6" if converged else f"not at 1e-6 in {steps} steps"
    ax.set(
        xlim=(-half, half),
        ylim=(-half, half),
        aspect="equal",
        xlabel="mileage weight (per unit of the stretched feature)",
        ylabel="age weight",
        title=f"stretch {stretch}: κ = {kappa:.0f}, {reached}",
    )
    return fig, steps


#: The panels of :func:`gain_frame`, each a (report key, y label, y scale) tuple.
GAIN_PANELS = [
    ("std", "std of layer output", "log"),
    ("saturated", "fraction saturated", "linear"),
    ("gradient", "‖∂L/∂W‖ of layer", "log"),
]


def _log_limits(values: np.ndarray) -> Tuple[float, float]:
    positive = values[values > 0]
    return 10 ** math.floor(math.log10(positive.min())), 10 ** math.ceil(math.log10(positive.max()))


def gain_frame(
    reports: Mapping[Tuple[float, str], Dict[str, np.ndarray]], gain: float, depth_label: str = "tanh, 10 layers"
):
    """The frame of ``gain``: for every hidden layer, the :func:`~normlib.lab.conditioning.layer_report`
    entries of :data:`GAIN_PANELS` of both networks, ``reports[gain, "none"]`` and
    ``reports[gain, "bn"]``. The y-axes are those of *all* gains in ``reports``, so every
    value of every frame is inside its panel and the frames compare at a glance. BatchNorm
    is drawn wide under the plain network's line, so both show where they coincide."""
    fig, axes = plt.subplots(1, 3, figsize=(9.6, 2.9))
    for ax, (key, ylabel, yscale) in zip(axes, GAIN_PANELS):
        everything = np.concatenate([r[key] for r in reports.values()])
        for norm, width in (("bn", 3.2), ("none", 1.4)):
            values = reports[gain, norm][key]
            layers = np.arange(1, len(values) + 1)
            ax.plot(layers, values, "o-", markersize=3, linewidth=width, color=color(norm), label=label(norm))
        ax.set(xlabel="hidden layer", ylabel=ylabel, yscale=yscale)
        if yscale == "log":
            ax.set_ylim(*_log_limits(everything))
        else:
            ax.set_ylim(-0.02, max(1.0, everything.max() + 0.02))
    axes[1].legend(loc="upper right")
    ratio = {norm: reports[gain, norm]["std"][-1] / reports[gain, norm]["std"][0] for norm in ("none", "bn")}
    fig.suptitle(
        f"{depth_label}, g = {gain}: std of the last layer / the first is\n"
        f"{ratio['none']:.2g} without normalization, {ratio['bn']:.2g} with BatchNorm"
    )
    return fig


#: The panels of :func:`drift_figure`, each a (network, layer kind, panel title) tuple.
DRIFT_PANELS = [
    ("none", "act", "no normalization: layer outputs"),
    ("bn", "act", "BatchNorm: layer outputs"),
    ("bn", "linear", "BatchNorm: before normalizing"),
]


def drift_figure(histories: Mapping[str, object], title: str, panels: Optional[Sequence[Tuple[str, str, str]]] = None):
    """The standard deviation of every layer at every evaluation step of ``histories``
    (``{"none": History, "bn": History}`` recorded with
    :func:`~normlib.lab.conditioning.scale_probe`), one panel per entry of ``panels`` (default :data:`DRIFT_PANELS`). The
    steps of one network are shades of its method's colour, lightest first; the last step
    is the darkest and widest line. Every panel has its own legend."""
    panels = DRIFT_PANELS if panels is None else panels
    fig, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels), 3.1), sharey=True)
    for ax, (norm, kind, panel_title) in zip(axes, panels):
        history = histories[norm]
        colours = shades(norm, len(history.steps))
        for step, colour in zip(history.steps, colours):
            values = lab.per_layer(history, kind, step)
            last = step == history.steps[-1]
            ax.plot(
                np.arange(1, len(values) + 1),
                values,
                "o-",
                markersize=3,
                linewidth=2.4 if last else 1.3,
                color=colour,
                label=f"step {step}",
                zorder=3 if last else 2,
            )
        ax.set(title=panel_title, xlabel="hidden layer", yscale="log")
        ax.legend(loc="lower center", ncol=3, fontsize=7, handlelength=1.5, columnspacing=0.8)
    axes[0].set_ylabel("standard deviation")
    axes[0].set_ylim(0.015, 2)
    fig.suptitle(title)
    return fig
