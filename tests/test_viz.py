"""normlib.lab.viz: the book's colours, the N x C x (H.W) partition and the explorer control."""

import re
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

import normlib  # noqa: E402
from normlib.functional import norm_dims, normalize  # noqa: E402
from normlib.lab import viz  # noqa: E402


def test_one_distinct_colour_and_label_per_method():
    colours = [viz.color(m) for m in viz.METHOD_COLORS]
    assert len(set(colours)) == len(colours)
    assert all(re.fullmatch(r"#[0-9A-Fa-f]{6}", c) for c in colours)
    # Every name the factory accepts has a colour, and long names resolve to the same one.
    for name in normlib.NORM_NAMES:
        viz.color(name)
    assert viz.color("BatchNorm") == viz.color("bn") and viz.label("gn") == "GroupNorm"
    with pytest.raises(KeyError, match="unknown method"):
        viz.color("dropout")


@pytest.mark.parametrize(
    "method, groups", [("bn", 1), ("ln", 1), ("in", 1), ("gn", 2), ("gn", 3), ("gn", 1), ("gn", 6), ("ibn", 1)]
)
def test_statistic_ids_match_the_sets_normalize_uses(method, groups):
    """Two cells of the picture share an id exactly when normalize gives them one mean."""
    shape = (4, 6, 5)
    ids = torch.as_tensor(viz.statistic_ids(method, shape, num_groups=groups))
    x = torch.randn(*shape, dtype=torch.float64)
    if method == "gn":
        n, c, hw = shape
        statistics = normalize(x.reshape(n, groups, c // groups, hw), norm_dims("gn", 3))[1]
        mean = statistics.expand(n, groups, c // groups, hw).reshape(shape)
    elif method == "ibn":  # channels 0..2 per (sample, channel), 3..5 per channel over the batch
        instance_mean = normalize(x[:, :3], norm_dims("in", 3))[1].expand(4, 3, 5)
        batch_mean = normalize(x[:, 3:], norm_dims("bn", 3))[1].expand(4, 3, 5)
        mean = torch.cat([instance_mean, batch_mean], dim=1)
        statistics = torch.cat([instance_mean[:, :, 0].flatten(), batch_mean[0, :, 0]])
    else:
        statistics = normalize(x, norm_dims(method, 3))[1]
        mean = statistics.expand(shape)
    assert ids.unique().numel() == statistics.numel()
    flat_ids, flat_mean = ids.flatten(), mean.flatten()
    same_id = flat_ids[:, None] == flat_ids[None, :]
    same_mean = (flat_mean[:, None] - flat_mean[None, :]).abs() < 1e-12
    assert torch.equal(same_id, same_mean)


def _frames(count):
    figures = []
    for i in range(count):
        fig, ax = plt.subplots(figsize=(1.5, 1.5))
        ax.plot([0, 1], [0, i])
        ax.set_title(f"frame ends at {i}")
        figures.append(fig)
    return figures


def test_figure_description_reads_the_titles_into_the_png():
    fig, (left, right) = plt.subplots(1, 2)
    fig.suptitle("Only BN\nchanges")
    left.set_title("before")
    right.set_title("after", loc="right")
    assert viz.figure_description(fig) == "Only BN changes; before; after"
    assert viz.png_description(viz.figure_to_png(fig)) == "Only BN changes; before; after"
    untitled, _ = plt.subplots()
    assert viz.figure_description(untitled) == ""
    plt.close("all")


def test_use_style_makes_notebook_figures_carry_their_description():
    """In a notebook (IPython with the inline backend), a shown figure's PNG holds its titles,
    which the book turns into the image's alt text."""
    import base64

    from IPython.core.interactiveshell import InteractiveShell
    from IPython.core.pylabtools import select_figure_formats

    shell = InteractiveShell.instance()
    try:
        select_figure_formats(shell, {"png"})  # what the inline backend registers for Figures
        viz.use_style()
        viz.use_style()  # twice: still one description, not a wrapped wrapper
        fig, ax = plt.subplots()
        ax.set_title("A title that states the finding")
        data, _ = shell.display_formatter.format(fig, include={"image/png"})
        png = data["image/png"]
        png = base64.b64decode(png) if isinstance(png, str) else png
        assert viz.png_description(png) == "A title that states the finding"
    finally:
        plt.close("all")
        InteractiveShell.clear_instance()


def test_explorer_links_slider_to_stack_in_the_browser():
    widgets = pytest.importorskip("ipywidgets")
    box = viz.explorer(_frames(3), ["a", "b", "c"], description="pick")
    slider, stack = box.children
    assert list(slider.options) == ["a", "b", "c"] and slider.index == 0
    assert len(stack.children) == 3 and all(isinstance(frame, widgets.HTML) for frame in stack.children)
    assert len({frame.value for frame in stack.children}) == 3  # one distinct PNG per frame
    # Each frame is an <img> with alt text: the caption, the label and the figure's title.
    for frame, name, line_end in zip(stack.children, ["a", "b", "c"], [0, 1, 2]):
        alt = re.search(r'<img src="data:image/png;base64,[^"]+" alt="([^"]*)"', frame.value).group(1)
        assert alt == f"pick {name}: frame ends at {line_end}"
    # The link must be a jslink (runs in the browser, so it works in the static book), not a
    # Python-side observer: find the LinkModel that ties the two together.
    from ipywidgets.widgets.widget import _instances as live  # every widget alive in this kernel
    from ipywidgets.widgets.widget_link import Link

    links = [
        w
        for w in live.values()
        if isinstance(w, Link) and w.source == (slider, "index") and w.target == (stack, "selected_index")
    ]
    assert len(links) == 1
    assert not plt.get_fignums(), "explorer must close the figures it rendered"


def test_explorer_without_ipywidgets_is_an_offline_animation(monkeypatch):
    monkeypatch.setitem(sys.modules, "ipywidgets", None)  # import ipywidgets -> ImportError
    html = viz.explorer(_frames(2), ["a", "b"], description="pick").data
    assert html.count("data:image/png;base64") >= 2 or "frames[" in html
    assert not re.search(r"https?://", html), "the fallback must not load anything from the network"
    assert '<img alt="pick" id=' in html  # the animation's frame has alt text


def test_explorer_rejects_bad_labels():
    with pytest.raises(ValueError, match="distinct"):
        viz.explorer(_frames(2), ["a", "a"])
    with pytest.raises(ValueError, match="2 frames but 3 labels"):
        viz.explorer(_frames(2), ["a", "b", "c"])
    plt.close("all")


def test_markdown_table_checks_row_length():
    table = viz.markdown_table(["layer", "statistics"], [("BN", 6)])
    assert table.data.splitlines() == ["| layer | statistics |", "|:--|--:|", "| BN | 6 |"]
    with pytest.raises(ValueError, match="row"):
        viz.markdown_table(["a", "b"], [(1,)])


def test_explorer_with_ipywidgets_7_falls_back_to_the_animation(monkeypatch):
    """Colab ships ipywidgets 7, which has no Stack: the explorer must still give a slider."""
    import types

    monkeypatch.setitem(sys.modules, "ipywidgets", types.ModuleType("ipywidgets"))  # no Stack
    html = viz.explorer(_frames(2), ["a", "b"]).data
    assert "<img" in html and not re.search(r"https?://", html)


def test_plot_runs_colours_means_and_bands():
    from normlib.lab.train import History

    def hist(acc, loss):
        return History(steps=[0, 10, 20], test_accuracy=acc, train_loss=loss, test_loss=[1, 1, 1])

    runs = {
        "bn": [hist([0.1, 0.5, 0.9], [3, 2, 1]), hist([0.1, 0.7, 0.9], [3, 1, 1])],
        "none": hist([0.1, 0.2, 0.3], [3, 3, 3]),
        "noisy": [hist([0.1, 0.4, 0.8], [2, 2, 2])],
    }
    fig, ax = plt.subplots()
    viz.plot_runs(ax, runs, colors={"noisy": "#123456"}, labels={"noisy": "noisy BN"})
    lines = {line.get_label(): line for line in ax.get_lines()}
    assert set(lines) == {"BatchNorm", "no normalization", "noisy BN"}
    assert matplotlib.colors.to_hex(lines["BatchNorm"].get_color()) == viz.color("bn").lower()
    assert list(lines["BatchNorm"].get_ydata()) == pytest.approx([10, 60, 90])  # mean, in percent
    assert list(lines["BatchNorm"].get_xdata()) == [0, 10, 20]
    assert len(ax.collections) == 1  # a band only where there are several seeds
    band = ax.collections[0].get_paths()[0].vertices[:, 1]
    assert band.min() == pytest.approx(10) and band.max() == pytest.approx(90)
    assert ax.get_ylabel() == "test accuracy (%)"
    plt.close(fig)
    fig, ax = plt.subplots()
    viz.plot_runs(ax, {"bn": runs["bn"]}, metric="train_loss", smooth=2)
    assert list(ax.get_lines()[0].get_ydata()) == pytest.approx(
        [2.25, 1.25]
    )  # windows of 2 updates, then the mean over seeds
    with pytest.raises(KeyError, match="unknown method"):
        viz.plot_runs(ax, {"noisy": runs["noisy"]})  # an unknown key needs a colour
    plt.close(fig)
    fig, ax = plt.subplots()  # a variant of a method: its colour, dashed
    viz.plot_runs(ax, runs, colors={"noisy": viz.color("bn")}, linestyles={"noisy": "--"})
    styles = {line.get_label(): line.get_linestyle() for line in ax.get_lines()}
    assert styles == {"BatchNorm": "-", "no normalization": "-", "noisy": "--"}
    with pytest.raises(KeyError, match="records no"):
        viz.plot_runs(ax, runs, metric="gradient_norm")
    plt.close(fig)


def test_shades_keep_the_method_hue_and_order_light_to_dark():
    import colorsys

    import matplotlib.colors as mc

    for method in ("bn", "ln", "gn", "in"):
        got = viz.shades(method, 5)
        assert len(set(got)) == 5
        hue = colorsys.rgb_to_hls(*mc.to_rgb(viz.color(method)))[0]
        lightness = [colorsys.rgb_to_hls(*mc.to_rgb(c))[1] for c in got]
        assert lightness == sorted(lightness, reverse=True), lightness
        for c in got:
            assert abs(colorsys.rgb_to_hls(*mc.to_rgb(c))[0] - hue) < 0.02
        assert got[2] == viz.color(method).lower()
    with pytest.raises(ValueError, match="n >= 1"):
        viz.shades("bn", 0)


def test_neutral_styles_use_no_method_colour():
    styles = viz.neutral_styles(len(viz.NEUTRAL_STYLES))
    method = {c.lower() for c in viz.METHOD_COLORS.values()}
    assert all(s["color"].lower() not in method for s in styles)
    assert len({(s["linestyle"], s["marker"]) for s in styles}) == len(styles)
    with pytest.raises(ValueError, match="offers 1 to"):
        viz.neutral_styles(99)


def test_markdown_table_escapes_bars_in_the_header_too():
    """A header such as "largest |a - b|" must not add cells: header, rule and rows keep
    the same number of columns (chapter 1's table rendered as raw text before)."""
    text = viz.markdown_table(["a", "largest |x - y|"], [(1, "|z|")]).data.splitlines()
    unescaped = [line.replace("\\|", "") for line in text]
    assert [line.count("|") for line in unescaped] == [3, 3, 3]
