"""The intro's list of exercise sets matches exercises/README.md and the chapters.

intro.md says which chapter each exercise set drills ("set 2 on Chapters 4 and 5");
exercises/README.md's table says it too, and each chapter links its sets' notebooks.
All three must agree, set by set.
"""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CHAPTER_NUMBERS = r"Chapters? (\d+)(?: and (\d+))?"


def _numbers(match, first_group):
    return {int(g) for g in match.groups()[first_group:] if g}


def intro_sets():
    """{set: chapters} from the intro's sentences "set N on Chapter(s) ..."."""
    text = " ".join(Path(ROOT / "intro.md").read_text(encoding="utf-8").split())
    sets = {}
    for match in re.finditer(r"\bset (\d+) on " + CHAPTER_NUMBERS, text):
        number = int(match.group(1))
        assert number not in sets, f"set {number} is listed twice"
        sets[number] = _numbers(match, 1)
    return sets


def readme_sets():
    """{set: chapters} from the table in exercises/README.md."""
    readme = (ROOT / "exercises" / "README.md").read_text(encoding="utf-8")
    sets = {}
    for line in readme.splitlines():
        match = re.match(r"\| (\d+)\. [^|]*\| " + CHAPTER_NUMBERS, line)
        if match:
            sets[int(match.group(1))] = _numbers(match, 1)
    return sets


def linked_sets():
    """{set: chapters} from the student notebooks each chapter links."""
    sets = {}
    for chapter in sorted((ROOT / "chapters").glob("[0-9][0-9]_*.ipynb")):
        text = chapter.read_text(encoding="utf-8")
        for number in set(re.findall(r"exercises/student/(\d+)_\w+\.ipynb", text)):
            sets.setdefault(int(number), set()).add(int(chapter.name[:2]))
    return sets


def test_readme_lists_ten_sets():
    assert sorted(readme_sets()) == list(range(1, 11))


def test_intro_mapping_matches_readme_and_chapters():
    intro, readme = intro_sets(), readme_sets()
    assert intro == readme
    assert intro == linked_sets()
