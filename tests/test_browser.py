"""Every page of the built HTML book, opened in headless Chromium as a reader would see it.

Runs on the HTML that the last `make book` or `make test` built (_build/html); it executes
nothing. Chromium is Debian's (package `chromium`), driven by Playwright (pinned in
requirements.txt; Playwright's own browser download is never used). The pages are served from
_build/html on 127.0.0.1 and every request to another host is blocked and reported, as for a
reader without network access. For each page:

* **loads cleanly**: no uncaught JavaScript error and no console error; no request leaves the
  machine; no local file is missing (HTTP 4xx/5xx);
* **images**: every <img> (figures, widget frames, animations) has a non-zero size and alt
  text that is not just its file name;
* **math**: every math node is typeset by MathJax, with no MathJax error and no raw TeX left
  in the text;
* **outputs**: no cell output holds a traceback (except in a cell tagged `raises-exception`,
  whose error is intended) or a warning;
* **code width**: with every folded cell opened, no line of code (cell inputs, code blocks,
  printed outputs) is wider than its box at a 1280-pixel-wide window;
* **layout**: with every folded cell opened, no typeset formula is wider than the text column
  or cut off in its box, and no other element (image, table, widget, output, paragraph) is
  cut off by a box that hides overflow or reaches past the column outside a box that scrolls
  by design;
* **sliders**: every ipywidgets slider (e.g. `normlib.lab.viz.explorer`) moves with the keyboard
  and shows the next label and a new image at each step, with no kernel; every matplotlib
  jshtml animation changes its frame when its slider moves; a chapter page has at least one;
* **launch links**: on a page built from a notebook, the Colab and Binder buttons open that
  notebook in the repository of `repository.url` (branch and path from _config.yml), and the
  notebook exists;
* **screenshot**: the page as loaded (cells folded) is saved to _build/screenshots/.

Two more tests: a synthetic page with one fault of each kind, which every check must catch
(and a jshtml animation, which must pass), and `make zip`'s offline copy opened from disk;
and one for the layout check: MathJax-typeset pages styled like the theme, with a formula too
wide for the column (must fail) and one that fits (must pass).

Without Chromium or Playwright, or without a built book, the tests skip and say why; with
COURSE_REQUIRE_BROWSER=1 (set by .ci/run, which installs Chromium first) a skip is a failure.
"""

from __future__ import annotations

import functools
import hashlib
import http.server
import json
import math
import os
import re
import shutil
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
import course_notebooks as cn  # noqa: E402

HTML_DIR = ROOT / "_build" / "html"
SHOTS_DIR = ROOT / "_build" / "screenshots"
REPORT = ROOT / "_build" / "browser-report.txt"  # one line per page; `make test-browser` prints it
REQUIRED = os.environ.get("COURSE_REQUIRE_BROWSER") == "1"
LOCAL_HOSTS = {"127.0.0.1", "localhost"}
VIEWPORT = {"width": 1280, "height": 900}
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
    # Offline like a reader without network: every host but the local server fails to resolve.
    "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
]
# Folders of the build that hold assets, not pages.
ASSET_DIRS = {
    "_static",
    "_sources",
    "_images",
    "reports",
    *(p.name for p in (ROOT / "_vendor").iterdir() if p.is_dir()),
}
pytestmark = pytest.mark.browser


def _skip(reason: str):
    if REQUIRED:
        pytest.fail(f"{reason} (COURSE_REQUIRE_BROWSER=1: a skipped browser test is a failure)", pytrace=False)
    pytest.skip(reason)


def book_pages() -> list[str]:
    """Every HTML page of the built book, relative to _build/html."""
    if not (HTML_DIR / "index.html").is_file():
        return []
    pages = []
    for path in HTML_DIR.rglob("*.html"):
        rel = path.relative_to(HTML_DIR)
        if rel.parts[0] not in ASSET_DIRS and not rel.parts[0].startswith("."):
            pages.append(rel.as_posix())
    return sorted(pages)


PAGES = book_pages()


# --------------------------------------------------------------------------- server and browser


class _Server:
    """_build/html on 127.0.0.1; remembers the status of every path it answered."""

    def __init__(self, directory: Path):
        self.directory = directory
        self.status: dict[str, int] = {}
        self.lock = threading.Lock()
        server = self

        class Handler(http.server.SimpleHTTPRequestHandler):
            def log_request(self, code="-", size="-"):
                with server.lock:
                    server.status[unquote(urlsplit(self.path).path)] = int(code) if str(code).isdigit() else 0

            def log_error(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(
            ("127.0.0.1", 0), functools.partial(Handler, directory=str(directory))
        )
        self.base = f"http://127.0.0.1:{self.httpd.server_address[1]}/"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def take_status(self) -> dict[str, int]:
        with self.lock:
            status, self.status = self.status, {}
        return status


def _report(line: str) -> None:
    with open(REPORT, "a", encoding="utf-8") as handle:
        handle.write(line + "\n")


@pytest.fixture(scope="module")
def server():
    REPORT.parent.mkdir(parents=True, exist_ok=True)
    REPORT.write_text("")
    if not PAGES:
        _skip(f"no built book in {HTML_DIR.relative_to(ROOT)}: run `make book` or `make test` first")
    srv = _Server(HTML_DIR)
    yield srv
    srv.httpd.shutdown()


def _chromium() -> str | None:
    for candidate in (os.environ.get("CHROMIUM"), "chromium", "chromium-browser", "/usr/bin/chromium"):
        if candidate and (shutil.which(candidate) or Path(candidate).is_file()):
            return shutil.which(candidate) or candidate
    return None


@pytest.fixture(scope="module")
def browser():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _skip("Playwright is not installed (it is pinned in requirements.txt)")
    executable = _chromium()
    if executable is None:
        _skip("Chromium not found: install Debian's `chromium` (apt-get install chromium) or set $CHROMIUM")
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS, headless=True)
        yield chromium
        chromium.close()


