"""Repository conventions.

* Every course notebook (scripts/course_notebooks.py) starts with the canonical set-up block,
  which installs normlib from `repository.url` in _config.yml (or $NORMLIB_INSTALL_SOURCE),
  and student exercise notebooks also install otter-grader; scripts/sync_setup_cells.py fixes
  a notebook that differs.
* Notebooks are stored without outputs; folded cells say what they hold; no hard-coded device.
* The publishing files are there and well formed: the GitHub Actions workflow, the licences,
  CITATION.cff.
"""

import json
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
import course_notebooks as cn  # noqa: E402

NOTEBOOKS = cn.course_notebooks()


def _ids(paths):
    return [cn.relative(p) for p in paths]


def _load(path):
    return json.loads(path.read_text(encoding="utf-8"))


def output_problems(nb):
    problems = []
    for i, cell in enumerate(nb["cells"]):
        if cell.get("cell_type") != "code":
            continue
        if cell.get("outputs"):
            problems.append(f"cell {i}: {len(cell['outputs'])} stored output(s)")
        if cell.get("execution_count") is not None:
            problems.append(f"cell {i}: execution_count={cell['execution_count']}")
    return problems


def folding_problems(nb):
    """A folded code cell (hide-input) must say what it holds when folded, e.g. "Show the
    check", instead of myst-nb's "Show code cell source"."""
    problems = []
    for i, cell in enumerate(nb["cells"]):
        tags = (cell.get("metadata") or {}).get("tags") or []
        if cell.get("cell_type") != "code" or not {"hide-input", "hide-cell"} & set(tags):
            continue
        label = ((cell.get("metadata") or {}).get("mystnb") or {}).get("code_prompt_show")
        if not label:
            problems.append(f"cell {i}: folded without a label (metadata mystnb.code_prompt_show)")
    return problems


HARD_CODED_DEVICE = re.compile(r"""\.cuda\(|device\s*=\s*["']cuda|torch\.device\(\s*["']cuda""")


def device_problems(nb):
    """Notebooks use normlib.device() (CUDA, MPS or the CPU), never a hard-coded device."""
    return [
        f"cell {i}: hard-coded device {m.group(0)!r} (use normlib.device())"
        for i, cell in enumerate(nb["cells"])
        if cell.get("cell_type") == "code"
        for m in [HARD_CODED_DEVICE.search(cn.cell_source(cell))]
        if m
    ]


SETUP_NOTEBOOKS = cn.setup_notebooks()  # the course notebooks and the exercise masters


@pytest.mark.skipif(not SETUP_NOTEBOOKS, reason="no course notebooks")
@pytest.mark.parametrize("path", SETUP_NOTEBOOKS, ids=_ids(SETUP_NOTEBOOKS))
def test_setup_cell_is_canonical(path):
    problems = cn.setup_problems(_load(path), cn.kind(path))
    assert not problems, f"{cn.relative(path)}: " + "; ".join(problems)


@pytest.mark.skipif(not NOTEBOOKS, reason="no course notebooks")
@pytest.mark.parametrize("path", NOTEBOOKS, ids=_ids(NOTEBOOKS))
def test_notebook_conventions(path):
    nb = _load(path)
    problems = output_problems(nb) + folding_problems(nb) + device_problems(nb)
    assert not problems, f"{cn.relative(path)}:\n" + "\n".join(problems)


def _nb(*sources, outputs=None, count=None, metadata=None):
    return {
        "cells": [
            {"cell_type": "code", "source": s, "outputs": outputs or [], "execution_count": count,
             "metadata": metadata or {}}
            for s in sources
        ]
    }  # fmt: skip


def test_checkers_can_fail():
    block = cn.setup_block("chapter")
    assert cn.setup_problems(_nb(block + "\nimport torch\n", "normlib.seed(0)"), "chapter") == []
    assert cn.setup_problems(_nb("import normlib"), "chapter")  # no install at all
    url = cn.repository_url()
    old_form = f"try:\n    import normlib\nexcept ImportError:\n    %pip install -q git+{url}\n    import normlib\n"
    assert cn.setup_problems(_nb(old_form), "chapter")  # the older template
    assert cn.setup_problems(_nb("import torch", block), "chapter")  # not the first code cell
    assert cn.setup_problems(_nb(block), "student")  # a student notebook also needs otter
    assert cn.setup_problems(_nb(cn.setup_block("student")), "student") == []
    assert output_problems(_nb("print(1)", outputs=[{"output_type": "stream", "text": "1"}]))
    assert output_problems(_nb("print(1)", count=3))
    assert folding_problems(_nb("assert True", metadata={"tags": ["hide-input"]}))
    labelled = {"tags": ["hide-input"], "mystnb": {"code_prompt_show": "Show the check"}}
    assert folding_problems(_nb("assert True", metadata=labelled)) == []
    assert device_problems(_nb("x = x.cuda()"))
    assert device_problems(_nb("model.to(device='cuda')"))
    assert device_problems(_nb("device = normlib.device()\nx = x.to(device)")) == []


