"""The graded exercises (exercises/, otter-grader): every grader can pass and can fail.

For every master notebook in exercises/source/ (found by glob: a new set needs no change
here), the masters are assigned once into a temporary folder, then graded with the
instructor's command (`scripts/exercises.py grade`, i.e. `otter run` without Docker) on a
folder holding

* ``correct.ipynb``: the reference solutions, which must score every point;
* ``empty.ipynb``: the generated student notebook as a learner receives it, which must run
  and score zero on every question;
* ``wrong_<name>.ipynb``: each plausible wrong solution of ``<set>.wrong.yml``, which must
  lose points on a hidden test of its question;
* ``right_<name>.ipynb``: each correct answer in another style of ``<set>.right.yml``
  (optional), which must score every point: no test may reject a right answer.

Also: the committed student notebooks are what `make exercises` generates (not stale), their
set-up cells point at the book's repository, and normlib.lab.exercises (the grader set-up,
including the Colab path) works offline.
"""

import csv
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import types
from pathlib import Path

import nbformat
import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "exercises.py"

# scripts/check_mutants.py runs tests/ against a mutated copy of normlib's layers; the graders
# here are checked by the ordinary run (and would only add a minute to every mutant).
pytestmark = [
    pytest.mark.skipif("NORMLIB_EXPECTED_DIR" in os.environ, reason="normlib mutant run"),
    pytest.mark.filterwarnings("ignore::DeprecationWarning:traitlets"),  # raised by otter's imports
]