# --------------------------------------------------------------------------- the page under test


@dataclass
class Visit:
    page: object  # playwright Page
    rel: str
    url: str
    errors: list[str]
    external: list[str]
    server: _Server
    redirect: str | None  # a page that only forwards (index.html): where to


def _open(browser, server, rel: str) -> Visit:
    context = browser.new_context(viewport=VIEWPORT, service_workers="block")
    external: list[str] = []
    errors: list[str] = []

    def route(route):
        host = urlsplit(route.request.url).hostname
        if urlsplit(route.request.url).scheme in ("http", "https", "ws", "wss") and host not in LOCAL_HOSTS:
            external.append(route.request.url)
            route.abort()
        else:
            route.continue_()

    context.route("**/*", route)
    page = context.new_page()
    page.on("pageerror", lambda error: errors.append(f"uncaught: {error}"))
    page.on(
        "console",
        lambda msg: (
            errors.append(f"console.{msg.type}: {msg.text}")
            if msg.type == "error" and "Failed to load resource" not in msg.text  # reported as requests
            else None
        ),
    )
    server.take_status()
    url = server.base + rel
    refresh = re.search(
        r'<meta http-equiv="refresh" content="\d+;\s*url=([^"]+)"',
        (server.directory / rel).read_text(encoding="utf-8"),
        re.I,
    )
    redirect = refresh.group(1) if refresh else None
    page.goto(url, wait_until="load", timeout=60_000)
    if redirect:
        page.wait_for_url(server.base + redirect, timeout=30_000)
        page.wait_for_load_state("load")
    page.evaluate(WAIT_FOR_RENDERING_JS)
    return Visit(page, rel, url, errors, external, server, redirect)


WAIT_FOR_RENDERING_JS = """
async () => {
  const sleep = ms => new Promise(r => setTimeout(r, ms));
  if (window.MathJax && MathJax.startup && MathJax.startup.promise) await MathJax.startup.promise;
  const views = document.querySelectorAll('script[type="application/vnd.jupyter.widget-view+json"]').length;
  for (let t = 0; t < 30000 && document.querySelectorAll('.jupyter-widgets').length < views; t += 100) await sleep(100);
  if (window.MathJax && MathJax.typesetPromise) await MathJax.typesetPromise();  // widget text too
  for (const img of document.images) { if (!img.complete) { try { await img.decode(); } catch (e) {} } }
}
"""


@pytest.fixture(params=PAGES or ["(no built book)"])
def visit(request, browser, server):
    rel = request.param
    v = _open(browser, server, rel)
    SHOTS_DIR.mkdir(parents=True, exist_ok=True)
    v.page.screenshot(path=str(SHOTS_DIR / (rel.removesuffix(".html").replace("/", "__") + ".png")), full_page=True)
    yield v
    v.page.context.close()


# --------------------------------------------------------------------------- checks


def check_loading(v: Visit) -> list[str]:
    problems = [f"JavaScript: {e}" for e in v.errors]
    problems += [f"offline: request to {u}" for u in v.external]
    v.page.wait_for_load_state("networkidle", timeout=10_000)
    status = v.server.take_status()
    problems += [f"missing: {p} (HTTP {c})" for p, c in sorted(status.items()) if c >= 400 and p != "/favicon.ico"]
    return problems


IMAGES_JS = """
() => Array.from(document.images).map(img => ({
  src: (img.getAttribute('src') || '').slice(0, 80),
  alt: img.getAttribute('alt'),
  natural: [img.naturalWidth, img.naturalHeight],
  shown: img.getClientRects().length > 0,
  box: [img.getBoundingClientRect().width, img.getBoundingClientRect().height],
}))
"""
FILE_NAME_ALT = re.compile(r"(^|/)[^/\s]+\.(png|jpe?g|gif|svg|webp)$", re.I)


def check_images(v: Visit) -> list[str]:
    problems = []
    for img in v.page.evaluate(IMAGES_JS):
        where = f"<img src={img['src']!r}>"
        if not img["src"]:
            problems.append(f"image: {where} has no src")
        if min(img["natural"]) <= 0:
            problems.append(f"image: {where} is empty or did not load")
        elif img["shown"] and min(img["box"]) <= 0:
            problems.append(f"image: {where} is shown with zero size {img['box']}")
        alt = (img["alt"] or "").strip()
        if not alt or FILE_NAME_ALT.search(alt):
            problems.append(f"image: {where} has no alt text" + (f" (only the file name {alt!r})" if alt else ""))
    return problems