def test_sync_rewrites_any_older_set_up_block():
    """scripts/sync_setup_cells.py's rewrite: the old install statements go, the rest stays."""
    url = cn.repository_url()
    old = (
        f"try:\n    import normlib\nexcept ImportError:  # e.g. on Colab\n"
        f"    %pip install -q git+{url}\n    import normlib\n\nimport torch\n\nnormlib.seed(0)"
    )
    new = cn.replace_setup_block(old, cn.setup_block("chapter"))
    assert new.startswith(cn.setup_block("chapter"))
    assert new.endswith("\nimport torch\n\nnormlib.seed(0)") and new.count("%pip") == 1
    assert cn.replace_setup_block(new, cn.setup_block("chapter")) == new  # idempotent
    student = cn.replace_setup_block(new, cn.setup_block("student"))
    assert student.startswith(cn.setup_block("student")) and student.count("import otter") == 2
    assert cn.replace_setup_block("import torch", cn.setup_block("chapter")).endswith("\nimport torch")


def test_setup_block_installs_from_the_repository_url():
    url = cn.repository_url()
    block = cn.setup_block("chapter")
    assert f'"git+{url}"' in block and f'"{cn.SOURCE_VARIABLE}"' in block
    assert all(len(line) <= cn.NOTEBOOK_LINE_LENGTH or "noqa: E501" in line for line in block.splitlines())


def test_notebook_list_excludes_instructor_notebooks():
    assert cn.is_listed(ROOT / "chapters/01_one_recipe.ipynb")
    assert cn.is_listed(ROOT / "exercises/student/01_normalize_and_count.ipynb")
    assert cn.kind(ROOT / "exercises/student/01_normalize_and_count.ipynb") == "student"
    assert not cn.is_listed(ROOT / "exercises/ex01/autograder/ex01.ipynb")
    assert not cn.is_listed(ROOT / "exercises/source/01_normalize_and_count.ipynb")  # a master
    assert cn.kind(ROOT / "exercises/source/01_normalize_and_count.ipynb") == "student"  # its set-up cell
    assert not cn.is_listed(ROOT / "chapters/.ipynb_checkpoints/01-checkpoint.ipynb")
    assert not cn.is_listed(ROOT / "_build/html/_sources/chapters/01_one_recipe.ipynb")


# --------------------------------------------------------------------------- publishing


def test_workflow_runs_the_tests_and_deploys_pages_from_main():
    yaml = pytest.importorskip("yaml")
    path = ROOT / ".github" / "workflows" / "book.yml"
    workflow = yaml.safe_load(path.read_text(encoding="utf-8"))
    triggers = workflow.get("on", workflow.get(True))  # YAML 1.1 reads a bare `on` as True
    assert "push" in triggers and "main" in triggers["push"]["branches"]
    jobs = workflow["jobs"]
    test_steps = jobs["test"]["steps"]
    assert any("bash .ci/run" in str(step.get("run", "")) for step in test_steps), "the test job runs .ci/run"
    deploy = jobs["deploy"]
    assert deploy["needs"] in ("test", ["test"]) and "refs/heads/main" in deploy["if"]
    assert deploy["environment"]["name"] == "github-pages"
    assert any(str(step.get("uses", "")).startswith("actions/deploy-pages@") for step in deploy["steps"])
    upload = [s for s in test_steps if str(s.get("uses", "")).startswith("actions/upload-pages-artifact@")]
    assert upload and upload[0]["with"]["path"] == "_build/html"
    assert workflow["permissions"]["pages"] == "write" and workflow["permissions"]["id-token"] == "write"


def test_licences_and_citation():
    yaml = pytest.importorskip("yaml")
    code = (ROOT / "LICENSE").read_text(encoding="utf-8")
    assert code.startswith("MIT License")
    text = (ROOT / "LICENSE-CONTENT.md").read_text(encoding="utf-8")
    assert "Creative Commons Attribution 4.0 International" in text and "CC BY 4.0" in text
    citation = yaml.safe_load((ROOT / "CITATION.cff").read_text(encoding="utf-8"))
    for key in ("cff-version", "message", "title", "authors", "license"):
        assert citation.get(key), f"CITATION.cff has no {key}"
    assert set(citation["license"]) == {"MIT", "CC-BY-4.0"}
    # repository.url in _config.yml stays the one place the address lives (a fork changes
    # only that line): GitHub's "Cite this repository" adds the address itself.
    assert "repository-code" not in citation and "url" not in citation