def _load_script():
    spec = importlib.util.spec_from_file_location("exercises_script", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


ex = _load_script()
MASTERS = ex.masters()
SETS = [m.stem for m in MASTERS]


def _variants(set_name, kind):
    """The entries of ``<set>.<kind>.yml`` (kind "wrong" or "right"), or {} without the file."""
    path = ex.SOURCE_DIR / f"{set_name}.{kind}.yml"
    return yaml.safe_load(path.read_text(encoding="utf-8")) if path.exists() else {}


def _wrong_solutions(set_name):
    return _variants(set_name, "wrong")


WRONG = [(s, name) for s in SETS for name in _wrong_solutions(s)]
RIGHT = [(s, name) for s in SETS for name in _variants(s, "right")]


def _config():
    return yaml.safe_load((ROOT / "_config.yml").read_text(encoding="utf-8"))


# --------------------------------------------------------------------------- building


@pytest.fixture(scope="module")
def assigned(tmp_path_factory):
    """{set: otter's output folder}. Tests are not run here: grading `correct` checks them."""
    work = tmp_path_factory.mktemp("assigned")
    return {m.stem: ex.assign(m, work / m.stem, run_tests=False) for m in MASTERS}


def test_every_set_has_a_master_and_wrong_solutions():
    assert SETS, "no master notebooks in exercises/source/"
    for set_name in SETS:
        assert _wrong_solutions(set_name), f"{set_name}: no plausible wrong solution in {set_name}.wrong.yml"


def test_student_notebooks_are_up_to_date(assigned):
    expected = {
        f"{s}.ipynb": ex.dumps(nbformat.read(out / "student" / f"{s}.ipynb", as_version=4))
        for s, out in assigned.items()
    }
    problems = ex.stale_problems(expected)
    assert not problems, "\n".join(f"exercises/student/{name}: {why}" for name, why in problems)


def test_stale_check_can_fail(assigned, tmp_path):
    set_name = SETS[0]
    text = ex.dumps(nbformat.read(assigned[set_name] / "student" / f"{set_name}.ipynb", as_version=4))
    expected = {f"{set_name}.ipynb": text}
    (tmp_path / f"{set_name}.ipynb").write_text(text, encoding="utf-8")
    assert ex.stale_problems(expected, tmp_path) == []
    # Saving in Jupyter (outputs, counts, new ids, editor metadata) does not make it stale ...
    nb = nbformat.read(tmp_path / f"{set_name}.ipynb", as_version=4)
    for i, cell in enumerate(nb.cells):
        cell["id"] = f"edited-{i}"
        cell.metadata["collapsed"] = False
        if cell.cell_type == "code":
            cell.outputs = [nbformat.v4.new_output("stream", text="hi")]
            cell.execution_count = i
    nb.metadata["language_info"] = {"name": "python", "version": "3.11.7"}
    nbformat.write(nb, tmp_path / f"{set_name}.ipynb")
    assert ex.stale_problems(expected, tmp_path) == []
    # ... a changed text does, and so do a missing notebook and one without a master.
    nb.cells[0].source += "\nedited by hand"
    nbformat.write(nb, tmp_path / f"{set_name}.ipynb")
    (tmp_path / "99_orphan.ipynb").write_text(text, encoding="utf-8")
    problems = dict(ex.stale_problems({**expected, "98_new.ipynb": text}, tmp_path))
    assert problems[f"{set_name}.ipynb"].startswith("stale") and "edited by hand" in problems[f"{set_name}.ipynb"]
    assert problems["98_new.ipynb"].startswith("missing")
    assert "no master" in problems["99_orphan.ipynb"]


# --------------------------------------------------------------------------- grading


def _make_wrong(solutions: nbformat.NotebookNode, replacements) -> nbformat.NotebookNode:
    nb = nbformat.from_dict(json.loads(json.dumps(solutions)))
    for change in replacements:
        hits = [c for c in nb.cells if c.cell_type == "code" and change["old"] in c.source]
        count = sum(c.source.count(change["old"]) for c in hits)
        assert count == 1, f"{change['old']!r} occurs {count} times in the solutions (expected once)"
        hits[0].source = hits[0].source.replace(change["old"], change["new"])
    return nb


@pytest.fixture(scope="module")
def graded(assigned, tmp_path_factory):
    """{set: (csv rows by file, feedback records by file, seconds)} from the grading command."""
    import time

    results = {}
    for set_name, out in assigned.items():
        folder = tmp_path_factory.mktemp(f"submissions_{set_name}")
        solutions = nbformat.read(out / "autograder" / f"{set_name}.ipynb", as_version=4)
        nbformat.write(solutions, folder / "correct.ipynb")
        shutil.copyfile(out / "student" / f"{set_name}.ipynb", folder / "empty.ipynb")
        (folder / "broken.ipynb").write_text('{"cells": [', encoding="utf-8")  # cannot be read
        for kind in ("wrong", "right"):
            for name, spec in _variants(set_name, kind).items():
                nbformat.write(_make_wrong(solutions, spec["replace"]), folder / f"{kind}_{name}.ipynb")
        csv_path, feedback = folder.parent / f"{set_name}_scores.csv", folder.parent / f"{set_name}_feedback"
        start = time.perf_counter()
        done = subprocess.run(
            [
                sys.executable,
                str(SCRIPT),
                "grade",
                str(ex.autograder_zip(out)),
                str(folder),
                "-o",
                str(csv_path),
                "--feedback",
                str(feedback),
                "-j",
                "2",
            ],
            capture_output=True,
            text=True,
            cwd=ROOT,
        )
        seconds = time.perf_counter() - start
        assert done.returncode == 0, done.stdout + done.stderr
        with open(csv_path, newline="", encoding="utf-8") as handle:
            rows = {row["file"]: row for row in csv.DictReader(handle)}
        records = {p.name[: -len(".json")]: json.loads(p.read_text(encoding="utf-8")) for p in feedback.glob("*.json")}
        results[set_name] = (rows, records, seconds)
    return results


@pytest.mark.parametrize("set_name", SETS)
def test_reference_solutions_pass_every_test(graded, set_name):
    rows, records, _ = graded[set_name]
    row, record = rows["correct.ipynb"], records["correct.ipynb"]
    assert row["grading_status"] == "Completed", row
    failed = [(q, t["message"]) for q, v in record["questions"].items() for t in v["tests"] if not t["passed"]]
    assert not failed, f"{set_name}: the reference solutions fail {failed}"
    assert float(row["total_points_earned"]) == float(row["points_possible"]) > 0


@pytest.mark.parametrize("set_name", SETS)
def test_unsolved_student_notebook_runs_and_scores_zero(graded, set_name):
    rows, records, _ = graded[set_name]
    row, record = rows["empty.ipynb"], records["empty.ipynb"]
    assert row["grading_status"] == "Completed", row
    assert record["questions"], "no question was graded"
    nonzero = {q: v["score"] for q, v in record["questions"].items() if v["score"] != 0}
    assert not nonzero, f"{set_name}: the unsolved notebook scores {nonzero}"
    passed = [q for q, v in record["questions"].items() for t in v["tests"] if t["passed"]]
    assert not passed, f"{set_name}: tests pass on the unsolved notebook in {passed}"


@pytest.mark.parametrize("set_name,wrong", WRONG, ids=[f"{s}-{w}" for s, w in WRONG])
def test_wrong_solution_loses_points_on_a_hidden_test(graded, set_name, wrong):
    spec = _wrong_solutions(set_name)[wrong]
    rows, records, _ = graded[set_name]
    record, correct = records[f"wrong_{wrong}.ipynb"], records["correct.ipynb"]
    question = record["questions"][spec["question"]]
    assert question["score"] < correct["questions"][spec["question"]]["score"], question
    failed_hidden = [t for t in question["tests"] if t["hidden"] and not t["passed"] and t["points"] > 0]
    assert failed_hidden, f"{wrong}: no hidden test of {spec['question']} fails"
    if spec.get("passes_public_tests"):
        public = [t for t in question["tests"] if not t["hidden"]]
        assert public and all(t["passed"] for t in public), f"{wrong} should pass the public tests: {public}"
    assert float(rows[f"wrong_{wrong}.ipynb"]["total_points_earned"]) < float(
        rows["correct.ipynb"]["total_points_earned"]
    )


@pytest.mark.parametrize("set_name,right", RIGHT, ids=[f"{s}-{r}" for s, r in RIGHT])
def test_right_answer_in_another_style_scores_every_point(graded, set_name, right):
    spec = _variants(set_name, "right")[right]
    rows, records, _ = graded[set_name]
    record = records[f"right_{right}.ipynb"]
    assert spec["question"] in record["questions"], f"{right}: no question {spec['question']}"
    failed = [(q, t["message"]) for q, v in record["questions"].items() for t in v["tests"] if not t["passed"]]
    assert not failed, f"{set_name}: the right answer {right} fails {failed}"
    row = rows[f"right_{right}.ipynb"]
    assert float(row["total_points_earned"]) == float(row["points_possible"]) > 0, row


def test_right_answers_exist():
    """At least one set keeps correct answers in other styles (the test above is not empty)."""
    assert RIGHT


@pytest.mark.parametrize("set_name", SETS)
def test_grading_csv_orders_correct_wrong_empty(graded, set_name):
    rows, _, seconds = graded[set_name]
    questions = [q for q in next(iter(rows.values())) if q.startswith("q")]
    assert questions, "the CSV has no question columns"
    assert rows.pop("broken.ipynb")["grading_status"].startswith("NotJSONError"), "an unreadable notebook"
    total = {name: float(row["total_points_earned"]) for name, row in rows.items()}
    wrong = [name for name in total if name.startswith("wrong_")]
    assert wrong
    assert (
        total["correct.ipynb"]
        > max(total[w] for w in wrong)
        >= min(total[w] for w in wrong)
        > total["empty.ipynb"]
        == 0
    )
    for name, row in rows.items():  # columns add up
        assert abs(sum(float(row[q]) for q in questions) - total[name]) < 1e-9, row
        assert row["points_possible"] == rows["correct.ipynb"]["total_points_earned"], row
    print(f"{set_name}: graded {len(rows)} submissions in {seconds:.1f} s: {total}")


def test_grading_command_reports_what_it_cannot_grade(tmp_path):
    assert ex.main(["grade", str(tmp_path / "missing.zip"), str(tmp_path)]) == 1
    assert ex.main(["grade", "99_no_such_set", str(tmp_path)]) == 1
    with pytest.raises(ex.ExerciseError, match="no .ipynb submissions"):
        ex.submissions_in([tmp_path])
    with pytest.raises(ex.ExerciseError, match="no such submission"):
        ex.submissions_in([tmp_path / "nothing_here"])


@pytest.mark.parametrize("set_name", SETS)
def test_points_in_headings_match_the_tests(graded, set_name):
    """A question's heading says '(P points)'; P must be what its tests are worth."""
    _, records, _ = graded[set_name]
    possible = {q: v["possible"] for q, v in records["correct.ipynb"]["questions"].items()}
    stated, points = {}, None
    nb = nbformat.read(ex.STUDENT_DIR / f"{set_name}.ipynb", as_version=4)
    for cell in nb.cells:
        found = re.search(r"^#+ .*\((\d+(?:\.\d+)?) points?\)", cell.source, flags=re.M)
        if cell.cell_type == "markdown" and found:
            points = float(found.group(1))
        check = re.fullmatch(r'grader\.check\("(\w+)"\)', cell.source.strip())
        if check:
            stated[check.group(1)] = points
            points = None
    assert stated == possible


# --------------------------------------------------------------------------- set-up cells


def _notebooks():
    return sorted(list(ex.SOURCE_DIR.glob("*.ipynb")) + list(ex.STUDENT_DIR.glob("*.ipynb")))


@pytest.mark.parametrize("path", _notebooks(), ids=lambda p: str(p.relative_to(ROOT)))
def test_setup_cell_points_at_the_repository(path):
    repository = _config()["repository"]
    nb = nbformat.read(path, as_version=4)
    setup = next(c for c in nb.cells if c.cell_type == "code")
    source = setup.source
    assert "%pip install" in source and "start_grader(" in source, "the first code cell is not the set-up cell"
    grader = re.search(r'start_grader\(\s*"([^"]+)",\s*repository="([^"]+)"(?:,\s*branch="([^"]+)")?', source)
    assert grader, 'the set-up cell must call start_grader("<name>.ipynb", repository="<url>")'
    name, url, branch = grader.groups()
    assert name == path.name, f"start_grader names {name}, the notebook is {path.name}"
    assert url == repository["url"] and (branch or "main") == repository.get("branch", "main")
    # otter-grader is pinned to the version that generated the tests.
    pin = re.search(r"^otter-grader==(\S+)$", (ROOT / "requirements.txt").read_text(), flags=re.M).group(1)
    assert f"otter-grader=={pin}" in source, f"the set-up cell must install otter-grader=={pin}"
    # Every link into the course repository uses repository.url (chapters, Colab, raw files).
    text = "\n".join(c.source for c in nb.cells)
    for link in re.findall(r"https://github\.com/[\w.-]+/[\w.-]+", text):
        assert link == url, f"{link} is not repository.url ({url})"
    for owner_name, link_branch, link_path in re.findall(
        r"https://colab\.research\.google\.com/github/([\w.-]+/[\w.-]+)/blob/([\w.-]+)/(\S+?\.ipynb)", text
    ):
        assert f"https://github.com/{owner_name}" == url and link_branch == repository.get("branch", "main")
        assert link_path == f"exercises/student/{path.name}", f"the Colab link opens {link_path}"


_STUDENT_LINK = re.compile(r"(https://\S+?)/exercises/student/([\w.-]+\.ipynb)")


def _chapter_exercise_links(text, url, branch):
    """{notebook name: kinds of link} for the student-notebook links in ``text``; bad prefixes raise."""
    owner_name = url.removeprefix("https://github.com/")
    kinds = {
        f"{url}/blob/{branch}": "github",
        f"https://colab.research.google.com/github/{owner_name}/blob/{branch}": "colab",
    }
    links = {}
    for prefix, name in _STUDENT_LINK.findall(text):
        assert prefix in kinds, f"{prefix}/exercises/student/{name}: not {' or '.join(kinds)}"
        links.setdefault(name, set()).add(kinds[prefix])
    return links


@pytest.mark.parametrize("path", sorted((ROOT / "chapters").glob("*.ipynb")), ids=lambda p: p.name)
def test_chapter_exercise_links_open_committed_student_notebooks(path):
    """A chapter's links to a set open a committed student notebook on GitHub and in Colab."""
    repository = _config()["repository"]
    text = "\n".join(c.source for c in nbformat.read(path, as_version=4).cells if c.cell_type == "markdown")
    links = _chapter_exercise_links(text, repository["url"], repository.get("branch", "main"))
    for name, kinds in links.items():
        assert (ex.STUDENT_DIR / name).is_file(), f"{path.name} links exercises/student/{name}, which does not exist"
        assert kinds == {"github", "colab"}, f"{path.name} links {name} only as {kinds}: give both links"


def test_chapter_exercise_link_check_can_fail():
    url = "https://github.com/o/r"
    good = (
        f"[notebook]({url}/blob/main/exercises/student/02_x.ipynb), [open in Colab]"
        "(https://colab.research.google.com/github/o/r/blob/main/exercises/student/02_x.ipynb)"
    )
    assert _chapter_exercise_links(good, url, "main") == {"02_x.ipynb": {"github", "colab"}}
    with pytest.raises(AssertionError, match="not https://github.com/o/r/blob/main"):
        _chapter_exercise_links(good.replace("/o/r/blob", "/o/other/blob"), url, "main")
    with pytest.raises(AssertionError):
        _chapter_exercise_links(good, url, "dev")  # links to main, the book says dev


def test_autograder_requirements_install_normlib_from_the_repository():
    text = (ROOT / "exercises" / "autograder-requirements.txt").read_text()
    assert f"normlib @ git+{_config()['repository']['url']}" in text.splitlines()


# --------------------------------------------------------------------------- normlib.lab.exercises


def _student_nb(set_name):
    return nbformat.read(ex.STUDENT_DIR / f"{set_name}.ipynb", as_version=4)


def test_start_grader_finds_the_notebook_and_its_tests(tmp_path, monkeypatch):
    from normlib.lab.exercises import start_grader

    set_name = SETS[0]
    monkeypatch.chdir(tmp_path)
    shutil.copyfile(ex.STUDENT_DIR / f"{set_name}.ipynb", tmp_path / "Copy of my work.ipynb")
    grader = start_grader(f"{set_name}.ipynb", repository="https://github.com/o/r")  # renamed: found
    assert grader._notebook == "Copy of my work.ipynb"
    shutil.copyfile(ex.STUDENT_DIR / f"{set_name}.ipynb", tmp_path / "second copy.ipynb")
    with pytest.raises(FileNotFoundError, match="only exercise notebook"):
        start_grader(f"{set_name}.ipynb", repository="https://github.com/o/r")


def test_start_grader_on_colab_reads_the_tests_from_the_repository(tmp_path, monkeypatch):
    from normlib.lab import exercises

    set_name = SETS[0]
    student = _student_nb(set_name)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setitem(sys.modules, "google.colab", types.ModuleType("google.colab"))
    asked = []

    def download(url):
        asked.append(url)
        return nbformat.writes(student)

    grader = exercises.start_grader(f"{set_name}.ipynb", "https://github.com/owner/course", download=download)
    assert asked == [f"https://raw.githubusercontent.com/owner/course/main/exercises/student/{set_name}.ipynb"]
    written = sorted(p.stem for p in (tmp_path / ".otter_tests" / set_name).glob("*.py"))
    assert written == sorted(student.metadata["otter"]["tests"])
    # The written files are otter's test files: with nothing answered, the check fails.
    result = grader.check(written[0], global_env={})
    assert not result.passed_all_public and "Test case failed" in result.summary()


def test_raw_url_and_write_tests_refuse_what_they_cannot_handle(tmp_path):
    from normlib.lab.exercises import raw_url, write_tests

    assert (
        raw_url("https://github.com/a/b.git", "dev", "x/y.ipynb")
        == "https://raw.githubusercontent.com/a/b/dev/x/y.ipynb"
    )
    with pytest.raises(ValueError, match="not a GitHub repository"):
        raw_url("https://gitlab.com/a/b", "main", "x.ipynb")
    with pytest.raises(ValueError, match="no otter tests"):
        write_tests({"metadata": {}}, tmp_path)
    with pytest.raises(ValueError, match="exception-based"):
        write_tests({"metadata": {"otter": {"OK_FORMAT": True, "tests": {"q1": {"suites": []}}}}}, tmp_path)
    with pytest.raises(ValueError, match="question name"):
        write_tests({"metadata": {"otter": {"OK_FORMAT": False, "tests": {"../q1": "x = 1"}}}}, tmp_path)
