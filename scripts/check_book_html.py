#!/usr/bin/env python3
"""Check the built HTML book in headless Chromium, offline.

A developer tool, not part of `make test`: it needs a Chromium binary. Build the book first
(`make book`), then:

    .venv/bin/python scripts/check_book_html.py                      # intro + every chapter page
    .venv/bin/python scripts/check_book_html.py --screenshot shots/  # also write PNGs to look at
    .venv/bin/python scripts/check_book_html.py chapters/01_one_recipe.html

The pages are served from `_build/html` on 127.0.0.1 and loaded with every other host made
unreachable, as for a reader without network access. For each page it checks:

* math     - MathJax typeset every `.math` node (each holds an `mjx-container`), no MathJax
             error (`mjx-merror`), and no raw TeX (`$$`, `\\(`, `\\[`, `\\begin{`) left in the text;
* images   - every <img> has a non-empty data: URI, an in-page blob: URL (widget images) or a
             file that exists in the build and was served; a chapter page needs at least one figure;
* controls - every embedded ipywidget view rendered (`.jupyter-widgets`), every matplotlib
             jshtml animation has its frame and slider; a chapter page needs at least one;
* offline  - the page requested nothing from a non-local host (Chromium's net log) and no
             local file came back 404.

Prints PASS/FAIL per page and exits 1 if any page fails.
"""

from __future__ import annotations

import argparse
import functools
import http.server
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urljoin, urlsplit

from bs4 import BeautifulSoup

ROOT = Path(__file__).resolve().parent.parent
LOCAL_HOSTS = {"127.0.0.1", "localhost"}
RAW_TEX = re.compile(r"\$\$|\\\(|\\\)|\\\[|\\\]|\\begin\{")
# Text inside these elements is code or machinery, not prose that MathJax should have typeset.
NOT_PROSE = ["script", "style", "pre", "code", "textarea", "mjx-assistive-mml", "noscript", "template"]
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
    "--hide-scrollbars",
    # Offline like a reader without network: every host except the local server fails to resolve.
    "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
]


@dataclass
class Served:
    """What the local server was asked for: path -> last HTTP status."""

    status: dict[str, int] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, path: str, code: int) -> None:
        with self.lock:
            self.status[urlsplit(path).path] = code

    def snapshot(self) -> dict[str, int]:
        with self.lock:
            return dict(self.status)

    def clear(self) -> None:
        with self.lock:
            self.status.clear()


def start_server(directory: Path, served: Served) -> http.server.ThreadingHTTPServer:
    class Handler(http.server.SimpleHTTPRequestHandler):
        def log_request(self, code="-", size="-"):  # quiet, but remember every answer
            try:
                served.record(self.path, int(code))
            except (TypeError, ValueError):
                served.record(self.path, 0)

        def log_error(self, *args):
            pass

    handler = functools.partial(Handler, directory=str(directory))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def run_chromium(chromium: str, url: str, workdir: Path, budget_ms: int, extra: list[str]) -> subprocess.CompletedProcess:
    args = [
        chromium,
        *CHROMIUM_FLAGS,
        f"--user-data-dir={workdir / 'profile'}",
        f"--virtual-time-budget={budget_ms}",
        *extra,
        url,
    ]
    return subprocess.run(args, capture_output=True, text=True, timeout=180)


def external_requests(netlog_path: Path, site: str) -> list[str]:
    """URLs that the page (not Chromium's own background services) asked of a non-local host."""
    try:
        log = json.loads(netlog_path.read_text())
    except (OSError, json.JSONDecodeError):
        # Chromium may leave the closing brackets out if killed; salvage the URLs anyway.
        text = netlog_path.read_text(errors="replace") if netlog_path.exists() else ""
        return sorted({u for u in re.findall(r'"url":"([^"]+)"', text) if _is_external(u)})
    names = {value: key for key, value in log["constants"]["logEventTypes"].items()}
    urls = set()
    for event in log.get("events", []):
        params = event.get("params") or {}
        if names.get(event.get("type")) != "URL_REQUEST_START_JOB" or "url" not in params:
            continue
        # Requests made on behalf of our page carry its site in the network isolation key;
        # Chromium's own (update checks, sign-in, time) carry "null" or a Google site.
        if not str(params.get("network_isolation_key", "")).startswith(site):
            continue
        if _is_external(params["url"]):
            urls.add(params["url"])
    return sorted(urls)


