"""Every assert in a chapter's code cells must test something the chapter computed.

An assert whose test only combines literals (``assert 0.5**10 < 1.1e-3``), possibly through
builtins or ``math`` (``assert round(1 / 0.18, 1) == 5.6``), cannot fail whatever the
experiment does, so it checks nothing the sentence beside it claims (issues 19 and 20).
"""

import ast
import builtins
import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CHAPTERS = sorted((ROOT / "chapters").glob("*.ipynb"))

# Names that do not refer to anything the notebook computed: builtins (round, len, abs,
# ...) and modules of pure functions.
CONSTANT_NAMES = set(dir(builtins)) | {"math", "np", "numpy", "torch"}

_MAGIC = re.compile(r"^(\s*)[%!].*$", re.MULTILINE)


def python_source(cell_source: str) -> str:
    """The cell's source with IPython magics and shell lines replaced by `pass`."""
    return _MAGIC.sub(lambda m: m.group(1) + "pass", cell_source)


def constant_asserts(source: str) -> list[str]:
    """The asserts of `source` whose test refers to no name but builtins and `math`."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Assert):
            continue
        names = {n.id for n in ast.walk(node.test) if isinstance(n, ast.Name)}
        if names <= CONSTANT_NAMES:
            found.append(ast.get_source_segment(source, node) or ast.unparse(node))
    return found


def notebook_problems(path: Path) -> list[str]:
    nb = json.loads(path.read_text(encoding="utf-8"))
    problems = []
    for index, cell in enumerate(nb["cells"]):
        if cell["cell_type"] != "code":
            continue
        source = python_source("".join(cell["source"]))
        problems += [f"cell {index}: {a}" for a in constant_asserts(source)]
    return problems


def test_the_check_flags_literal_asserts():
    assert constant_asserts("assert 0.5**10 < 1.1e-3")
    assert constant_asserts("assert round(1/0.18, 1) == 5.6")
    assert constant_asserts("import math\nassert math.ceil(math.log(0.01) / math.log(0.9)) == 44")
    assert constant_asserts("assert 0.9e-3 < 0.5**10 < 1.1e-3 and 0.9e3 < 2**10 < 1.1e3")
    assert not constant_asserts("assert x < 1")
    assert not constant_asserts("assert round(ratio, 1) == 5.6")
    assert not constant_asserts("assert len(before) == 1347")
    # Magics do not stop the cell from being parsed.
    source = python_source("try:\n    import a\nexcept ImportError:\n    %pip install a\nassert 1 < 2")
    assert constant_asserts(source) == ["assert 1 < 2"]


@pytest.mark.parametrize("path", CHAPTERS, ids=[p.name for p in CHAPTERS])
def test_chapter_asserts_refer_to_computed_values(path):
    assert not notebook_problems(path), "asserts that cannot fail:\n" + "\n".join(notebook_problems(path))