MATH_JS = """
() => {
  const nodes = Array.from(document.querySelectorAll('.math'));
  const untypeset = nodes.filter(n => !n.querySelector('mjx-container')).map(n => n.textContent.slice(0, 60));
  const errors = Array.from(document.querySelectorAll('mjx-merror')).map(n => n.textContent.slice(0, 60));
  const main = document.querySelector('main') || document.body;
  const skip = 'script, style, pre, code, textarea, noscript, template, mjx-container, mjx-assistive-mml';
  const walker = document.createTreeWalker(main, NodeFilter.SHOW_TEXT);
  const raw = [];
  for (let node = walker.nextNode(); node; node = walker.nextNode()) {
    if (node.parentElement && node.parentElement.closest(skip)) continue;
    const m = node.textContent.match(/\\$\\$|\\\\\\(|\\\\\\)|\\\\\\[|\\\\\\]|\\\\begin\\{/);
    if (m) raw.push(node.textContent.trim().slice(0, 60));
  }
  return {count: nodes.length, typeset: document.querySelectorAll('mjx-container').length, untypeset, errors, raw};
}
"""


def check_math(v: Visit) -> list[str]:
    m = v.page.evaluate(MATH_JS)
    problems = [f"math: not typeset: {t!r}" for t in m["untypeset"][:5]]
    problems += [f"math: MathJax error: {t!r}" for t in m["errors"][:5]]
    problems += [f"math: raw TeX in the text: {t!r}" for t in m["raw"][:5]]
    return problems


OUTPUTS_JS = """
() => Array.from(document.querySelectorAll('.cell_output')).map(out => {
  const cell = out.closest('.cell');
  const tb = out.querySelectorAll('.output.traceback, .output.error').length;
  return {
    intended: !!(cell && cell.classList.contains('tag_raises-exception')),
    traceback: tb,
    text: out.innerText.slice(0, 20000),
    cell: cell ? Array.from(document.querySelectorAll('.cell')).indexOf(cell) : -1,
  };
})
"""
WARNING_TEXT = re.compile(r"\b[A-Z]\w*Warning\b|^\s*(WARNING|Warning)\b|\bwarnings\.warn\(", re.M)


def check_outputs(v: Visit) -> list[str]:
    problems = []
    for out in v.page.evaluate(OUTPUTS_JS):
        where = f"output of code cell {out['cell'] + 1}"
        has_traceback = out["traceback"] or "Traceback (most recent call last)" in out["text"]
        if has_traceback and not out["intended"]:
            problems.append(f"{where}: a traceback (tag the cell `raises-exception` if the error is intended)")
        warning = WARNING_TEXT.search(out["text"])
        if warning:
            line = next(ln for ln in out["text"].splitlines() if warning.group(0).strip() in ln)
            problems.append(f"{where}: a warning: {line.strip()[:150]!r}")
    return problems


CODE_WIDTH_JS = """
() => {
  document.querySelectorAll('details').forEach(d => { d.open = true; });  // unfold every cell
  const main = document.querySelector('main') || document.body;
  const boxes = Array.from(main.querySelectorAll('pre'));
  return boxes.filter(pre => pre.getClientRects().length > 0 && pre.scrollWidth > pre.clientWidth + 1).map(pre => {
    const kind = pre.closest('.cell_input') ? 'code cell' : pre.closest('.cell_output') ? 'output' : 'code block';
    const lines = pre.innerText.split('\\n');
    const longest = lines.reduce((a, b) => (b.length > a.length ? b : a), '');
    return {kind, overflow: pre.scrollWidth - pre.clientWidth, box: pre.clientWidth, longest: longest.slice(0, 100),
            length: longest.length};
  });
}
"""


def check_code_width(v: Visit) -> list[str]:
    return [
        f"{o['kind']}: a line of {o['length']} characters is {o['overflow']} px wider than its {o['box']} px box: "
        f"{o['longest']!r}"
        for o in v.page.evaluate(CODE_WIDTH_JS)
    ]


# ---- layout: nothing wider than the text column, nothing cut off