def _is_external(url: str) -> bool:
    parts = urlsplit(url)
    return parts.scheme in ("http", "https", "ws", "wss") and parts.hostname not in LOCAL_HOSTS


def check_math(dom: BeautifulSoup, static: BeautifulSoup) -> tuple[list[str], str]:
    problems = []
    expected = len(static.select(".math"))
    math_nodes = dom.select(".math")
    untypeset = [node for node in math_nodes if node.find("mjx-container") is None]
    containers = len(dom.find_all("mjx-container"))
    errors = dom.find_all("mjx-merror")
    if untypeset:
        problems.append(f"math: {len(untypeset)} of {len(math_nodes)} math nodes not typeset "
                        f"(e.g. {untypeset[0].get_text()[:60]!r})")
    if errors:
        problems.append(f"math: {len(errors)} MathJax error(s), e.g. {errors[0].get_text()[:60]!r}")
    prose = BeautifulSoup(str(dom.find("main") or dom.body or dom), "html.parser")
    for tag in prose.find_all(NOT_PROSE):
        tag.decompose()
    raw = [m.group(0) for m in RAW_TEX.finditer(prose.get_text())]
    if raw:
        problems.append(f"math: raw TeX left in the text ({len(raw)}x, e.g. {raw[0]!r})")
    return problems, f"math {containers} typeset / {expected} in source"


def check_images(dom: BeautifulSoup, page_url: str, build_dir: Path, served: dict[str, int],
                 need_one: bool) -> tuple[list[str], str]:
    problems = []
    images = [img for img in dom.find_all("img") if "_static/images/logo_" not in (img.get("src") or "")]
    content = dom.find("main") or dom
    figures = content.find_all("img")
    for img in images:
        src = (img.get("src") or "").strip()
        if src.startswith("data:"):
            if len(src) < 40 or "," not in src:
                problems.append(f"images: empty data URI in <img id={img.get('id')!r}>")
            continue
        if not src:
            problems.append("images: <img> without src")
            continue
        if src.startswith("blob:"):  # made in the page from embedded data (ipywidgets Image)
            continue
        url = urljoin(page_url, src)
        if _is_external(url):
            problems.append(f"images: remote image {url}")
            continue
        rel = unquote(urlsplit(url).path).lstrip("/")
        if not (build_dir / rel).is_file():
            problems.append(f"images: missing file {rel}")
        elif served.get("/" + rel, 200) != 200:
            problems.append(f"images: {rel} served with HTTP {served['/' + rel]}")
    if need_one and not figures:
        problems.append("images: a chapter page without any figure")
    return problems, f"images {len(figures)}"


def check_controls(dom: BeautifulSoup, static: BeautifulSoup, need_one: bool) -> tuple[list[str], str]:
    problems = []
    views = static.find_all("script", type="application/vnd.jupyter.widget-view+json")
    rendered = dom.select(".jupyter-widgets")
    if len(rendered) < len(views):
        problems.append(f"widgets: {len(views)} widget view(s) in the page, {len(rendered)} rendered "
                        "(is embed-amd.js served?)")
    animations = dom.select("div.animation")
    for anim in animations:
        frame = anim.find("img")
        slider = anim.find("input", type="range")
        if frame is None or not (frame.get("src") or "").startswith("data:image"):
            problems.append("animation: a jshtml animation has no frame image")
        if slider is None:
            problems.append("animation: a jshtml animation has no slider")
        icons = anim.select("button i, button svg")
        if anim.find("button") is not None and not anim.select("button svg"):
            problems.append(f"animation: play/step buttons have no icons ({len(icons)} <i> left unstyled)")
    if need_one and not views and not animations:
        problems.append("controls: a chapter page without an interactive control (template asks for one)")
    return problems, f"widgets {len(rendered)}/{len(views)} views, animations {len(animations)}"


