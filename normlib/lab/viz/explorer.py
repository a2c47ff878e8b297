"""Sliders over precomputed frames that work with a live kernel and in the static HTML book."""

from __future__ import annotations

import base64
import io
import re
from html import escape
from typing import Callable, Sequence, Union

import matplotlib
import numpy as np

from .style import figure_description

# --------------------------------------------------------------------------- the explorer


def figure_to_png(fig, dpi: int | None = None) -> bytes:
    """Render a matplotlib Figure to PNG bytes and close it (so it is not shown twice).

    The PNG carries :func:`figure_description` as its ``Description`` text chunk."""
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.savefig(
        buffer,
        format="png",
        dpi=dpi or matplotlib.rcParams["savefig.dpi"],
        metadata={"Description": figure_description(fig)},
    )
    plt.close(fig)
    return buffer.getvalue()


def png_description(png: bytes) -> str:
    """The ``Description`` text chunk of PNG bytes ("" when there is none)."""
    from PIL import Image  # a dependency of matplotlib

    with Image.open(io.BytesIO(png)) as image:
        return str(getattr(image, "text", {}).get("Description", ""))


FrameSource = Union[Sequence["matplotlib.figure.Figure"], Callable[[int], "matplotlib.figure.Figure"]]


def _render_frames(frames: FrameSource, count: int) -> list[bytes]:
    if callable(frames):
        return [figure_to_png(frames(i)) for i in range(count)]
    figures = list(frames)
    if len(figures) != count:
        raise ValueError(f"{len(figures)} frames but {count} labels")
    return [f if isinstance(f, bytes) else figure_to_png(f) for f in figures]


def _frame_alts(pngs: list[bytes], labels: Sequence[str], description: str) -> list[str]:
    """Alt text per frame: the figure's own description, else the slider's caption and label."""
    alts = []
    for png, frame_label in zip(pngs, labels):
        text = png_description(png)
        caption = f"{description} {frame_label}".strip()
        alts.append(f"{caption}: {text}" if text else caption)
    return alts


def _animation_html(pngs: list[bytes], alt: str = ""):
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
    # Its frame is an <img> without alt text: give it one (the frames' common caption).
    html = re.sub(r"<img id=", f'<img alt="{escape(alt, quote=True)}" id=', html, count=1)
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
    * in the static HTML book (myst-nb saves the widget state -- every frame, the Stack, the
      slider and the LinkModel -- into the page, and the html-manager shipped with the book
      rebuilds them) the slider still works without any kernel.

    Each frame is an ``ipywidgets.HTML`` holding an ``<img>`` with alt text (ipywidgets'
    ``Image`` has no alt): the frame's :func:`figure_description` (its titles) after the
    slider's caption and the frame's label.

    Checked in headless Chromium on the built book (html-manager 1.0.x served with it):
    moving the slider changes the readout and the image, with no kernel
    (``tests/test_browser.py`` repeats that check on every page of the book).

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
    alts = _frame_alts(pngs, labels, description)
    try:
        import ipywidgets as widgets
    except ImportError:
        return _animation_html(pngs, alt=description or "frames")
    if not hasattr(widgets, "Stack"):  # ipywidgets 7 (Colab ships it) has no Stack
        return _animation_html(pngs, alt=description or "frames")

    images = [
        widgets.HTML(f'<img src="{png_data_uri(png)}" alt="{escape(alt, quote=True)}" style="max-width: 100%">')
        for png, alt in zip(pngs, alts)
    ]
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