# --------------------------------------------------------------------------- table of contents


def toc_chapter_titles():
    """(file, title) of every chapter entry in _toc.yml (the appendices are not chapters)."""
    return [(file, title) for file, title in toc_entries() if not file.startswith(APPENDIX_DIR)]


APPENDIX_DIR = "appendices/"


def toc_entries():
    """(file, title) of every entry in _toc.yml, in order."""
    yaml = pytest.importorskip("yaml")
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text(encoding="utf-8"))
    return [(entry["file"], entry.get("title")) for part in toc["parts"] for entry in part["chapters"]]


def toc_title_problems(file: str, title, heading: str) -> list[str]:
    """A chapter's sidebar title is "<N>. <its notebook's heading>", N from the file name."""
    number = re.match(r"chapters/(\d+)_", file)
    if not number:
        return [f"{file}: not a chapters/NN_name file"]
    expected = f"{int(number.group(1))}. {heading}"
    return [] if title == expected else [f"{file}: _toc.yml title {title!r}, expected {expected!r}"]


def notebook_heading(path) -> str:
    first = _load(path)["cells"][0]
    return cn.cell_source(first).splitlines()[0].lstrip("#").strip()


def test_toc_titles_carry_the_chapter_numbers_of_the_plan():
    entries = toc_chapter_titles()
    assert entries, "no chapters in _toc.yml"
    problems = []
    for file, title in entries:
        problems += toc_title_problems(file, title, notebook_heading(ROOT / f"{file}.ipynb"))
    assert not problems, "\n".join(problems)
    listed = {f"{file}.ipynb" for file, _ in entries}
    unlisted = [
        cn.relative(p) for p in cn.course_notebooks() if cn.kind(p) == "chapter" and cn.relative(p) not in listed
    ]
    assert not unlisted, f"chapters missing from _toc.yml: {unlisted}"


def page_heading(path: Path) -> str:
    """The title of a MyST (``# Title``) or reStructuredText (a line underlined with =) page, as
    plain text (inline code and emphasis marks removed, as the sidebar shows it)."""
    lines = path.read_text(encoding="utf-8").splitlines()
    for i, line in enumerate(lines):
        if path.suffix == ".md" and line.startswith("# "):
            return re.sub(r"[`*]", "", line[2:]).strip()
        if path.suffix == ".rst" and line.strip() and i + 1 < len(lines) and re.fullmatch(r"=+", lines[i + 1]):
            return re.sub(r"[`*]", "", line).strip()
    return ""


def appendix_title_problems(entries: list[tuple[str, str | None, str]]) -> list[str]:
    """(file, title, heading) of the appendices, in _toc.yml's order: they are lettered A, B, ...
    as "<letter>. <the page's heading>", after the numbered chapters."""
    problems = []
    for letter, (file, title, heading) in zip("ABCDEFGHIJKLMNOPQRSTUVWXYZ", entries):
        expected = f"{letter}. {heading}"
        if title != expected:
            problems.append(f"{file}: _toc.yml title {title!r}, expected {expected!r}")
    return problems


def test_toc_appendices_are_lettered_and_come_last():
    entries = toc_entries()
    files = [file for file, _ in entries]
    appendices = [(file, title) for file, title in entries if file.startswith(APPENDIX_DIR)]
    assert appendices, "no appendices in _toc.yml"
    first = files.index(appendices[0][0])
    assert all(f.startswith(APPENDIX_DIR) for f in files[first:]), f"a chapter after the appendices: {files[first:]}"
    with_headings = []
    for file, title in appendices:
        page = next(ROOT.glob(f"{file}.*"), None)
        assert page is not None, f"{file}: no such page"
        with_headings.append((file, title, page_heading(page)))
    problems = appendix_title_problems(with_headings)
    assert not problems, "\n".join(problems)


def test_toc_title_check_can_fail():
    assert appendix_title_problems([("appendices/glossary", "A. Glossary", "Glossary")]) == []
    assert appendix_title_problems([("appendices/glossary", "Glossary", "Glossary")])  # no letter
    assert appendix_title_problems([("appendices/api", "B. API", "API")])  # the first is A
    assert page_heading(ROOT / "appendices" / "api.rst") == "The normlib API reference"

    assert toc_title_problems("chapters/11_speed", "11. Speed", "Speed") == []
    assert toc_title_problems("chapters/11_speed", "9. Speed", "Speed")  # automatic numbering's count
    assert toc_title_problems("chapters/11_speed", "11. Old title", "Speed")  # heading changed
    assert toc_title_problems("chapters/11_speed", None, "Speed")  # no title: numbered by position
