"""Repository conventions: chapter set-up cells install normlib from the book's repository
URL (`repository.url` in _config.yml), and notebooks are stored without outputs."""
import json
import pathlib
import re

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent


def notebooks(folder):
    base = ROOT / folder
    if not base.is_dir():
        return []
    return sorted(p for p in base.rglob("*.ipynb") if ".ipynb_checkpoints" not in p.parts and "_build" not in p.parts)


def source(cell):
    src = cell.get("source", "")
    return "".join(src) if isinstance(src, list) else src


def repository_url():
    yaml = pytest.importorskip("yaml")
    cfg_path = ROOT / "_config.yml"
    if not cfg_path.exists():
        pytest.skip("no _config.yml yet")
    cfg = yaml.safe_load(cfg_path.read_text(encoding="utf-8")) or {}
    url = (cfg.get("repository") or {}).get("url")
    assert url, "_config.yml has no repository.url"
    return url


def setup_cell_problems(nb, url):
    """What is wrong with a chapter's set-up cell (empty list: nothing)."""
    cells = [c for c in nb["cells"] if c.get("cell_type") == "code"]
    setup = next((c for c in cells if re.search(r"pip\s+install", source(c))), None)
    if setup is None:
        return ["no set-up cell with a pip install"]
    problems = []
    first_use = next((i for i, c in enumerate(cells) if "normlib" in source(c)), len(cells))
    if cells.index(setup) > first_use:
        problems.append("normlib is used before the set-up cell installs it")
    src = source(setup)
    targets = re.findall(r"git\+[^\s'\"]+", src)
    if not targets:
        problems.append("the set-up cell does not pip install git+<repository.url>")
    problems += [f"installs from {t!r}, expected 'git+{url}'" for t in targets if t != f"git+{url}"]
    if not re.search(r"^\s*(import\s+normlib|from\s+normlib\b)", src, flags=re.M):
        problems.append("the set-up cell does not import normlib")
    return problems


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


CHAPTERS = notebooks("chapters")
ALL_NOTEBOOKS = CHAPTERS + notebooks("exercises")


def _ids(paths):
    return [str(p.relative_to(ROOT)) for p in paths]


# Exercise notebooks (masters and students) install normlib the same way as the chapters.
@pytest.mark.skipif(not ALL_NOTEBOOKS, reason="no notebooks yet")
@pytest.mark.parametrize("nb_path", ALL_NOTEBOOKS, ids=_ids(ALL_NOTEBOOKS))
def test_setup_cell_installs_normlib_from_repository_url(nb_path):
    url = repository_url()
    problems = setup_cell_problems(json.loads(nb_path.read_text(encoding="utf-8")), url)
    assert not problems, f"{nb_path.relative_to(ROOT)}: " + "; ".join(problems)


@pytest.mark.skipif(not ALL_NOTEBOOKS, reason="no notebooks yet")
@pytest.mark.parametrize("nb_path", ALL_NOTEBOOKS, ids=_ids(ALL_NOTEBOOKS))
def test_notebook_stored_without_outputs(nb_path):
    problems = output_problems(json.loads(nb_path.read_text(encoding="utf-8")))
    assert not problems, f"{nb_path.relative_to(ROOT)} is stored with outputs:\n" + "\n".join(problems)


def _nb(*sources, outputs=None, count=None):
    return {"cells": [{"cell_type": "code", "source": s, "outputs": outputs or [], "execution_count": count,
                       "metadata": {}} for s in sources]}


def test_checkers_can_fail():
    url = "https://github.com/example/course"
    good = _nb(f"try:\n    import normlib\nexcept ImportError:\n    %pip install -q git+{url}\n    import normlib\n",
               "normlib.seed(0)")
    assert setup_cell_problems(good, url) == []
    assert setup_cell_problems(_nb("import normlib"), url)  # no install at all
    assert setup_cell_problems(_nb(f"%pip install git+{url}.git\nimport normlib"), url)  # not exactly the URL
    assert setup_cell_problems(_nb("import normlib", f"%pip install git+{url}\nimport normlib"), url)  # too late
    assert output_problems(good) == []
    assert output_problems(_nb("print(1)", outputs=[{"output_type": "stream", "text": "1"}]))
    assert output_problems(_nb("print(1)", count=3))
