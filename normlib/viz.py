"""The book's one figure style.

Every chapter draws with these helpers so that a method has the same colour, and a figure
the same look, on every page:

* :data:`METHOD_COLORS`, :data:`METHOD_LABELS` and :func:`color` -- one colour-blind-safe
  colour (Okabe & Ito palette, plus a dark brown for IBN once its eight colours ran out) and
  one display name per method, used across the book.
* :func:`use_style` -- matplotlib settings for the book (small figures, readable fonts,
  no top/right spines, dpi 100 so that embedded PNGs stay small).
* :func:`draw_norm_axes` -- the N x C x (H.W) box of Wu & He (2018, Figure 2) with the cells
  that share one set of statistics highlighted.
* :func:`explorer` -- a slider over precomputed frames that works with a live kernel *and*
  in the static HTML book (see its docstring for how).
* :func:`plot_runs` -- training curves of several methods (mean over seeds and the range),
  each in its method's colour.

Only matplotlib and numpy are imported here; ipywidgets is imported lazily inside
:func:`explorer`, so ``import normlib.viz`` stays cheap.
"""
from __future__ import annotations

import base64
import io
import re
from typing import Callable, Sequence, Union

import matplotlib
import numpy as np
from matplotlib.collections import PolyCollection
from matplotlib.colors import to_rgb

__all__ = [
    "METHOD_COLORS",
    "METHOD_LABELS",
    "color",
    "label",
    "use_style",
    "draw_norm_axes",
    "statistic_ids",
    "figure_to_png",
    "explorer",
    "markdown_table",
    "show_source",
    "plot_runs",
]

# --------------------------------------------------------------------------- colours

# Okabe & Ito (2008), "Color Universal Design": distinguishable under the common forms of
# colour blindness. One colour per method, fixed for the whole book.
METHOD_COLORS = {
    "bn": "#0072B2",  # blue
    "ln": "#D55E00",  # vermillion
    "in": "#009E73",  # bluish green
    "gn": "#CC79A7",  # reddish purple
    "rms": "#E69F00",  # orange
    "wn": "#56B4E9",  # sky blue
    "sn": "#000000",  # black
    "brn": "#F0E442",  # yellow: use lines >= 2 pt or markers with a dark edge on white
    "ibn": "#8C510A",  # dark brown (ColorBrewer BrBG): darker than every colour above but black
    "none": "#999999",  # grey: the baseline without normalization
}

METHOD_LABELS = {
    "bn": "BatchNorm",
    "ln": "LayerNorm",
    "in": "InstanceNorm",
    "gn": "GroupNorm",
    "rms": "RMSNorm",
    "wn": "WeightNorm",
    "sn": "SwitchableNorm",
    "brn": "BatchRenorm",
    "ibn": "IBN (IN + BN)",
    "none": "no normalization",
}

_ALIASES = {
    "batchnorm": "bn", "batch": "bn", "layernorm": "ln", "layer": "ln",
    "instancenorm": "in", "instance": "in", "groupnorm": "gn", "group": "gn",
    "rmsnorm": "rms", "weightnorm": "wn", "switchablenorm": "sn", "batchrenorm": "brn",
    "brenorm": "brn", "ibnorm": "ibn", "instancebatchnorm": "ibn", "plain": "none",
    "baseline": "none",
}


def _key(method: str) -> str:
    key = method.lower().replace("_", "").replace("-", "").replace(" ", "")
    key = _ALIASES.get(key, key)
    if key not in METHOD_COLORS:
        raise KeyError(f"unknown method {method!r}; known: {sorted(METHOD_COLORS)}")
    return key


def color(method: str) -> str:
    """The book's colour for ``method`` ("bn", "ln", "in", "gn", "rms", "wn", "sn", "brn",
    "ibn", "none"; long names such as "BatchNorm" work too)."""
    return METHOD_COLORS[_key(method)]


def label(method: str) -> str:
    """The display name of ``method`` ("bn" -> "BatchNorm")."""
    return METHOD_LABELS[_key(method)]


# --------------------------------------------------------------------------- style

# Unnamed lines cycle through the method colours in the same order (grey stays the baseline's).
_OKABE_ITO_CYCLE = [colour for method, colour in METHOD_COLORS.items() if method != "none"]

