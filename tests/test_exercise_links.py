"""Links from the exercise sets into the chapters land on a section that exists.

A set links the chapter section it drills (`[*Title*](<repository>/blob/<branch>/chapters/
NN_x.ipynb#anchor)`), in its questions and in its tests' failure messages. Every such link
must carry a `#fragment`, and the fragment must be the id that the book gives one of that
chapter's headings. The ids are derived from the notebook's markdown headings as Sphinx
does (docutils' ``make_id``: ASCII, lower case, runs of other characters become one ``-``,
leading digits and punctuation dropped), so the test needs no build; where a built book
exists (``_build/html``) the derivation is checked against its section ids. A link whose
label is a title in italics must name that section: the label is the heading's text.
"""

import json
import re
from functools import cache
from pathlib import Path

import nbformat
import pytest
from docutils.nodes import make_id

ROOT = Path(__file__).resolve().parent.parent
CHAPTERS = ROOT / "chapters"
EXERCISES = ROOT / "exercises"
NOTEBOOKS = sorted((EXERCISES / "student").glob("*.ipynb")) + sorted((EXERCISES / "source").glob("*.ipynb"))

_HEADING = re.compile(r"^(#{1,6})\s+(.+?)\s*#*\s*$")
_CHAPTER_URL = re.compile(r"chapters/([\w.-]+?\.ipynb)(#[^\s)\"'\\]*)?")
_MARKDOWN_LINK = re.compile(r"\[((?:[^\[\]]|\n)+?)\]\((https://\S+?/chapters/[\w.-]+?\.ipynb(?:#[^\s)]*)?)\)")