# With every folded cell opened, each typeset formula (its MathJax output, mjx-math) must fit
# the text column (the article's content box) and its own box (the theme lets a display
# formula's box scroll inside a `div.math` that hides overflow, so a wide formula is cut off).
# Every other element of the article (images, figures, tables, widgets, outputs, paragraphs,
# admonitions) must not be clipped by an ancestor that hides overflow, and must not reach past
# the column unless it sits in a box that scrolls by design (overflow auto/scroll: the theme's
# table wrapper). Code boxes (<pre>) are left to the code-width check above.
LAYOUT_JS = """
() => {
  document.querySelectorAll('details').forEach(d => { d.open = true; });
  const main = document.querySelector('main') || document.body;
  const column = main.querySelector('article') || main;
  const style = getComputedStyle(column), box = column.getBoundingClientRect();
  const left = box.left + parseFloat(style.paddingLeft), right = box.right - parseFloat(style.paddingRight);
  const slack = 1, found = [];
  const shown = el => el.getClientRects().length > 0;
  const name = el => el.tagName.toLowerCase() + (el.className && typeof el.className === 'string'
    ? '.' + el.className.trim().split(/\\s+/).slice(0, 2).join('.') : '');
  const past = r => r.right > right + slack || r.left < left - slack;
  // The nearest ancestor below <body> whose overflow hides or scrolls what sticks out of it.
  const clipper = (el, r) => {
    for (let a = el.parentElement; a && a !== document.body; a = a.parentElement) {
      const overflow = getComputedStyle(a).overflowX;
      if (overflow === 'visible') continue;
      const ar = a.getBoundingClientRect();
      if (r.right > ar.right + slack || r.left < ar.left - slack)
        return {element: a, scrolls: overflow === 'auto' || overflow === 'scroll'};
    }
    return null;
  };
  for (const container of column.querySelectorAll('mjx-container')) {
    // MathJax's hidden copy for screen readers (mjx-assistive-mml) is clipped on purpose.
    if (!shown(container) || container.parentElement.closest('mjx-assistive-mml')) continue;
    const math = container.querySelector(':scope > mjx-math, :scope > svg') || container;
    const r = math.getBoundingClientRect();
    const holder = container.closest('.math') || container;
    const text = (holder.querySelector('mjx-assistive-mml') || holder).textContent.trim().slice(0, 60);
    const clip = clipper(math, r), wide = r.width > right - left + slack || past(r);
    if (wide || clip)
      found.push({kind: 'math', width: Math.round(r.width), text, how: wide
        ? `is wider than the ${Math.round(right - left)} px text column`
        : `is cut off in its ${Math.round(clip.element.getBoundingClientRect().width)} px box `
          + `(${name(clip.element)}, which hides or scrolls what sticks out)`});
  }
  const selector = 'img, svg, video, canvas, iframe, table, figure, .jupyter-widgets, .cell_output, '
    + 'p, li, dl, blockquote, .admonition, div.math';
  for (const el of column.querySelectorAll(selector)) {
    if (!shown(el) || el.closest('mjx-container, mjx-assistive-mml, pre')) continue;
    const r = el.getBoundingClientRect();
    if (r.width === 0 || r.height === 0) continue;
    const clip = clipper(el, r);
    if (clip && clip.scrolls) continue;  // scrolls by design
    if (clip || past(r))
      found.push({kind: name(el), width: Math.round(r.width), how: clip
        ? `is cut off by ${name(clip.element)}, which hides overflow`
        : `reaches past the ${Math.round(right - left)} px text column`,
        text: (el.getAttribute('alt') || el.textContent || '').trim().slice(0, 60)});
  }
  return found;
}
"""


def check_layout(v: Visit) -> list[str]:
    """Formulas wider than the text column, and anything cut off by a box that hides overflow."""
    return [f"layout: {o['kind']} ({o['width']} px) {o['how']}: {o['text']!r}" for o in v.page.evaluate(LAYOUT_JS)]


# ---- sliders


SLIDER_MODELS = {"SelectionSliderModel", "IntSliderModel", "FloatSliderModel", "FloatLogSliderModel"}
MAX_SLIDER_STEPS = 24


@dataclass
class SliderSpec:
    """One slider as the page's widget state describes it: the readout expected per position."""

    model: str
    start: int
    positions: int
    labels: list[str | None]  # None: only check that the readout changes

    @property
    def steps(self) -> int:
        if self.model not in SLIDER_MODELS:
            return 0
        return max(0, min(self.positions - 1 - self.start, MAX_SLIDER_STEPS))


def slider_specs(html: str) -> list[SliderSpec]:
    """The page's sliders in the order they are rendered (views in document order, walked
    depth-first through containers; a Stack shows only its selected child)."""
    from bs4 import BeautifulSoup

    static = BeautifulSoup(html, "html.parser")
    state_tag = static.find("script", type="application/vnd.jupyter.widget-state+json")
    if state_tag is None:
        return []
    models = json.loads(state_tag.string or "{}").get("state", {})
    specs: list[SliderSpec] = []

    def ref(value):
        return value[len("IPY_MODEL_") :] if isinstance(value, str) and value.startswith("IPY_MODEL_") else None

    def walk(model_id, depth=0):
        model = models.get(model_id or "")
        if model is None or depth > 50:
            return
        name, st = model.get("model_name", ""), model.get("state", {})
        if name.endswith("SliderModel"):
            specs.append(_slider_spec(name, st))
        children = [ref(c) for c in st.get("children") or []]
        if name == "StackModel":
            index = st.get("selected_index")
            children = [children[index]] if isinstance(index, int) and 0 <= index < len(children) else []
        for child in children:
            walk(child, depth + 1)

    for view in static.find_all("script", type="application/vnd.jupyter.widget-view+json"):
        walk(json.loads(view.string or "{}").get("model_id"))
    return specs


def _slider_spec(name: str, st: dict) -> SliderSpec:
    if name == "SelectionSliderModel":
        labels = [str(x) for x in st.get("_options_labels") or []]
        return SliderSpec(name, int(st.get("index") or 0), len(labels), list(labels))
    if name in ("IntSliderModel", "FloatSliderModel", "FloatLogSliderModel"):
        lo, hi, step = st.get("min", 0), st.get("max", 100), st.get("step") or 1
        positions = int(round((hi - lo) / step)) + 1 if step > 0 and hi >= lo else 1
        value = st.get("value", lo)
        if name == "FloatLogSliderModel":  # the slider moves the exponent
            base = st.get("base", 10)
            exponent = math.log(value, base) if value > 0 and base > 1 else lo
            start = int(round((exponent - lo) / step))
        else:
            start = int(round((value - lo) / step)) if step > 0 else 0
        labels: list[str | None] = [None] * positions
        if name == "IntSliderModel":
            fmt = st.get("readout_format") or "d"
            labels = [format(int(lo + k * step), fmt) for k in range(positions)]
        return SliderSpec(name, max(0, min(start, positions - 1)), positions, labels)
    return SliderSpec(name, 0, 0, [])  # range sliders: not moved


