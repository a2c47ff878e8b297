"""Sphinx extension: alt text for the figures that notebooks output.

myst-nb gives an output image alt text only from cell metadata (``mystnb.image.alt``);
without it, the HTML shows the file name as the alt text. The course's figures carry their
own description instead: ``normlib.lab.viz.use_style()`` makes every figure a notebook shows
store its titles (which state the finding) in the PNG's ``Description`` text chunk
(``normlib.lab.viz.figure_description``). This extension copies that text into the alt text of
every image that has none. An image without either keeps none, and the browser test
(tests/test_browser.py) reports it.
"""

from __future__ import annotations

from pathlib import Path

from docutils import nodes


def _png_description(path: Path) -> str:
    from PIL import Image

    try:
        with Image.open(path) as image:
            return str(getattr(image, "text", {}).get("Description", "")).strip()
    except OSError:
        return ""


def _image_path(app, docname: str, uri: str) -> Path | None:
    candidates = [Path(uri), Path(app.srcdir) / uri.lstrip("/"), Path(app.env.doc2path(docname)).parent / uri]
    return next((p for p in candidates if p.is_file()), None)


def add_alt_text(app, doctree) -> None:
    docname = app.env.docname
    for image in doctree.findall(nodes.image):
        if image.get("alt") or not str(image.get("uri", "")).lower().endswith(".png"):
            continue
        path = _image_path(app, docname, image["uri"])
        description = _png_description(path) if path else ""
        if description:
            image["alt"] = description


def setup(app):
    app.connect("doctree-read", add_alt_text)
    return {"version": "1.0", "parallel_read_safe": True, "parallel_write_safe": True}
