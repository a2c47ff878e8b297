"""The one list of the course's notebooks, and the one form of their set-up cell.

Everything that walks over notebooks imports this module: `make test` (where nbval executes each
listed notebook once, in a fresh environment, see tests/nbval_course.py), the repository
checks (tests/test_repo.py), the browser test and scripts/sync_setup_cells.py.

* ``INCLUDE`` / ``EXCLUDE``: the notebooks a reader or a student runs. They are executed by
  `make test` exactly as a reader would run them, top to bottom, and their set-up cell must
  have the canonical form below. Notebooks that only instructors run (otter-grader master
  notebooks with solutions, generated autograder copies) must be matched by ``EXCLUDE``, so
  that they are never executed as students' notebooks and never need the student set-up cell.
* ``STUDENT``: which of the listed notebooks are student exercise notebooks. Their set-up cell
  also installs otter-grader when it is missing.

Work that adds a new kind of notebook (e.g. the graded exercises) extends these patterns here,
and nowhere else. ``python scripts/course_notebooks.py`` prints the list with each kind
(``--paths``: the paths alone, which `make test-notebooks` hands to nbval; with ``--first`` or
``--last``, only the notebooks of its first or second nbval run, see ``LAST``).
"""

from __future__ import annotations

import fnmatch
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# Glob patterns relative to the repository root ("**" crosses folders).
INCLUDE = ("chapters/*.ipynb", "exercises/**/*.ipynb")
EXCLUDE = (
    "**/.ipynb_checkpoints/**",
    "**/_build/**",
    "exercises/**/autograder/**",  # otter's generated autograder copies hold the solutions
    "exercises/source/**",  # otter master notebooks (solutions and hidden tests)
)
STUDENT = ("exercises/**",)
# Notebooks that read what the others record (normlib.lab.results): `make test-notebooks` runs
# them in a second nbval run, after all the others. (`make book` executes notebooks in the order
# of their paths, and these sort after the chapters they read; tests/test_results.py checks.)
LAST = ("chapters/10_*.ipynb",)
# Master notebooks are not executed as students' notebooks (otter runs them), but their first
# code cell *becomes* the student notebook's set-up cell, so it has the student form too.
MASTERS = ("exercises/source/*.ipynb",)

# The variable a set-up cell reads for where to install normlib from; the default is
# `git+<repository.url>` from _config.yml. tests/nbval_course.py points it at a wheel built
# from the local checkout; a fork or a mirror can point it anywhere pip understands.
SOURCE_VARIABLE = "NORMLIB_INSTALL_SOURCE"
# Notebook code lines stay within this width (the page cuts longer ones; ruff checks it).
NOTEBOOK_LINE_LENGTH = 79


def _match(path: str, pattern: str) -> bool:
    """fnmatch where "**/" may also match nothing (so "a/**/b" matches "a/b")."""
    if fnmatch.fnmatchcase(path, pattern):
        return True
    return "**/" in pattern and fnmatch.fnmatchcase(path, pattern.replace("**/", ""))


def relative(path: Path | str, root: Path = ROOT) -> str:
    return Path(path).resolve().relative_to(root.resolve()).as_posix()


def is_listed(path: Path | str, root: Path = ROOT) -> bool:
    rel = relative(path, root)
    return any(_match(rel, p) for p in INCLUDE) and not any(_match(rel, p) for p in EXCLUDE)


def kind(path: Path | str, root: Path = ROOT) -> str:
    """ "student" for a student exercise notebook, "chapter" for every other listed notebook."""
    rel = relative(path, root)
    return "student" if any(_match(rel, p) for p in STUDENT) else "chapter"


def course_notebooks(root: Path = ROOT) -> list[Path]:
    """Every listed notebook, sorted by path."""
    found = set()
    for pattern in INCLUDE:
        found.update(p for p in root.glob(pattern) if p.is_file())
    return sorted(p for p in found if is_listed(p, root))


def is_last(path: Path | str, root: Path = ROOT) -> bool:
    """A notebook that runs after all the others (``LAST``)."""
    return any(_match(relative(path, root), p) for p in LAST)


def course_notebooks_first(root: Path = ROOT) -> list[Path]:
    """The listed notebooks that `make test-notebooks` runs first (all but ``LAST``)."""
    return [p for p in course_notebooks(root) if not is_last(p, root)]


def course_notebooks_last(root: Path = ROOT) -> list[Path]:
    """The listed notebooks that run after all the others (``LAST``)."""
    return [p for p in course_notebooks(root) if is_last(p, root)]


def master_notebooks(root: Path = ROOT) -> list[Path]:
    """The exercise masters (sources of the student notebooks), sorted by path."""
    return sorted({p for pattern in MASTERS for p in root.glob(pattern) if p.is_file()})


