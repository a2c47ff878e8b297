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
