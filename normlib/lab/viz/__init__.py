"""The book's one figure style.

Every chapter draws with these helpers so that a method has the same colour, and a figure
the same look, on every page:

* :data:`METHOD_COLORS`, :data:`METHOD_LABELS` and :func:`color` -- one colour-blind-safe
  colour (Okabe & Ito palette, plus a dark brown for IBN once its eight colours ran out) and
  one display name per method, used across the book.
* :func:`shades` and :func:`neutral_styles` -- a sweep within one method in shades of its
  colour; series that are not methods in dark dashed/marked lines, never a method's colour.
* :func:`use_style` -- matplotlib settings for the book (small figures, readable fonts,
  no top/right spines, dpi 100 so that embedded PNGs stay small).
* :func:`draw_norm_axes` -- the N x C x (H.W) box of Wu & He (2018, Figure 2) with the cells
  that share one set of statistics highlighted.
* :func:`explorer` -- a slider over precomputed frames that works with a live kernel *and*
  in the static HTML book (see its docstring for how).
* :func:`plot_runs` -- training curves of several methods (mean over seeds and the range),
  each in its method's colour.
* :func:`figure_description` -- a figure's text alternative (its titles), which every PNG made
  here and every figure a notebook shows after :func:`use_style` carries, so that the book's
  images have alt text (the book's `_ext/figure_alt_text.py` reads it).

One module per subject (``style``, ``axes``, ``explorer``, ``pages``, ``runs``); this package
re-exports their public names, so chapters write ``viz.color``, ``viz.explorer``. Only
matplotlib and numpy are imported; ipywidgets is imported lazily inside :func:`explorer`.
"""

from .axes import draw_norm_axes, statistic_ids
from .explorer import _animation_html, explorer, figure_to_png, png_data_uri, png_description
from .pages import markdown_table, show_source
from .runs import plot_runs
from .style import (
    BOOK_RC,
    METHOD_COLORS,
    METHOD_LABELS,
    NEUTRAL_STYLES,
    color,
    figure_description,
    label,
    neutral_styles,
    shades,
    use_style,
)

__all__ = [
    "METHOD_COLORS",
    "METHOD_LABELS",
    "BOOK_RC",
    "color",
    "label",
    "shades",
    "neutral_styles",
    "NEUTRAL_STYLES",
    "use_style",
    "draw_norm_axes",
    "statistic_ids",
    "figure_to_png",
    "figure_description",
    "explorer",
    "markdown_table",
    "show_source",
    "plot_runs",
    "png_data_uri",
    "png_description",
    "_animation_html",
]