SLIDER_STATE_JS = """
async (index) => {
  const slider = document.querySelectorAll('.widget-slider')[index];
  const box = slider.closest('.cell_output') || slider.parentElement;
  const readout = slider.querySelector('.widget-readout');
  const img = Array.from(box.querySelectorAll('img')).find(i => i.getClientRects().length > 0);
  let image = null;
  if (img) {
    if (!img.complete) { try { await img.decode(); } catch (e) {} }
    const c = document.createElement('canvas');
    c.width = img.naturalWidth; c.height = img.naturalHeight;
    if (c.width && c.height) {
      const ctx = c.getContext('2d'); ctx.drawImage(img, 0, 0);
      const px = ctx.getImageData(0, 0, c.width, c.height).data;
      let h = 0x811c9dc5;
      for (let i = 0; i < px.length; i++) { h ^= px[i]; h = Math.imul(h, 0x01000193); }
      image = c.width + 'x' + c.height + ':' + (h >>> 0).toString(16);
    } else { image = 'empty'; }
  }
  return {readout: readout ? readout.textContent.trim() : null, image,
          handles: slider.querySelectorAll('.noUi-handle').length};
}
"""


def check_widget_sliders(v: Visit, html: str) -> tuple[list[str], int]:
    specs = slider_specs(html)
    found = v.page.locator(".widget-slider").count()
    problems = []
    if found != len(specs):
        problems.append(f"slider: {len(specs)} slider(s) in the page's widget state, {found} rendered")
    for i, spec in enumerate(specs[:found]):
        tag = f"slider {i + 1} ({spec.model})"
        if spec.model not in SLIDER_MODELS:
            continue
        before = v.page.evaluate(SLIDER_STATE_JS, i)
        first = before
        if before["handles"] != 1:
            problems.append(f"{tag}: expected one handle, found {before['handles']}")
            continue
        if before["image"] in (None, "empty"):
            problems.append(f"{tag}: no image shown beside the slider")
        if spec.labels[spec.start] is not None and before["readout"] != spec.labels[spec.start]:
            problems.append(f"{tag}: readout {before['readout']!r}, expected {spec.labels[spec.start]!r}")
        if spec.steps < 1:
            problems.append(f"{tag}: nothing to move ({spec.positions} position(s) from {spec.start + 1})")
        handle = v.page.locator(".widget-slider").nth(i).locator(".noUi-handle")
        for k in range(1, spec.steps + 1):
            handle.focus()
            v.page.keyboard.press("ArrowRight")
            expected = spec.labels[spec.start + k]
            now = before
            for _ in range(40):  # up to 2 s for the readout and the image to follow
                now = v.page.evaluate(SLIDER_STATE_JS, i)
                if now["readout"] != before["readout"] and now["image"] != before["image"]:
                    break
                v.page.wait_for_timeout(50)
            if expected is not None and now["readout"] != expected:
                problems.append(f"{tag}: after {k} ArrowRight the readout is {now['readout']!r}, expected {expected!r}")
            elif now["readout"] == before["readout"]:
                problems.append(f"{tag}: after {k} ArrowRight the readout is still {now['readout']!r}")
            if now["image"] in (None, "empty"):
                problems.append(f"{tag}: after {k} ArrowRight no image is shown")
            elif now["image"] in (before["image"], first["image"]):
                problems.append(f"{tag}: after {k} ArrowRight the image did not change")
            before = now
    return problems, len(specs)


ANIMATION_JS = """
(index) => {
  const anim = document.querySelectorAll('div.animation')[index];
  const img = anim.querySelector('img');
  const slider = anim.querySelector('input[type=range]');
  const src = img ? (img.getAttribute('src') || '') : '';
  let h = 0; for (let i = 0; i < src.length; i += 7) { h = (h * 31 + src.charCodeAt(i)) | 0; }
  return {value: slider ? slider.value : null, max: slider ? slider.max : null, image: src ? src.length + ':' + h : null};
}
"""


def check_animations(v: Visit) -> tuple[list[str], int]:
    count = v.page.locator("div.animation").count()
    problems = []
    for i in range(count):
        tag = f"animation {i + 1}"
        state = v.page.evaluate(ANIMATION_JS, i)
        if state["value"] is None or state["image"] is None:
            problems.append(f"{tag}: no slider or no frame image")
            continue
        steps = min(int(state["max"] or 0), MAX_SLIDER_STEPS)
        if steps < 1:
            problems.append(f"{tag}: a single frame, nothing to move")
        slider = v.page.locator("div.animation").nth(i).locator("input[type=range]")
        seen = {state["image"]}
        for k in range(1, steps + 1):
            slider.focus()
            v.page.keyboard.press("ArrowRight")
            now = v.page.evaluate(ANIMATION_JS, i)
            if now["value"] == state["value"]:
                problems.append(f"{tag}: after {k} ArrowRight the slider did not move")
            elif now["image"] in seen:
                problems.append(f"{tag}: frame {now['value']} shows an image already shown")
            seen.add(now["image"])
            state = now
    return problems, count