BOOK_RC = {
    "figure.figsize": (5.0, 3.2),
    "figure.dpi": 100,
    "savefig.dpi": 100,
    "figure.facecolor": "white",
    "savefig.facecolor": "white",
    "figure.constrained_layout.use": True,
    "font.size": 10,
    "axes.titlesize": 10,
    "axes.labelsize": 10,
    "xtick.labelsize": 9,
    "ytick.labelsize": 9,
    "legend.fontsize": 9,
    "legend.frameon": False,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": False,
    "axes.prop_cycle": matplotlib.cycler(color=_OKABE_ITO_CYCLE),
    "lines.linewidth": 1.8,
    "image.cmap": "viridis",
}


def use_style() -> None:
    """Apply the book's matplotlib settings (:data:`BOOK_RC`).

    pyplot is imported first: in a notebook the inline backend applies its own defaults
    when pyplot is first imported, and those must not overwrite ours afterwards.
    """
    import matplotlib.pyplot  # noqa: F401  (see docstring)

    matplotlib.rcParams.update(BOOK_RC)


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
    ax.annotate("", xy=(N, -0.35), xytext=(0, -0.35),
                arrowprops=dict(arrowstyle="->", color="0.2", lw=0.8))
    ax.text(N / 2, -0.6, "N", ha="center", va="top")
    ax.annotate("", xy=(-0.35, HW), xytext=(-0.35, 0),
                arrowprops=dict(arrowstyle="->", color="0.2", lw=0.8))
    ax.text(-0.6, HW / 2, "H·W", ha="right", va="center", rotation=90)
    ax.annotate("", xy=(C * dx - 0.3, HW + C * dy + 0.25), xytext=(-0.3, HW + 0.25),
                arrowprops=dict(arrowstyle="->", color="0.2", lw=0.8))
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


# --------------------------------------------------------------------------- the explorer


def figure_to_png(fig, dpi: int | None = None) -> bytes:
    """Render a matplotlib Figure to PNG bytes and close it (so it is not shown twice)."""
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi or matplotlib.rcParams["savefig.dpi"])
    plt.close(fig)
    return buffer.getvalue()


FrameSource = Union[Sequence["matplotlib.figure.Figure"], Callable[[int], "matplotlib.figure.Figure"]]


def _render_frames(frames: FrameSource, count: int) -> list[bytes]:
    if callable(frames):
        return [figure_to_png(frames(i)) for i in range(count)]
    figures = list(frames)
    if len(figures) != count:
        raise ValueError(f"{len(figures)} frames but {count} labels")
    return [f if isinstance(f, bytes) else figure_to_png(f) for f in figures]


def _animation_html(pngs: list[bytes]):
    """Fallback without ipywidgets: a matplotlib animation with its own HTML/JS slider."""
    import matplotlib.pyplot as plt
    from IPython.display import HTML
    from matplotlib.animation import FuncAnimation

    images = [plt.imread(io.BytesIO(p), format="png") for p in pngs]
    height = max(im.shape[0] for im in images)
    width = max(im.shape[1] for im in images)
    padded = []
    for im in images:  # frames of unequal size are padded with white
        canvas = np.ones((height, width, im.shape[2]), dtype=im.dtype)
        canvas[: im.shape[0], : im.shape[1]] = im
        padded.append(canvas)
    # The frames are finished pictures: no layout engine, no margins.
    with matplotlib.rc_context({"figure.constrained_layout.use": False}):
        fig = plt.figure(figsize=(width / 100, height / 100), dpi=100)
        ax = fig.add_axes((0, 0, 1, 1))
        ax.set_axis_off()
        shown = ax.imshow(padded[0], interpolation="none")

        def update(i):
            shown.set_data(padded[i])
            return (shown,)

        animation = FuncAnimation(fig, update, frames=len(padded), interval=1200, blit=True)
        html = animation.to_jshtml(fps=1, default_mode="once")
        plt.close(fig)
    # to_jshtml links Font Awesome from a CDN for its button icons; the book works offline
    # (its theme already ships Font Awesome), so the page must not ask the network for it.
    html = re.sub(r"<link[^>]*font-awesome[^>]*>", "", html)
    return HTML(html)


