"""Training curves of several methods, each in its method's colour."""

from __future__ import annotations

import numpy as np

from .style import color, label

# --------------------------------------------------------------------------- training curves

_METRIC_AXES = {  # metric -> (y-axis label, factor applied to the recorded values)
    "test_accuracy": ("test accuracy (%)", 100.0),
    "train_accuracy": ("training accuracy (%)", 100.0),
    "test_loss": ("test loss", 1.0),
    "train_loss": ("training loss (mini-batch)", 1.0),
    "epoch_loss": ("training loss (epoch mean)", 1.0),
}


def _series(history, metric: str):
    """(x, y) of one run: evaluation metrics against ``history.steps``, the per-update loss
    against the update number, the epoch loss against the epoch number, probes by name."""
    if metric == "train_loss":
        y = history.train_loss
        return np.arange(1, len(y) + 1), np.asarray(y, dtype=float)
    if metric == "epoch_loss":
        y = history.epoch_loss
        return np.arange(1, len(y) + 1), np.asarray(y, dtype=float)
    if metric in ("test_accuracy", "test_loss", "train_accuracy"):
        y = getattr(history, metric)
    elif metric in history.probes:
        y = history.probes[metric]
    else:
        raise KeyError(f"the history records no {metric!r}; probes: {sorted(history.probes)}")
    return np.asarray(history.steps[: len(y)], dtype=float), np.asarray(y, dtype=float)


def _label_or_key(key) -> str:
    try:
        return label(key)
    except KeyError:
        return str(key)


def _moving_average(y: np.ndarray, window: int) -> np.ndarray:
    if window <= 1 or len(y) < window:
        return y
    kernel = np.ones(window) / window
    return np.convolve(y, kernel, mode="valid")


def plot_runs(
    ax,
    runs,
    metric: str = "test_accuracy",
    *,
    colors=None,
    labels=None,
    linestyles=None,
    band: bool = True,
    smooth: int = 1,
):
    """Draw one curve per method: the mean over seeds, and the min-max range as a band.

    ``runs`` maps a method key to a :class:`normlib.lab.train.History` or a list of them (one per
    seed), as :func:`normlib.lab.train.compare` returns. Method keys get the book's colour and
    name (``"bn"`` -> blue, "BatchNorm"); other keys need ``colors`` (and, optionally,
    ``labels``) entries. ``linestyles`` maps keys to matplotlib line styles (default solid):
    the book draws a variant of a method in the method's colour, dashed (e.g. noisy
    BatchNorm: ``colors={"noisy": viz.color("bn")}, linestyles={"noisy": "--"}``). ``metric`` is ``"test_accuracy"``, ``"test_loss"``,
    ``"train_accuracy"``, ``"train_loss"`` (every update; ``smooth`` averages over a moving
    window), ``"epoch_loss"`` or the name of a probe. Accuracies are drawn in percent. Runs
    of different lengths (a diverged seed stops early) are averaged over their common length.
    Sets the axis labels; returns ``ax``.
    """
    colors = dict(colors or {})
    labels = dict(labels or {})
    linestyles = dict(linestyles or {})
    for key, histories in runs.items():
        if not isinstance(histories, (list, tuple)):
            histories = [histories]
        series = [_series(h, metric) for h in histories]
        length = min(len(y) for _, y in series)
        if length == 0:
            continue
        x = series[0][0][:length]
        ys = np.stack([y[:length] for _, y in series])
        if smooth > 1:
            ys = np.stack([_moving_average(y, smooth) for y in ys])
            x = x[smooth - 1 :]
        factor = _METRIC_AXES.get(metric, (metric, 1.0))[1]
        ys = ys * factor
        colour = colors.get(key) or color(key)
        name = labels.get(key) or _label_or_key(key)
        ax.plot(x, ys.mean(axis=0), color=colour, label=name, linestyle=linestyles.get(key, "-"))
        if band and len(ys) > 1:
            ax.fill_between(x, ys.min(axis=0), ys.max(axis=0), color=colour, alpha=0.2, linewidth=0)
    ylabel = _METRIC_AXES.get(metric, (metric, 1.0))[0]
    xlabel = "epoch" if metric == "epoch_loss" else "training step (updates)"
    ax.set(xlabel=xlabel, ylabel=ylabel)
    return ax