# ---- launch links


def _expected_launch_links(rel_page: str) -> dict[str, str]:
    import yaml

    config = yaml.safe_load((ROOT / "_config.yml").read_text(encoding="utf-8"))
    repo = config["repository"]
    url = cn.repository_url()
    owner_repo = "/".join(urlsplit(url).path.strip("/").split("/")[:2])
    branch = repo.get("branch", "main")
    book = (repo.get("path_to_book") or "").strip("/")
    notebook = "/".join(p for p in (book, rel_page.removesuffix(".html") + ".ipynb") if p)
    buttons = config.get("launch_buttons") or {}
    links = {"repository": url}
    if buttons.get("colab_url"):
        links["colab"] = f"{buttons['colab_url'].rstrip('/')}/github/{owner_repo}/blob/{branch}/{notebook}"
    if buttons.get("binderhub_url"):
        tree = "tree" if buttons.get("notebook_interface", "classic") == "classic" else "lab/tree"
        links["binder"] = (
            f"{buttons['binderhub_url'].rstrip('/')}/v2/gh/{owner_repo}/{branch}?urlpath={tree}/{notebook}"
        )
    return links


LAUNCH_MENU = ".dropdown-launch-buttons"  # the theme's launch menu in the page header


def _is_launch(href: str) -> bool:
    return "colab.research.google.com" in href or "mybinder.org" in href or "/v2/gh/" in href


def check_launch_links(v: Visit) -> list[str]:
    hrefs = v.page.evaluate("() => Array.from(document.querySelectorAll('a[href]')).map(a => a.href)")
    menu = v.page.evaluate(f"() => Array.from(document.querySelectorAll('{LAUNCH_MENU} a[href]')).map(a => a.href)")
    source_notebook = HTML_DIR / "_sources" / (v.rel.removesuffix(".html") + ".ipynb")
    expected = _expected_launch_links(v.rel)
    problems = []
    if expected["repository"] not in hrefs and expected["repository"] + "/" not in hrefs:
        problems.append(f"links: no repository button to {expected['repository']}")
    # Links in the text that open another notebook in Colab (a chapter's exercise set) must name
    # a notebook of this repository that exists; the launch menu must open this page's notebook.
    owner_repo = "/".join(urlsplit(expected["repository"]).path.strip("/").split("/")[:2])
    for href in hrefs:
        if href in menu or not _is_launch(href):
            continue
        match = re.search(rf"/github/{re.escape(owner_repo)}/blob/[^/]+/(.+\.ipynb)$", href)
        if not match or not (ROOT / match.group(1)).is_file():
            problems.append(f"links: {href} does not open a notebook of this repository")
    launch = [h for h in menu if _is_launch(h)]
    if not source_notebook.exists():
        if launch:
            problems.append(f"links: a page not built from a notebook has launch links {launch}")
        return problems
    for kind in ("colab", "binder"):
        if kind in expected and expected[kind] not in hrefs:
            found = [h for h in launch if kind in h] or launch
            problems.append(f"links: {kind} should open {expected[kind]}, the page has {found}")
    notebook = ROOT / (v.rel.removesuffix(".html") + ".ipynb")
    if not notebook.is_file():
        problems.append(f"links: the launch links name {notebook.relative_to(ROOT)}, which is not in the repository")
    wrong = [h for h in launch if not any(h == e for e in expected.values())]
    problems += [f"links: unexpected launch link {h}" for h in wrong]
    return problems


# --------------------------------------------------------------------------- the test


def test_page(visit):
    """One page, every check; all problems are reported together."""
    v = visit
    if v.redirect:  # the page it forwards to is checked as a page of its own
        assert (HTML_DIR / v.redirect).is_file(), f"{v.rel} forwards to a missing page {v.redirect}"
        problems = check_loading(v)
        _report(f"{'FAIL' if problems else 'PASS'} {v.rel}: forwards to {v.redirect}")
        assert not problems, f"{v.rel}:\n  " + "\n  ".join(problems)
        return
    html = (HTML_DIR / v.rel).read_text(encoding="utf-8")
    results = {}
    problems = []
    for name, check in [("math", check_math), ("images", check_images), ("outputs", check_outputs),
                        ("launch links", check_launch_links)]:  # fmt: skip
        found = check(v)
        results[name] = "ok" if not found else f"{len(found)} problem(s)"
        problems += found
    slider_problems, sliders = check_widget_sliders(v, html)
    animation_problems, animations = check_animations(v)
    problems += slider_problems + animation_problems
    if v.rel.startswith("chapters/") and not sliders and not animations:
        problems.append("controls: a chapter page without a slider (the template asks for one)")
    results["sliders"] = f"{sliders} widget slider(s), {animations} animation(s)" + (
        "" if not slider_problems + animation_problems else ", FAILED"
    )
    problems += check_code_width(v)  # opens every folded cell, so it runs after the others
    layout = check_layout(v)  # with every folded cell open too
    problems += layout + check_loading(v)
    results["code width"] = "ok" if not any(p.startswith(("code", "output")) for p in problems) else "FAILED"
    results["layout"] = "ok" if not layout else f"{len(layout)} problem(s)"
    too_wide = [p for p in layout if p.startswith("layout: math")]
    if too_wide:  # a formula cut off at the column's edge is a math problem too
        results["math"] = f"{len(too_wide)} formula(s) too wide" if results["math"] == "ok" else "FAILED"
    verdict = "FAIL" if problems else "PASS"
    _report(f"{verdict} {v.rel}: " + "; ".join(f"{k}: {r}" for k, r in results.items()))
    for problem in problems:
        _report(f"     - {problem}")
    assert not problems, f"{v.rel}:\n  " + "\n  ".join(problems)