def setup_notebooks(root: Path = ROOT) -> list[Path]:
    """Every notebook whose first code cell must be a canonical set-up block: the course
    notebooks and the exercise masters (whose set-up cell the student notebooks copy)."""
    return sorted(set(course_notebooks(root)) | set(master_notebooks(root)))


# --------------------------------------------------------------------------- set-up cell


def repository_url(root: Path = ROOT) -> str:
    """`repository.url` from _config.yml: the one place the repository's address lives."""
    import yaml

    config = yaml.safe_load((root / "_config.yml").read_text(encoding="utf-8")) or {}
    url = (config.get("repository") or {}).get("url")
    if not url:
        raise ValueError("_config.yml has no repository.url")
    return str(url).rstrip("/")


def otter_requirement(root: Path = ROOT) -> str:
    """The otter-grader pin from requirements.txt (so that it lives in one place)."""
    requirements = root / "requirements.txt"
    text = requirements.read_text(encoding="utf-8") if requirements.exists() else ""
    pin = re.search(r"^otter-grader\s*==\s*([^\s#;]+)", text, flags=re.M | re.I)
    return f"otter-grader=={pin.group(1)}" if pin else "otter-grader"


def _fit(line: str) -> str:
    # A long fork URL must not fail the notebook line-length check: say so on the line.
    return line + "  # noqa: E501" if len(line) > NOTEBOOK_LINE_LENGTH else line


def setup_block(notebook_kind: str = "chapter", root: Path = ROOT) -> str:
    """The canonical start of a notebook's first code cell (the rest of the cell is free).

    It installs only what is missing, so a local build never touches the network, and in
    Colab the first run installs normlib with its ``lab`` extra (the packages of the course's
    lab: matplotlib, ipywidgets, scikit-learn, ...) from the repository, or from
    $NORMLIB_INSTALL_SOURCE (a pip URL: ``git+...``, ``file:///...``).
    """
    url = repository_url(root)
    lines = [
        "try:",
        "    import normlib.lab.viz  # the course library and its lab's packages",
        "except ImportError:  # e.g. on Colab: install them",
        "    import os",
        "",
        "    source = os.environ.get(",
        f'        "{SOURCE_VARIABLE}",',
        _fit(f'        "git+{url}",'),
        "    )",
        '    %pip install -q "normlib[lab] @ {source}"',
        "    import normlib.lab.viz",
    ]
    if notebook_kind == "student":
        lines += [
            "try:",
            "    import otter",
            "except ImportError:  # the grader that checks your answers",
            _fit(f"    %pip install -q {otter_requirement(root)}"),
            "    import otter",
        ]
    elif notebook_kind != "chapter":
        raise ValueError(f"unknown notebook kind {notebook_kind!r}")
    return "\n".join(lines) + "\n"


def cell_source(cell: dict) -> str:
    src = cell.get("source", "")
    return "".join(src) if isinstance(src, list) else src


def first_code_cell(nb: dict) -> dict | None:
    return next((c for c in nb.get("cells", []) if c.get("cell_type") == "code"), None)


def setup_problems(nb: dict, notebook_kind: str, root: Path = ROOT) -> list[str]:
    """What is wrong with a notebook's set-up cell (an empty list: nothing)."""
    cell = first_code_cell(nb)
    if cell is None:
        return ["no code cell"]
    expected = setup_block(notebook_kind, root)
    if not cell_source(cell).startswith(expected):
        return [
            f"the first code cell does not start with the canonical {notebook_kind} set-up block "
            "(run `.venv/bin/python scripts/sync_setup_cells.py`)"
        ]
    return []


def replace_setup_block(source: str, block: str) -> str:
    """``source`` with its leading install statements replaced by ``block``.

    The install statements are the ``try: import normlib`` / ``try: import otter`` statements
    at the top of the cell (whatever their old form); code after them is kept. A cell without
    them gets ``block`` prepended.
    """
    lines = source.splitlines(keepends=True)
    i = 0
    while i < len(lines):
        rest = "".join(lines[i : i + 3])
        if not re.match(r"try:\s*\n\s+import (normlib|otter)\b", rest):
            break
        i += 1  # past "try:", then to the end of the statement: the next unindented line
        while i < len(lines) and (
            not lines[i].strip() or lines[i][0] in " \t" or re.match(r"(except|else|finally)\b", lines[i])
        ):
            i += 1
    rest = "".join(lines[i:]).lstrip("\n")
    return block + ("\n" + rest if rest else "")


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    paths_only = "--paths" in args  # for the Makefile
    # --first / --last: the two nbval runs of `make test-notebooks` (LAST after the others)
    notebooks = (
        course_notebooks_first()
        if "--first" in args
        else course_notebooks_last()
        if "--last" in args
        else course_notebooks()
    )
    for path in notebooks:
        print(relative(path) if paths_only else f"{kind(path):8} {relative(path)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
