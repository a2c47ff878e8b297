"""README.md and the API reference's install lines say what the repository does.

Each test reads the thing a sentence describes (the workflow's triggers, the Makefile's
interpreter, the folder listing, the exercise sets, the set-up cells' install source) and
checks the sentence against it.
"""

import re
import sys
from pathlib import Path

import pytest
import torch

import normlib

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
sys.path.insert(0, str(ROOT / "tests"))
from test_intro_sets import readme_sets  # noqa: E402

import course_notebooks as cn  # noqa: E402

README = (ROOT / "README.md").read_text(encoding="utf-8")
FLAT = " ".join(README.split())
NUMBER_WORDS = {8: "eight", 9: "nine", 10: "ten", 11: "eleven", 12: "twelve"}


def test_readme_says_results_agree_up_to_rounding_not_exactly():
    """normlib's layers give torch's numbers up to rounding, not bit for bit."""
    assert "exactly like" not in FLAT
    assert "the same results up to floating-point rounding" in FLAT
    x = torch.randn(8, 16, 10, 10, generator=torch.Generator().manual_seed(0))
    differences = []
    for ours, theirs in [
        (normlib.BatchNorm2d(16), torch.nn.BatchNorm2d(16)),
        (normlib.InstanceNorm2d(16), torch.nn.InstanceNorm2d(16)),
        (normlib.GroupNorm(4, 16), torch.nn.GroupNorm(4, 16)),
    ]:
        with torch.no_grad():
            a, b = ours(x), theirs(x)
        torch.testing.assert_close(a, b)
        differences.append((a - b).abs().max().item())
    assert max(differences) > 0, "bit-identical here: the README's caveat could go"


def test_readme_counts_the_exercise_sets_and_the_chapter_without_one():
    sets = readme_sets()  # exercises/README.md's table
    chapters = {int(p.name[:2]) for p in (ROOT / "chapters").glob("[0-9][0-9]_*.ipynb")}
    uncovered = sorted(chapters - set().union(*sets.values()))
    assert len(uncovered) == 1, uncovered
    assert f"holds {NUMBER_WORDS[len(sets)]} graded exercise sets" in FLAT
    assert f"cover every written chapter except Chapter {uncovered[0]}" in FLAT
    assert "one graded exercise set per written chapter" not in FLAT


def test_readme_has_no_planned_chapters():
    assert "*planned*" not in README and "not written yet" not in README


def test_readme_creates_the_venv_before_installing_cpu_torch():
    """The CPU-torch tip creates .venv with the Makefile's interpreter before using its pip."""
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    python = re.search(r"^PYTHON \?= (\S+)$", makefile, re.M).group(1)
    assert "$(PYTHON) -m venv $(VENV)" in makefile and re.search(r"^VENV \?= \.venv$", makefile, re.M)
    create = README.index(f"{python} -m venv .venv")
    install = README.index(".venv/bin/pip install torch==")
    assert create < install
    pinned = re.search(r"^torch==(\S+)$", (ROOT / "requirements.txt").read_text(), re.M).group(1)
    assert f".venv/bin/pip install torch=={pinned} " in README


def test_readme_states_the_workflow_triggers():
    yaml = pytest.importorskip("yaml")
    workflow = yaml.safe_load((ROOT / ".github" / "workflows" / "book.yml").read_text(encoding="utf-8"))
    triggers = workflow.get("on", workflow.get(True))  # YAML 1.1 reads a bare `on` as True
    assert set(triggers) == {"push", "pull_request", "workflow_dispatch"}
    assert triggers["push"]["branches"] == ["main"]
    assert "runs `make test` on every push to `main`, on every pull request and when started by hand" in FLAT
    assert "tests on pushes to main, pull requests and manual runs" in FLAT
    assert "on every push and pull request" not in FLAT and "tests on every push," not in FLAT


def test_readme_layout_lists_every_extension():
    layout = README[README.index("## Repository layout") :]
    for path in sorted((ROOT / "_ext").glob("*.py")):
        assert path.name in layout, path.name


def test_install_lines_use_the_repository_url():
    """The API page's install commands are the set-up cell's: git+ the repository.url of _config.yml."""
    url = cn.repository_url()
    api = " ".join((ROOT / "appendices" / "api.rst").read_text(encoding="utf-8").replace("\\\n", " ").split())
    assert f'pip install "normlib @ git+{url}"' in api
    assert f'pip install "normlib[lab] @ git+{url}"' in api
    assert '"normlib[lab] @ {source}"' in cn.setup_block("chapter") and f'"git+{url}"' in cn.setup_block("chapter")
    assert "pip install normlib)" not in api and 'install "normlib[lab]"``' not in api
    assert f'%pip install -q "normlib[lab] @ git+{url}"' in README
