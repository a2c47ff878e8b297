"""Chapter code cells stay short: at most 30 lines each (the chapter template's limit).

A reader follows a chapter cell by cell; a 60-line cell hides its point. Helpers and
plotting code that need more lines live in the lab package (``normlib.lab``), with their own
tests, and the chapter calls them (issues 19 and 20: "no chapter cell over 30 lines").
"""

import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CHAPTERS = sorted((ROOT / "chapters").glob("*.ipynb"))
LIMIT = 30


def long_cells(nb: dict, limit: int = LIMIT) -> list[str]:
    """'cell i: n lines (first line)' for every code cell of ``nb`` over ``limit`` lines."""
    found = []
    for index, cell in enumerate(nb["cells"]):
        if cell["cell_type"] != "code":
            continue
        lines = "".join(cell["source"]).rstrip("\n").splitlines()
        if len(lines) > limit:
            found.append(f"cell {index}: {len(lines)} lines ({lines[0][:60]})")
    return found


def test_the_check_counts_lines_of_code_cells_only():
    code = {"cell_type": "code", "source": ["x = 1\n"] * 31}
    text = {"cell_type": "markdown", "source": ["text\n"] * 99}
    short = {"cell_type": "code", "source": ["x = 1\n"] * 30}
    assert long_cells({"cells": [text, short]}) == []
    assert long_cells({"cells": [text, code]}) == ["cell 1: 31 lines (x = 1)"]


@pytest.mark.parametrize("path", CHAPTERS, ids=[p.name for p in CHAPTERS])
def test_chapter_code_cells_are_at_most_30_lines(path):
    found = long_cells(json.loads(path.read_text(encoding="utf-8")))
    assert not found, f"cells over {LIMIT} lines (move helpers to normlib.lab):\n" + "\n".join(found)


def cell_id_problems(nb: dict) -> list[str]:
    """Cells without an id, with an id nbformat 4.5 rejects, or with a repeated id."""
    import re

    problems, seen = [], set()
    for index, cell in enumerate(nb["cells"]):
        cell_id = cell.get("id")
        if not cell_id:
            problems.append(f"cell {index}: no id")
        elif not re.fullmatch(r"[a-zA-Z0-9_-]{1,64}", cell_id):
            problems.append(f"cell {index}: invalid id {cell_id!r}")
        elif cell_id in seen:
            problems.append(f"cell {index}: repeated id {cell_id!r}")
        seen.add(cell_id)
    return problems


def test_the_id_check_finds_missing_and_repeated_ids():
    cells = [{"id": "a"}, {"id": "a"}, {}, {"id": "no spaces"}]
    assert cell_id_problems({"cells": cells}) == [
        "cell 1: repeated id 'a'",
        "cell 2: no id",
        "cell 3: invalid id 'no spaces'",
    ]


NOTEBOOKS = CHAPTERS + sorted((ROOT / "exercises").glob("*/*.ipynb"))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[f"{p.parent.name}/{p.name}" for p in NOTEBOOKS])
def test_every_cell_has_a_unique_id(path):
    """nbformat 4.5 requires cell ids; a missing one is a warning today and an error later."""
    found = cell_id_problems(json.loads(path.read_text(encoding="utf-8")))
    assert not found, "\n".join(found)