def test_every_listed_notebook_has_a_page():
    """Each chapter notebook is in the book (so the checks above cover it)."""
    if not PAGES:
        _skip("no built book")
    missing = [
        cn.relative(p) for p in cn.course_notebooks() if cn.kind(p) == "chapter" and
        not (HTML_DIR / (cn.relative(p).removesuffix(".ipynb") + ".html")).is_file()
    ]  # fmt: skip
    assert not missing, f"chapter notebooks without a page (add them to _toc.yml): {missing}"


def test_screenshots_exist_for_every_page(browser, server):
    """Runs after the page tests (pytest keeps file order): each page left its screenshot."""
    shots = {p.name for p in SHOTS_DIR.glob("*.png")}
    missing = [p for p in PAGES if (p.removesuffix(".html").replace("/", "__") + ".png") not in shots]
    assert not missing, f"no screenshot for {missing}"


def test_local_server_reports_missing_files(server):
    """The offline checks can fail: a missing file is seen as a 404."""
    import urllib.error
    import urllib.request

    server.take_status()
    with pytest.raises(urllib.error.HTTPError):
        urllib.request.urlopen(server.base + "no-such-file-" + hashlib.sha1(b"x").hexdigest()[:8] + ".js")
    assert any(code == 404 for code in server.take_status().values())


def test_the_checks_can_fail(browser, tmp_path):
    """A page with one fault of each kind: every check must report its fault. The page also
    holds a working jshtml animation (normlib.lab.viz's fallback slider), which must pass."""
    import base64

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from normlib.lab import viz

    frames = []
    for i in range(3):
        fig, ax = plt.subplots(figsize=(1.6, 1.2))
        ax.plot([0, 1], [0, i])
        ax.set_title(f"frame {i}")
        frames.append(viz.figure_to_png(fig))
    animation = viz._animation_html(frames, alt="three frames").data
    png = base64.b64encode(frames[0]).decode()
    (tmp_path / "faults.html").write_text(
        f"""<!DOCTYPE html><html><head><meta charset="utf-8"></head><body><main>
<div class="cell"><div class="cell_output"><pre>UserWarning: something odd</pre></div></div>
<div class="cell"><div class="cell_output"><pre>Traceback (most recent call last):
  File "x.py", line 1</pre></div></div>
<div class="cell"><div class="cell_input"><pre style="width: 300px">{"x = 1  # " + "long " * 40}</pre></div></div>
<img src="data:image/png;base64,{png}">
<img src="missing.png" alt="a figure that is not there">
<img src="https://example.org/remote.png" alt="a remote figure">
<span class="math">\\(x^2\\)</span>
<p>Raw TeX: $$ x^2 $$</p>
<script>undefined_function();</script>
{animation}
</main></body></html>""",
        encoding="utf-8",
    )
    srv = _Server(tmp_path)
    try:
        v = _open(browser, srv, "faults.html")
        found = {
            "images": check_images(v),
            "math": check_math(v),
            "outputs": check_outputs(v),
            "code width": check_code_width(v),
            "loading": check_loading(v),
        }
        animation_problems, animations = check_animations(v)
        v.page.context.close()
    finally:
        srv.httpd.shutdown()
    text = {name: "\n".join(problems) for name, problems in found.items()}
    assert "has no alt text" in text["images"] and "did not load" in text["images"], text["images"]
    assert "not typeset" in text["math"] and "raw TeX" in text["math"], text["math"]
    assert "a warning" in text["outputs"] and "a traceback" in text["outputs"], text["outputs"]
    assert "wider than its" in text["code width"], text["code width"]
    assert "JavaScript: uncaught" in text["loading"], text["loading"]
    assert "offline: request to https://example.org/remote.png" in text["loading"], text["loading"]
    assert "missing: /missing.png (HTTP 404)" in text["loading"], text["loading"]
    assert animations == 1 and animation_problems == [], animation_problems


# The theme's rules for math (pydata-sphinx-theme 0.17, assets/styles/content/_math.scss): a
# display formula's box scrolls inside a `div.math` that hides overflow.
THEME_MATH_CSS = """
span.math, div.math { align-items: center; display: flex; max-width: 100%; overflow: hidden; }
span.math { display: inline-flex; align-items: baseline; }
div.math { gap: 0.5em; flex-direction: row-reverse; }
div.math mjx-container { flex-grow: 1; padding-bottom: 0.2rem; overflow: auto; }
div.math mjx-container mjx-assistive-mml { height: 0; }
main { width: 1100px; } article { width: 600px; padding: 0 24px; }
"""