def default_pages(build_dir: Path) -> list[str]:
    pages = ["intro.html"]
    for folder in ("chapters", "exercises", "appendices"):
        pages += sorted(p.relative_to(build_dir).as_posix() for p in (build_dir / folder).rglob("*.html"))
    return [p for p in pages if (build_dir / p).is_file()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("pages", nargs="*", help="pages relative to the build folder (default: intro and every chapter)")
    parser.add_argument("--build-dir", type=Path, default=ROOT / "_build" / "html")
    parser.add_argument("--chromium", default=os.environ.get("CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium")
    parser.add_argument("--budget-ms", type=int, default=15000, help="Chromium --virtual-time-budget (ms)")
    parser.add_argument("--screenshot", type=Path, metavar="DIR", help="also write a full-width PNG of each page here")
    parser.add_argument("--verbose", action="store_true", help="list every local file the page loaded")
    parser.add_argument("--window-size", default="1280,2400", help="screenshot size, WIDTH,HEIGHT")
    args = parser.parse_args(argv)

    build_dir = args.build_dir.resolve()
    if not (build_dir / "intro.html").is_file():
        print(f"no built book at {build_dir}: run `make book` first", file=sys.stderr)
        return 2
    if not Path(args.chromium).exists() and not shutil.which(args.chromium):
        print(f"Chromium not found ({args.chromium}); pass --chromium PATH", file=sys.stderr)
        return 2
    pages = args.pages or default_pages(build_dir)
    if args.screenshot:
        args.screenshot.mkdir(parents=True, exist_ok=True)

    served = Served()
    server = start_server(build_dir, served)
    site = "http://127.0.0.1"
    base = f"{site}:{server.server_address[1]}/"
    failures = 0
    try:
        for page in pages:
            url = urljoin(base, page)
            static = BeautifulSoup((build_dir / page).read_text(encoding="utf-8"), "html.parser")
            with tempfile.TemporaryDirectory(prefix="check-book-") as tmp:
                workdir = Path(tmp)
                netlog = workdir / "netlog.json"
                served.clear()
                result = run_chromium(args.chromium, url, workdir, args.budget_ms,
                                      [f"--log-net-log={netlog}", "--dump-dom"])
                if result.returncode != 0 or "<html" not in result.stdout:
                    print(f"FAIL {page}\n     chromium exited {result.returncode}: {result.stderr[-500:]}")
                    failures += 1
                    continue
                dom = BeautifulSoup(result.stdout, "html.parser")
                status = served.snapshot()
                is_chapter = not page.startswith("intro")
                problems, notes = [], []
                for check in (
                    lambda: check_math(dom, static),
                    lambda: check_images(dom, url, build_dir, status, need_one=is_chapter),
                    lambda: check_controls(dom, static, need_one=is_chapter),
                ):
                    found, note = check()
                    problems += found
                    notes.append(note)
                remote = external_requests(netlog, site)
                problems += [f"offline: request to {u}" for u in remote]
                missing = sorted(p for p, code in status.items() if code >= 400 and p != "/favicon.ico")
                problems += [f"offline: {p} not found (HTTP {status[p]})" for p in missing]
                notes.append(f"{len(status)} local files, {len(remote)} remote requests")
                served_lines = [f"     served {code} {path}" for path, code in sorted(status.items())]
                if args.screenshot:
                    png = args.screenshot / (page.replace("/", "__").removesuffix(".html") + ".png")
                    shot = run_chromium(args.chromium, url, workdir, args.budget_ms,
                                        [f"--screenshot={png}", f"--window-size={args.window_size}"])
                    notes.append(f"screenshot {png}" if shot.returncode == 0 and png.exists()
                                 else f"screenshot failed ({shot.returncode})")
            verdict = "FAIL" if problems else "PASS"
            failures += bool(problems)
            print(f"{verdict} {page}: " + "; ".join(notes))
            for problem in problems:
                print(f"     - {problem}")
            if args.verbose:
                print("\n".join(served_lines))
    finally:
        server.shutdown()
    print(f"{len(pages) - failures}/{len(pages)} pages passed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