def heading_text(markdown):
    """The plain text of a heading's markdown: links, code and math marks removed."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", markdown)
    return re.sub(r"[`$*]|\\(?=[A-Za-z])", "", text).strip()


def headings(cells):
    """[(level, markdown text)] of the markdown headings, outside fenced blocks."""
    found = []
    for cell in cells:
        if cell["cell_type"] != "markdown":
            continue
        fence = None
        for line in "".join(cell["source"]).splitlines():
            stripped = line.lstrip()
            marker = re.match(r"(`{3,}|~{3,})", stripped)
            if marker:
                if fence is None:
                    fence = marker.group(1)
                elif stripped.startswith(fence):
                    fence = None
                continue
            match = _HEADING.match(line)
            if fence is None and match:
                found.append((len(match.group(1)), match.group(2)))
    return found


def directive_names(cells):
    """[(name, title)] of every directive with a `:name:` (e.g. a "Common mistakes" box).

    Sphinx makes the name an id; the title is the directive's argument.
    """
    found = []
    for cell in cells:
        if cell["cell_type"] == "markdown":
            text = "".join(cell["source"])
            pattern = r"^[`~]{3,}\{[\w-]+\}[ \t]*(.*)\n(?::[\w-]+:.*\n)*?:name:[ \t]*(\S+)"
            found += [(name, title) for title, name in re.findall(pattern, text, flags=re.M)]
    return found


@cache
def chapter_sections(name):
    """{anchor id: heading markdown} of chapters/<name>, as the built page names them.

    Named directives count too, under their id, with their title as their "heading".
    """
    nb = json.loads((CHAPTERS / name).read_text(encoding="utf-8"))
    sections = {}
    for _, markdown in headings(nb["cells"]):
        sections.setdefault(make_id(heading_text(markdown)), markdown)
    for target, title in directive_names(nb["cells"]):
        sections.setdefault(make_id(target), title or target)
    return sections


def _normalize(text):
    return " ".join(heading_text(text).split())


def link_problems(text, markdown_cells=()):
    """What is wrong with the chapter links in ``text`` (all of a notebook) and its markdown."""
    problems = []
    for name, fragment in _CHAPTER_URL.findall(text):
        if not (CHAPTERS / name).is_file():
            problems.append(f"chapters/{name} does not exist")
        elif not fragment or fragment == "#":
            problems.append(f"chapters/{name} is linked without a #fragment: link the section")
        elif fragment[1:] not in chapter_sections(name):
            problems.append(f"chapters/{name}{fragment}: no heading of that chapter has the id {fragment[1:]!r}")
    for source in markdown_cells:
        for label, url in _MARKDOWN_LINK.findall(source):
            name, _, fragment = url.rpartition("/")[2].partition("#")
            titled = re.fullmatch(r"\s*(?:Chapter \d+,\s*)?\*([^*]+)\*\s*", label)
            if not titled or fragment not in chapter_sections(name):
                continue
            heading = chapter_sections(name)[fragment]
            numbered = re.sub(r"^\d+\.\s+", "", heading)  # "6. A home-made ..." is named without "6."
            if _normalize(titled.group(1)) not in (_normalize(heading), _normalize(numbered)):
                problems.append(f"[{' '.join(label.split())}] links #{fragment}, whose heading is {heading!r}")
    return problems


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: str(p.relative_to(EXERCISES)))
def test_exercise_links_name_an_existing_section(path):
    nb = nbformat.read(path, as_version=4)
    text = json.dumps(nb, ensure_ascii=False)  # cells and metadata: otter keeps public tests there
    markdown = [c.source for c in nb.cells if c.cell_type == "markdown"]
    assert _CHAPTER_URL.search(text), f"{path.name} links no chapter"
    problems = link_problems(text, markdown)
    assert not problems, "\n".join(problems)


def test_link_check_can_fail():
    base = "https://github.com/o/r/blob/main/chapters"
    good = f"[*Running statistics*]({base}/05_batchnorm_inference.ipynb#running-statistics)"
    assert link_problems(good, [good]) == []
    whole = f"[Chapter 5, *BatchNorm at inference*]({base}/05_batchnorm_inference.ipynb#batchnorm-at-inference)"
    assert link_problems(whole, [whole]) == []
    split = f"[*The two ends: LayerNorm and\nInstanceNorm*]({base}/08_groupnorm.ipynb#the-two-ends-layernorm-and-instancenorm)"
    assert link_problems(split, [split]) == []
    assert "without a #fragment" in link_problems(f"{base}/05_batchnorm_inference.ipynb")[0]
    assert "no heading" in link_problems(f"{base}/05_batchnorm_inference.ipynb#edge-of-stability")[0]
    assert "does not exist" in link_problems(f"{base}/99_missing.ipynb#x")[0]
    short = f"[*The two ends*]({base}/08_groupnorm.ipynb#the-two-ends-layernorm-and-instancenorm)"
    assert "whose heading is" in link_problems(short, [short])[0]


def test_derived_ids_match_the_sphinx_rules():
    assert make_id(heading_text("6. A home-made BatchNorm without buffers")) == "a-home-made-batchnorm-without-buffers"
    assert make_id(heading_text("What γ and β are for")) == "what-and-are-for"
    assert make_id(heading_text("### `momentum=None`: the plain average".lstrip("# "))) == (
        "momentum-none-the-plain-average"
    )
    assert make_id(heading_text("No weight decay on $\\gamma$, $\\beta$ and biases")) == (
        "no-weight-decay-on-gamma-beta-and-biases"
    )
    sections = chapter_sections("05_batchnorm_inference.ipynb")
    assert "keras-s-momentum" in sections and "forgetting-eval" in sections
    assert "ch2-common-mistakes" in chapter_sections("02_why_normalize.ipynb")  # a named box


@pytest.mark.browser  # runs in `make test-browser`, after the book is built
@pytest.mark.parametrize("path", sorted(CHAPTERS.glob("*.ipynb")), ids=lambda p: p.name)
def test_derived_ids_are_the_built_pages_ids(path):
    """Where the book was built, every derived id is an id of the page."""
    page = ROOT / "_build" / "html" / "chapters" / f"{path.stem}.html"
    if not page.is_file():
        pytest.skip("the book is not built (make book)")
    built = set(re.findall(r'<[a-z]+[^>]*\bid="([^"]+)"', page.read_text(encoding="utf-8")))
    missing = set(chapter_sections(path.name)) - built
    assert not missing, f"{path.name}: derived ids {sorted(missing)} are not ids of {page}"