def _layout_page(body: str) -> str:
    """A page typeset by the vendored MathJax as Sphinx configures it, in a 600 px column."""
    return f"""<!DOCTYPE html><html><head><meta charset="utf-8"><style>{THEME_MATH_CSS}</style>
<script>MathJax = {{tex: {{inlineMath: [["\\\\(", "\\\\)"]], displayMath: [["\\\\[", "\\\\]"]]}},
  options: {{processHtmlClass: "math"}}}};</script>
<script defer src="mathjax/es5/tex-mml-chtml.js"></script></head>
<body><main><article class="bd-article">{body}</article></main></body></html>"""


def test_the_layout_check_catches_what_runs_past_the_column(browser, tmp_path):
    """The layout check on MathJax-typeset pages styled like the theme: a formula too wide for
    the column, an image wider than the column and a table cut off by a box that hides overflow
    are each reported; a formula that fits, inline math, an image scaled to the column and a
    wide table in a box that scrolls by design pass. The math check alone passes both pages."""
    (tmp_path / "mathjax").symlink_to(ROOT / "_vendor" / "mathjax", target_is_directory=True)
    wide_sum = " + ".join(f"a_{{{i}}} x^{{{i}}}" for i in range(1, 41))
    png = "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="
    table = "<table><tr>" + "<td>column&nbsp;of&nbsp;a&nbsp;wide&nbsp;table</td>" * 8 + "</tr></table>"
    (tmp_path / "wide.html").write_text(
        _layout_page(
            f"""<div class="math" id="eq-wide"><span class="eqno">(1)</span>\\[ p(x) = {wide_sum} \\]</div>
<p>Text.</p><img src="{png}" alt="a figure wider than the column" style="width: 900px; height: 20px">
<div style="overflow: hidden; width: 300px">{table}</div>"""
        ),
        encoding="utf-8",
    )
    (tmp_path / "fits.html").write_text(
        _layout_page(
            f"""<div class="math" id="eq-fits"><span class="eqno">(1)</span>\\[
\\begin{{aligned}} p(x) &= a_1 x + a_2 x^2,\\\\ q(x) &= b_1 x \\end{{aligned}} \\]</div>
<p>Inline: <span class="math">\\(W_1(a, b) = c\\)</span>, a formula in the text.</p>
<img src="{png}" alt="a figure scaled to the column" style="max-width: 100%; width: 900px; height: 20px">
<div style="overflow-x: auto">{table}</div>"""
        ),
        encoding="utf-8",
    )
    srv = _Server(tmp_path)
    found = {}
    try:
        for name in ["wide.html", "fits.html"]:
            v = _open(browser, srv, name)
            found[name] = (
                check_math(v),
                check_layout(v),
                v.page.evaluate("document.querySelectorAll('mjx-container').length"),
            )
            v.page.context.close()
    finally:
        srv.httpd.shutdown()
    for name, (math_problems, _, typeset) in found.items():
        assert typeset >= 1 and math_problems == [], (name, typeset, math_problems)
    wide = "\n".join(found["wide.html"][1])
    assert len(found["wide.html"][1]) == 3, wide
    assert "layout: math" in wide and "is wider than the 600 px text column" in wide and "p(x)" in wide, wide
    assert "layout: img" in wide and "reaches past the 600 px" in wide and "a figure wider than" in wide, wide
    assert "layout: table" in wide and "is cut off by div" in wide, wide
    assert found["fits.html"][1] == [], found["fits.html"][1]


def test_offline_zip_opens_from_disk(browser, server, tmp_path):
    """`make zip`'s copy, unzipped and opened from disk (file://, no server, no network):
    a chapter's math is typeset, its slider is drawn and its images load."""
    import subprocess
    import zipfile

    archive = tmp_path / "book.zip"
    subprocess.run([sys.executable, str(ROOT / "scripts" / "make_zip.py"), str(HTML_DIR), str(archive)], check=True)
    with zipfile.ZipFile(archive) as zipped:
        zipped.extractall(tmp_path / "unzipped")
    chapters = [p for p in PAGES if p.startswith("chapters/")] or ["intro.html"]
    page_path = tmp_path / "unzipped" / "normalization-course" / chapters[0]
    context = browser.new_context(viewport=VIEWPORT)
    context.route("http*://**", lambda route: route.abort())  # nothing from the network
    page = context.new_page()
    errors = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(page_path.as_uri(), wait_until="load")
    page.evaluate(WAIT_FOR_RENDERING_JS)
    state = page.evaluate(
        """() => ({math: document.querySelectorAll('.math').length,
                   typeset: Array.from(document.querySelectorAll('.math'))
                     .filter(n => n.querySelector('mjx-container')).length,
                   views: document.querySelectorAll('script[type="application/vnd.jupyter.widget-view+json"]').length,
                   widgets: document.querySelectorAll('.jupyter-widgets').length,
                   broken: Array.from(document.images).filter(i => !i.naturalWidth).length})"""
    )
    context.close()
    assert not errors, errors
    assert state["typeset"] == state["math"] > 0, state
    assert state["widgets"] >= state["views"] and state["broken"] == 0, state
