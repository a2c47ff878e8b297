"""Code comments in the chapters name equations by their content, never by their label.

The built book shows an equation with a number such as "(3)", never with its MyST label
(``$$ ... $$ (eq-moments)``), so a comment like ``# Check: eq-moments by hand`` points at
nothing a reader can see. Comments say what the equation is instead ("the mean and variance
of step 2", "the scale rule"); numbers are not used either, since they shift when equations
are added. Markdown ``{eq}`` roles are fine: they render as the equation's number.
"""

import io
import json
import re
import tokenize
from pathlib import Path

import pytest
from test_chapter_asserts import python_source

ROOT = Path(__file__).resolve().parent.parent
CHAPTERS = sorted((ROOT / "chapters").glob("*.ipynb"))

# Label-like names: "eq-moments", "ch4-scale" (also in "eq. ch4-scale").
LABEL_PATTERN = re.compile(r"\beq-[\w-]+|\bch\d+-[\w-]+")
# A displayed equation with a label: $$ ... $$ (label)
_DEFINED_LABEL = re.compile(r"\$\$\s*\(([\w-]+)\)")


def defined_labels(nb: dict) -> set[str]:
    """The labels of the equations the notebook's markdown cells define."""
    labels = set()
    for cell in nb["cells"]:
        if cell["cell_type"] == "markdown":
            labels |= set(_DEFINED_LABEL.findall("".join(cell["source"])))
    return labels


def comments(source: str) -> list[tuple[int, str]]:
    """(line number from 1, comment text) for every ``#`` comment of a code cell."""
    python = python_source(source)
    try:
        tokens = list(tokenize.generate_tokens(io.StringIO(python).readline))
    except (tokenize.TokenError, SyntaxError):
        # Unparseable cell: fall back to everything after the first "#" of a line.
        return [(n, line[line.index("#") :]) for n, line in enumerate(python.splitlines(), 1) if "#" in line]
    return [(tok.start[0], tok.string) for tok in tokens if tok.type == tokenize.COMMENT]


def label_mentions(text: str, labels: set[str]) -> list[str]:
    """The label names in ``text``: label-like words and any of ``labels``."""
    found = set(LABEL_PATTERN.findall(text))
    for label in labels:
        if re.search(r"(?<![\w-])" + re.escape(label) + r"(?![\w-])", text):
            found.add(label)
    return sorted(found)


def notebook_problems(nb: dict, name: str) -> list[str]:
    """'NAME cell i, line j: labels | comment' for every code comment naming an equation label."""
    labels = defined_labels(nb)
    problems = []
    for index, cell in enumerate(nb["cells"]):
        if cell["cell_type"] != "code":
            continue
        for line, text in comments("".join(cell["source"])):
            found = label_mentions(text, labels)
            if found:
                problems.append(f"{name} cell {index}, line {line}: {', '.join(found)} | {text}")
    return problems


def _nb(*cells: tuple[str, str]) -> dict:
    return {"cells": [{"cell_type": kind, "source": source} for kind, source in cells]}


def test_the_check_finds_labels_in_comments_only():
    defining = ("markdown", "$$\ny = ax\n$$ (scale-rule)\n\nSee {eq}`scale-rule` and {eq}`eq-x`.")
    flagged = _nb(
        defining,
        ("code", "x = 1  # eq-moments by hand\n"),
        ("code", "# Check eq. ch4-scale: a\ny = 2\n"),
        ("code", "%matplotlib inline\n# the scale-rule, by hand\n"),
    )
    assert notebook_problems(flagged, "nb") == [
        "nb cell 1, line 1: eq-moments | # eq-moments by hand",
        "nb cell 2, line 1: ch4-scale | # Check eq. ch4-scale: a",
        "nb cell 3, line 2: scale-rule | # the scale-rule, by hand",
    ]
    # Markdown roles, strings and words that only contain a label are not comments' labels.
    clean = _nb(
        defining,
        ("code", 'label = "eq-moments"  # a string, not a comment\n'),
        ("code", "# the scale rule (weights times a, gradient divided by a)\n"),
        ("code", "# a large-scale-rules check; the eq. of step 2\n"),
    )
    assert notebook_problems(clean, "nb") == []


@pytest.mark.parametrize("path", CHAPTERS, ids=[p.name for p in CHAPTERS])
def test_chapter_comments_name_equations_in_words(path):
    problems = notebook_problems(json.loads(path.read_text(encoding="utf-8")), f"chapters/{path.name}")
    assert not problems, (
        "code comments name equations by their MyST label, which the built book never shows;"
        " describe the equation in words instead (no equation numbers):\n" + "\n".join(problems)
    )
