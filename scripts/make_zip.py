#!/usr/bin/env python3
"""Pack the built HTML book into one zip that works offline (`make zip`).

    .venv/bin/python scripts/make_zip.py _build/html _build/normalization-course-html.zip

Everything the pages need is inside: MathJax, the widget renderer and RequireJS are served
from the book's own folder (_vendor/, see _config.yml), so a reader can unzip the file and
open `normalization-course/index.html` in a browser without a network or a web server.
"""

from __future__ import annotations

import sys
import zipfile
from pathlib import Path

TOP = "normalization-course"
README = """Normalization in Deep Learning: an executable course (offline copy of the HTML book)

Open normalization-course/index.html in a web browser. Everything the pages need
(math rendering, the interactive sliders) is in this folder; no network is needed.
To run the chapters themselves, see the course repository (the GitHub icon on every page).
"""


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    html, target = Path(argv[0]), Path(argv[1])
    if not (html / "index.html").is_file():
        print(f"no built book in {html}: run `make book` first", file=sys.stderr)
        return 2
    files = sorted(p for p in html.rglob("*") if p.is_file() and p.name != ".buildinfo")
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(".zip.part")
    with zipfile.ZipFile(partial, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as archive:
        archive.writestr(f"{TOP}/README.txt", README)
        for path in files:
            archive.write(path, f"{TOP}/{path.relative_to(html).as_posix()}")
    partial.replace(target)
    print(f"{target}: {len(files)} files, {target.stat().st_size / 1e6:.1f} MB; unzip and open {TOP}/index.html")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
