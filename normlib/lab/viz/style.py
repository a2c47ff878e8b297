"""The book's colours, display names and matplotlib style, and figures' text alternatives."""

from __future__ import annotations

import matplotlib

# --------------------------------------------------------------------------- colours

# Okabe & Ito (2008), "Color Universal Design": distinguishable under the common forms of
# colour blindness. One colour per method, fixed for the whole book.
#: Method key -> its colour, the same on every page of the book.
#:
#: :meta hide-value:
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

#: Method key -> its display name (``"bn"`` -> ``"BatchNorm"``).
#:
#: :meta hide-value:
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
    "batchnorm": "bn",
    "batch": "bn",
    "layernorm": "ln",
    "layer": "ln",
    "instancenorm": "in",
    "instance": "in",
    "groupnorm": "gn",
    "group": "gn",
    "rmsnorm": "rms",
    "weightnorm": "wn",
    "switchablenorm": "sn",
    "batchrenorm": "brn",
    "brenorm": "brn",
    "ibnorm": "ibn",
    "instancebatchnorm": "ibn",
    "plain": "none",
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


def shades(method: str, n: int) -> list[str]:
    """``n`` shades of ``method``'s colour, light to dark, for a sweep *within* one method
    (batch sizes of BatchNorm, groups of GroupNorm): the hue still says which method it is,
    the lightness says which setting. The darkest is the method's own colour darkened by a
    third, the lightest is mixed two thirds of the way to white (readable on white)."""
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"shades needs n >= 1 colours, got {n!r}")
    rgb = matplotlib.colors.to_rgb(color(method))
    out = []
    for i in range(n):
        t = 1.0 if n == 1 else i / (n - 1)  # 0 = lightest, 1 = darkest
        if t <= 0.5:  # mix towards white
            w = (0.5 - t) / 0.5 * 0.65
            mixed = [c + (1.0 - c) * w for c in rgb]
        else:  # mix towards black
            k = (t - 0.5) / 0.5 * 0.35
            mixed = [c * (1.0 - k) for c in rgb]
        out.append(matplotlib.colors.to_hex(mixed))
    return out


#: Line styles for series that are *not* methods (algorithms, datasets, layers of one net):
#: dark, not grey (grey is "no normalization"), told apart by dash and marker.
NEUTRAL_STYLES = [
    {"color": "#222222", "linestyle": "-", "marker": "o"},
    {"color": "#222222", "linestyle": "--", "marker": "s"},
    {"color": "#222222", "linestyle": ":", "marker": "^"},
    {"color": "#222222", "linestyle": "-.", "marker": "D"},
    {"color": "#555555", "linestyle": "-", "marker": "v"},
    {"color": "#555555", "linestyle": "--", "marker": "x"},
]


def neutral_styles(n: int) -> list[dict]:
    """``n`` plot keyword dicts (colour, line style, marker) for series that are not
    methods, so that a method's colour on a page always means that method."""
    if not isinstance(n, int) or not 1 <= n <= len(NEUTRAL_STYLES):
        raise ValueError(f"neutral_styles offers 1 to {len(NEUTRAL_STYLES)} styles, got {n!r}")
    return [dict(style) for style in NEUTRAL_STYLES[:n]]


# --------------------------------------------------------------------------- style

# Unnamed lines cycle through the method colours in the same order (grey stays the baseline's).
_OKABE_ITO_CYCLE = [colour for method, colour in METHOD_COLORS.items() if method != "none"]

#: The matplotlib settings that :func:`use_style` applies.
#:
#: :meta hide-value:
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
    when pyplot is first imported, and those must not overwrite ours afterwards. In a
    notebook, figures shown from then on carry their :func:`figure_description` in the PNG.
    """
    import matplotlib.pyplot  # noqa: F401  (see docstring)

    _load_notebook_backend()
    matplotlib.rcParams.update(BOOK_RC)
    _describe_shown_figures()


def _ipython_shell():
    try:
        from IPython import get_ipython
    except ImportError:
        return None
    return get_ipython()


def _load_notebook_backend() -> None:
    """In a notebook, load the inline backend now rather than at the first figure: loading it
    registers its figure formatter and applies its own rc defaults, which must come before
    ours (and before the formatter is given descriptions)."""
    if _ipython_shell() is None:
        return
    try:
        backend = matplotlib.get_backend(auto_select=False)
    except TypeError:  # matplotlib < 3.10
        backend = matplotlib.rcParams["backend"]
    if isinstance(backend, str) and backend.startswith("module://"):
        import importlib

        try:
            importlib.import_module(backend.removeprefix("module://"))
        except ImportError:
            pass


def figure_description(fig) -> str:
    """A text alternative for ``fig``: its title and its panels' titles, in reading order.

    The book's figures have titles that state their finding, so these make a useful alt text
    for a reader who cannot see the image. An empty string means the figure has no title.
    """
    parts = []
    suptitle = getattr(fig, "_suptitle", None)
    if suptitle is not None and suptitle.get_text().strip():
        parts.append(suptitle.get_text())
    for ax in fig.get_axes():
        for loc in ("left", "center", "right"):
            title = ax.get_title(loc=loc).strip()
            if title:
                parts.append(title)
    return "; ".join(" ".join(part.split()) for part in parts)


def _describe_shown_figures() -> None:
    """Make the notebook's PNG formatter store each figure's description in the PNG (as its
    ``Description`` text chunk); a no-op outside IPython or without the inline backend."""
    shell = _ipython_shell()
    if shell is None:
        return
    from matplotlib.figure import Figure

    formatter = shell.display_formatter.formatters["image/png"]
    try:
        png = formatter.lookup_by_type(Figure)
    except KeyError:
        return
    if getattr(png, "_normlib_describes", False):
        return

    def png_with_description(fig, _png=png):
        return _png(fig, metadata={"Description": figure_description(fig)})

    png_with_description._normlib_describes = True
    formatter.for_type(Figure, png_with_description)