def explorer(frames: FrameSource, labels: Sequence[str], description: str = ""):
    """A slider that flips through precomputed figures, live and in the static book.

    ``frames`` is a list of matplotlib Figures (or PNG bytes), or a callable ``frames(i)``
    returning the Figure for frame ``i``; ``labels`` names the frames (one per frame, shown
    as the slider's read-out); ``description`` is the slider's caption. Keep frames few
    (<= ~12) and small: each one is stored in the page as a PNG.

    How it works. Every frame is rendered to PNG bytes up front and the figures are closed.
    With ipywidgets, each PNG becomes an ``ipywidgets.Image`` inside an ``ipywidgets.Stack``
    and a ``SelectionSlider`` picks the visible child through
    ``ipywidgets.jslink((slider, "index"), (stack, "selected_index"))``. A jslink is a
    ``LinkModel`` that runs in the browser, not in Python, so:

    * with a live kernel (Jupyter, Colab) the slider works as usual;
    * in the static HTML book (myst-nb saves the widget state -- every Image's bytes, the
      Stack, the slider and the LinkModel -- into the page, and the html-manager shipped
      with the book rebuilds them) the slider still works without any kernel.

    Checked in headless Chromium on the built book (html-manager 1.0.x served with it):
    moving the slider changes the readout and the image, with no kernel
    (``scripts/check_book_html.py`` repeats that check).

    Without ipywidgets 8 (not installed, or version 7 as on Colab, which has no ``Stack``)
    the same PNGs are returned as a matplotlib ``FuncAnimation`` rendered with
    ``to_jshtml`` (its own slider and play buttons, no kernel needed).

    Returns the widget (an ``ipywidgets.VBox``) or an ``IPython.display.HTML``; make it the
    last expression of a cell to display it.
    """
    labels = [str(s) for s in labels]
    if not labels:
        raise ValueError("explorer needs at least one frame")
    if len(set(labels)) != len(labels):
        raise ValueError("frame labels must be distinct (they are the slider's options)")
    pngs = _render_frames(frames, len(labels))
    try:
        import ipywidgets as widgets
    except ImportError:
        return _animation_html(pngs)
    if not hasattr(widgets, "Stack"):  # ipywidgets 7 (Colab ships it) has no Stack
        return _animation_html(pngs)

    images = [widgets.Image(value=png, format="png") for png in pngs]
    stack = widgets.Stack(children=images, selected_index=0)
    slider = widgets.SelectionSlider(
        options=labels,
        index=0,
        description=description,
        continuous_update=True,
        style={"description_width": "initial"},
        layout=widgets.Layout(width="min(100%, 560px)"),
    )
    widgets.jslink((slider, "index"), (stack, "selected_index"))
    return widgets.VBox([slider, stack])


def png_data_uri(png: bytes) -> str:
    """``data:image/png;base64,...`` for PNG bytes (handy in hand-written HTML)."""
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


# --------------------------------------------------------------------------- tables


def markdown_table(header: Sequence[str], rows: Sequence[Sequence], align: str | None = None):
    """A small table as ``IPython.display.Markdown`` (the book does not depend on pandas).

    ``rows`` hold any values (formatted with ``str``); ``align`` is one letter per column,
    "l", "c" or "r" (default: first column left, the others right).
    """
    from IPython.display import Markdown

    align = align or "l" + "r" * (len(header) - 1)
    if len(align) != len(header):
        raise ValueError("align needs one letter per column")
    rule = {"l": ":--", "c": ":-:", "r": "--:"}
    lines = ["| " + " | ".join(str(h) for h in header) + " |",
             "|" + "|".join(rule[a] for a in align) + "|"]
    for row in rows:
        if len(row) != len(header):
            raise ValueError(f"row {row!r} has {len(row)} cells, header has {len(header)}")
        lines.append("| " + " | ".join(str(v).replace("|", "\\|") for v in row) + " |")
    return Markdown("\n".join(lines))


def show_source(*objects):
    """The source code of functions or classes, as highlighted Markdown.

    Chapters show library code with this instead of copying it, so the text and the
    library cannot drift apart.
    """
    import inspect

    from IPython.display import Markdown

    blocks = [inspect.getsource(obj).rstrip() for obj in objects]
    return Markdown("```python\n" + "\n\n\n".join(blocks) + "\n```")


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

    ``runs`` maps a method key to a :class:`normlib.train.History` or a list of them (one per
    seed), as :func:`normlib.train.compare` returns. Method keys get the book's colour and
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
