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
             local file came back 404;
* slider   - (skip with --no-interact) on a page with an ipywidgets slider (e.g. the
             `normlib.viz.explorer` SelectionSlider jslinked to a Stack of Images), no kernel:
             a copy of the page with a test script injected is served next to it
             (`<page>.slidertest.html`, from memory, nothing is written to the build); the script
             presses ArrowRight on the slider handle step by step and records the readout and a
             hash of the pixels of the image shown in the widget box. Every step must show the
             next label and an image that differs from the first one and from the previous step.

Prints PASS/FAIL per page and exits 1 if any page fails.
"""

from __future__ import annotations

import argparse
import functools
import http.server
import json
import math
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
    # Pages served from memory instead of the build folder (the slider test copies).
    overrides: dict[str, bytes] = field(default_factory=dict)

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

        def do_GET(self):
            body = served.overrides.get(unquote(urlsplit(self.path).path))
            if body is None:
                return super().do_GET()
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

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


SLIDER_MODELS = {"SelectionSliderModel", "IntSliderModel", "FloatSliderModel", "FloatLogSliderModel"}
RANGE_SLIDER_MODELS = {"IntRangeSliderModel", "FloatRangeSliderModel", "SelectionRangeSliderModel"}
MAX_SLIDER_STEPS = 24  # steps pressed per slider at most (all of them for an explorer)
SLIDER_SETTLE_MS = 4000  # after `load`, for the widget manager to render
SLIDER_STEP_MS = 1000  # after each key press, for the readout and the Stack to update
# Injected before </body> of the test copy. __PLAN__ is a JSON list, one entry per slider in
# the page (document order): how many times to press ArrowRight on it (0: leave it alone).
SLIDER_TEST_JS = r"""
<script>
(function () {
  const PLAN = __PLAN__, SETTLE = __SETTLE__, STEP = __STEP__;
  const log = {done: false, found: null, sliders: [], error: null};
  const write = () => {
    let pre = document.getElementById('slider-test');
    if (!pre) { pre = document.createElement('pre'); pre.id = 'slider-test'; document.body.appendChild(pre); }
    pre.textContent = JSON.stringify(log);
  };
  const sleep = ms => new Promise(resolve => setTimeout(resolve, ms));
  function fnv1a(bytes) {
    let h = 0x811c9dc5;
    for (let i = 0; i < bytes.length; i++) { h ^= bytes[i]; h = Math.imul(h, 0x01000193); }
    return (h >>> 0).toString(16).padStart(8, '0');
  }
  async function imageHash(box) {
    const img = Array.from(box.querySelectorAll('img')).find(i => i.getClientRects().length > 0);
    if (!img) return null;
    if (!img.complete) {
      await new Promise(done => {
        img.addEventListener('load', done, {once: true});
        img.addEventListener('error', done, {once: true});
        setTimeout(done, 2000);
      });
    }
    const w = img.naturalWidth, h = img.naturalHeight;
    if (!w || !h) return 'empty';
    const canvas = document.createElement('canvas');
    canvas.width = w; canvas.height = h;
    const ctx = canvas.getContext('2d');
    ctx.drawImage(img, 0, 0);
    return w + 'x' + h + ':' + fnv1a(ctx.getImageData(0, 0, w, h).data);  // blob:/data: are same-origin
  }
  async function snap(slider, box) {
    const readout = slider.querySelector('.widget-readout');
    return {readout: readout ? readout.textContent.trim() : null, image: await imageHash(box)};
  }
  function press(handle) {
    handle.focus();
    handle.dispatchEvent(new KeyboardEvent('keydown',
      {key: 'ArrowRight', code: 'ArrowRight', keyCode: 39, which: 39, bubbles: true, cancelable: true}));
  }
  async function run() {
    try {
      const want = PLAN.length;
      for (let waited = 0; waited < 10000 && document.querySelectorAll('.widget-slider').length < want; waited += 250) {
        await sleep(250);
      }
      await sleep(SETTLE);
      const sliders = Array.from(document.querySelectorAll('.widget-slider'));
      log.found = sliders.length;
      write();
      for (let i = 0; i < sliders.length && i < PLAN.length; i++) {
        const slider = sliders[i];
        const box = slider.closest('.widget-subarea') || slider.closest('.cell_output') || slider.parentElement;
        const handles = slider.querySelectorAll('.noUi-handle');
        const entry = {handles: handles.length, states: [await snap(slider, box)]};
        log.sliders.push(entry);
        write();
        if (handles.length !== 1) continue;
        for (let k = 1; k <= PLAN[i]; k++) {
          press(handles[0]);
          await sleep(STEP);
          entry.states.push(await snap(slider, box));
          write();
        }
      }
    } catch (e) {
      log.error = String(e && e.stack || e);
    }
    log.done = true;
    write();
  }
  window.addEventListener('load', run);
})();
</script>
"""


@dataclass
class SliderSpec:
    """One slider model as the page shows it: the readout expected at each position."""

    model: str
    start: int
    positions: int
    labels: list[str | None]  # expected readout per position (None: only check that it changes)

    @property
    def steps(self) -> int:
        if self.model not in SLIDER_MODELS:
            return 0
        return max(0, min(self.positions - 1 - self.start, MAX_SLIDER_STEPS))


def _readout(value: float, fmt: str | None) -> str | None:
    try:
        return format(value, fmt or "")
    except (TypeError, ValueError):
        return None


def slider_specs(static: BeautifulSoup) -> list[SliderSpec]:
    """The page's slider models in the order they are rendered (views in document order, walked
    depth-first through containers; a Stack shows only its selected child)."""
    state_tag = static.find("script", type="application/vnd.jupyter.widget-state+json")
    if state_tag is None:
        return []
    try:
        models = json.loads(state_tag.string or "{}").get("state", {})
    except json.JSONDecodeError:
        return []
    specs: list[SliderSpec] = []

    def ref(value) -> str | None:
        return value[len("IPY_MODEL_"):] if isinstance(value, str) and value.startswith("IPY_MODEL_") else None

    def walk(model_id: str | None, depth: int = 0) -> None:
        model = models.get(model_id or "")
        if model is None or depth > 50:
            return
        name, st = model.get("model_name", ""), model.get("state", {})
        if name in SLIDER_MODELS | RANGE_SLIDER_MODELS:
            specs.append(_slider_spec(name, st))
        children = [ref(c) for c in st.get("children") or []]
        if name == "StackModel":
            index = st.get("selected_index")
            children = [children[index]] if isinstance(index, int) and 0 <= index < len(children) else []
        for child in children:
            walk(child, depth + 1)

    for view in static.find_all("script", type="application/vnd.jupyter.widget-view+json"):
        try:
            walk(json.loads(view.string or "{}").get("model_id"))
        except json.JSONDecodeError:
            continue
    return specs


def _slider_spec(name: str, st: dict) -> SliderSpec:
    if name == "SelectionSliderModel":
        labels = [str(x) for x in st.get("_options_labels") or []]
        return SliderSpec(name, int(st.get("index") or 0), len(labels), list(labels))
    if name in ("IntSliderModel", "FloatSliderModel", "FloatLogSliderModel"):
        lo, hi, step = st.get("min", 0), st.get("max", 100), st.get("step") or 1
        fmt = st.get("readout_format")
        positions = int(round((hi - lo) / step)) + 1 if step > 0 and hi >= lo else 1
        value = st.get("value", lo)
        if name == "FloatLogSliderModel":  # the slider moves the exponent
            base = st.get("base", 10)
            exponent = math.log(value, base) if value > 0 and base > 1 else lo
            start = int(round((exponent - lo) / step))
            labels = [None] * positions  # rounding of base**x in JS vs Python: only check a change
        else:
            start = int(round((value - lo) / step)) if step > 0 else 0
            if name == "IntSliderModel":
                labels = [_readout(int(lo + k * step), fmt or "d") for k in range(positions)]
            else:
                labels = [None] * positions  # float rounding: only check that the readout changes
        return SliderSpec(name, max(0, min(start, positions - 1)), positions, labels)
    return SliderSpec(name, 0, 0, [])  # range sliders: not exercised


def check_sliders(chromium: str, served: Served, build_dir: Path, page: str, base: str, workdir: Path,
                  specs: list[SliderSpec]) -> tuple[list[str], str]:
    """Move each slider with the keyboard in Chromium and check readout and image at every step."""
    plan = [spec.steps for spec in specs]
    html = (build_dir / page).read_text(encoding="utf-8")
    script = (SLIDER_TEST_JS.replace("__PLAN__", json.dumps(plan))
              .replace("__SETTLE__", str(SLIDER_SETTLE_MS)).replace("__STEP__", str(SLIDER_STEP_MS)))
    cut = html.lower().rfind("</body>")
    html = html[:cut] + script + html[cut:] if cut >= 0 else html + script
    test_page = page.removesuffix(".html") + ".slidertest.html"
    served.overrides["/" + test_page] = html.encode("utf-8")
    budget = max(20000, SLIDER_SETTLE_MS + 10000 + sum(plan) * (SLIDER_STEP_MS + 300) + 3000)
    try:
        result = run_chromium(chromium, urljoin(base, test_page), workdir / "slider", budget, ["--dump-dom"])
    except subprocess.TimeoutExpired:
        return ["slider: Chromium timed out"], "slider: not checked"
    finally:
        served.overrides.pop("/" + test_page, None)
    pre = BeautifulSoup(result.stdout, "html.parser").find("pre", id="slider-test")
    if pre is None:
        return [f"slider: the test script wrote no result (chromium exited {result.returncode})"], "slider: not checked"
    try:
        log = json.loads(pre.get_text())
    except json.JSONDecodeError:
        return ["slider: unreadable test result"], "slider: not checked"
    problems: list[str] = []
    if log.get("error"):
        problems.append(f"slider: test script error: {log['error'].splitlines()[0][:200]}")
    if not log.get("done"):
        problems.append("slider: test did not finish within the virtual time budget")
    if log.get("found") != len(specs):
        problems.append(f"slider: {len(specs)} slider model(s) in the page state, {log.get('found')} rendered")
    notes = []
    for i, (spec, result_i) in enumerate(zip(specs, log.get("sliders") or [])):
        tag = "slider" if len(specs) == 1 else f"slider {i + 1}"
        if spec.steps == 0 and spec.model not in SLIDER_MODELS:
            notes.append(f"{tag}: {spec.model} not exercised")
            continue
        found = _check_slider_steps(tag, spec, result_i)
        problems += found
        if not found:
            covered = "every step" if spec.steps == spec.positions - 1 else \
                f"each of {spec.steps} steps from position {spec.start + 1}"
            notes.append(f"{tag}: {spec.positions} positions, readout and image change at {covered}")
    if len(log.get("sliders") or []) < min(len(specs), log.get("found") or 0):
        problems.append(f"slider: only {len(log.get('sliders') or [])} of {len(specs)} slider(s) tested")
    if problems and not notes:
        notes.append(f"slider: {len(specs)} slider(s), FAILED")
    return problems, "; ".join(notes)


def _check_slider_steps(tag: str, spec: SliderSpec, result: dict) -> list[str]:
    states = result.get("states") or []
    if result.get("handles") != 1:
        return [f"{tag}: expected one slider handle, found {result.get('handles')}"]
    if spec.steps < 1:
        return [f"{tag}: only {spec.positions} position(s) from position {spec.start + 1}, nothing to move"]
    if len(states) != spec.steps + 1:
        return [f"{tag}: recorded {len(states) - 1} of {spec.steps} steps"]
    problems = []
    first = states[0]
    if first.get("image") in (None, "empty"):
        problems.append(f"{tag}: no image shown in the widget box"
                        + (" (empty)" if first.get("image") == "empty" else ""))
    expected0 = spec.labels[spec.start]
    if expected0 is not None and first.get("readout") != expected0:
        problems.append(f"{tag}: initial readout {first.get('readout')!r}, expected {expected0!r}")
    for k in range(1, spec.steps + 1):
        now, before = states[k], states[k - 1]
        expected = spec.labels[spec.start + k]
        if expected is not None and now.get("readout") != expected:
            problems.append(f"{tag}: after {k} ArrowRight the readout is {now.get('readout')!r}, expected {expected!r}")
        elif expected is None and now.get("readout") == before.get("readout"):
            problems.append(f"{tag}: after {k} ArrowRight the readout is still {now.get('readout')!r}")
        if now.get("image") in (None, "empty"):
            problems.append(f"{tag}: after {k} ArrowRight no image is shown")
        elif now.get("image") == first.get("image"):
            problems.append(f"{tag}: after {k} ArrowRight the image is the same as at the start")
        elif now.get("image") == before.get("image"):
            problems.append(f"{tag}: after {k} ArrowRight the image did not change from step {k - 1}")
    return problems


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
    parser.add_argument("--no-interact", action="store_true",
                        help="skip the slider check (moving each ipywidgets slider in the browser)")
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
                specs = [] if args.no_interact else slider_specs(static)
                if specs:
                    found, note = check_sliders(args.chromium, served, build_dir, page, base, workdir, specs)
                    problems += found
                    notes.append(note)
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
