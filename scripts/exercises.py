#!/usr/bin/env python
"""Build, check and grade the course's graded exercises (otter-grader, no Docker).

    build [SET ...]   exercises/source/<set>.ipynb (the master: solutions and hidden tests)
                      -> exercises/student/<set>.ipynb (committed: what learners open) and
                      _build/exercises/<set>/autograder.zip (with the hidden tests). `otter assign`
                      runs every test against the reference solutions and fails if one fails.
    check             regenerate the student notebooks into a temporary folder and fail if a
                      committed one differs (stale) or has no master; builds no autograder
    grade AUTOGRADER SUBMISSION... [-o CSV]
                      grade submitted notebooks (files or folders of .ipynb) with `otter run`'s
                      engine, locally and without Docker, into one CSV of scores; AUTOGRADER is a
                      set name (its _build/exercises/<set>/autograder.zip) or a zip file

`make exercises` runs `build`, `make grade SET=... SUBMISSIONS=...` runs `grade`; the tests in
tests/test_exercises.py run all three. A new set is one master notebook in exercises/source/
(plus its plausible wrong solutions in <set>.wrong.yml, and optionally right answers in other
styles in <set>.right.yml): nothing here names a set.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import copy
import csv
import difflib
import hashlib
import json
import multiprocessing
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parent.parent
SOURCE_DIR = ROOT / "exercises" / "source"
STUDENT_DIR = ROOT / "exercises" / "student"
BUILD_DIR = ROOT / "_build" / "exercises"


class ExerciseError(RuntimeError):
    """A build, check or grading step failed; the message says which and why."""


# --------------------------------------------------------------------------- sets


def masters(names=None) -> list:
    """The master notebooks, sorted; ``names`` (set names or paths) selects some of them."""
    found = sorted(p for p in SOURCE_DIR.glob("*.ipynb"))
    if not names:
        return found
    by_name = {p.stem: p for p in found}
    selected = []
    for name in names:
        stem = Path(name).stem
        if stem not in by_name:
            raise ExerciseError(f"no master notebook {stem}.ipynb in {_shown(SOURCE_DIR)}")
        selected.append(by_name[stem])
    return selected


# --------------------------------------------------------------------------- notebooks

# Written by Jupyter, Colab or VS Code on save; never part of what `build` generates.
_VOLATILE_CELL_METADATA = ("execution", "collapsed", "scrolled", "jupyter", "ExecuteTime", "trusted")


def canonical(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """The form in which student notebooks are committed and compared.

    No outputs or execution counts; cell ids derived from each cell's content (otter
    gives its generated cells random ids); editor state dropped from cell metadata; of the
    notebook metadata only the kernelspec, the language name and otter's own entry kept.
    """
    nb = copy.deepcopy(nb)
    seen = {}
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
        if "attachments" in cell and not cell.attachments:
            del cell["attachments"]
        for key in _VOLATILE_CELL_METADATA:
            cell.metadata.pop(key, None)
        digest = hashlib.sha1(f"{cell.cell_type}\n{cell.source}".encode("utf-8")).hexdigest()[:8]
        seen[digest] = seen.get(digest, 0) + 1
        cell["id"] = digest if seen[digest] == 1 else f"{digest}-{seen[digest]}"
    meta = nb.metadata
    language = (meta.get("language_info") or {}).get("name")
    nb.metadata = nbformat.NotebookNode({k: meta[k] for k in ("kernelspec", "otter") if k in meta})
    if language:
        nb.metadata["language_info"] = {"name": language}
    nb.nbformat, nb.nbformat_minor = 4, max(nb.get("nbformat_minor", 5), 5)
    return nb


def dumps(nb: nbformat.NotebookNode) -> str:
    text = nbformat.writes(canonical(nb))
    return text if text.endswith("\n") else text + "\n"


def _shown(path: Path) -> str:
    path = Path(path).resolve()
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def assign(master: Path, out_dir: Path, run_tests: bool = True) -> Path:
    """Run ``otter assign`` on ``master`` into a fresh ``out_dir``; return ``out_dir``."""
    if out_dir.exists():
        shutil.rmtree(out_dir)
    command = [sys.executable, "-m", "otter", "assign", str(master), str(out_dir)]
    if not run_tests:
        command.append("--no-run-tests")
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    if done.returncode != 0:
        log = (done.stdout + done.stderr).strip()
        raise ExerciseError(
            f"otter assign {_shown(master)} failed (exit {done.returncode})"
            + (": the reference solutions fail a test" if "Test case failed" in log else "")
            + f"\n{log[-6000:]}"
        )
    student = out_dir / "student" / master.name
    if not student.is_file():
        raise ExerciseError(f"otter assign wrote no student notebook {student}")
    return out_dir


def autograder_zip(out_dir: Path) -> Path:
    zips = sorted((out_dir / "autograder").glob("*-autograder_*.zip"))
    if len(zips) != 1:
        raise ExerciseError(f"expected one autograder zip in {out_dir / 'autograder'}, found {len(zips)}")
    return zips[0]


def build(names=None, run_tests: bool = True) -> list:
    """Regenerate the student notebooks (in place) and the autograders (under _build)."""
    built = []
    for master in masters(names):
        start = time.perf_counter()
        out_dir = assign(master, BUILD_DIR / master.stem / "otter", run_tests=run_tests)
        shutil.copyfile(autograder_zip(out_dir), BUILD_DIR / master.stem / "autograder.zip")
        shutil.copyfile(out_dir / "autograder" / master.name, BUILD_DIR / master.stem / "solutions.ipynb")
        student = nbformat.read(out_dir / "student" / master.name, as_version=4)
        STUDENT_DIR.mkdir(parents=True, exist_ok=True)
        (STUDENT_DIR / master.name).write_text(dumps(student), encoding="utf-8")
        seconds = time.perf_counter() - start
        print(
            f"{master.stem}: exercises/student/{master.name}, "
            f"_build/exercises/{master.stem}/autograder.zip ({seconds:.1f} s)"
        )
        built.append(master.stem)
    return built


def generate_students(workdir: Path, run_tests: bool = False) -> dict:
    """Assign every master into ``workdir``; {notebook name: its canonical student notebook text}."""
    expected = {}
    for master in masters():
        out_dir = assign(master, Path(workdir) / master.stem, run_tests=run_tests)
        expected[master.name] = dumps(nbformat.read(out_dir / "student" / master.name, as_version=4))
    return expected


def stale_problems(expected: dict, student_dir: Path = STUDENT_DIR) -> list:
    """(name, reason) for each committed student notebook that differs from ``expected``.

    Both sides are compared in their canonical form, so outputs, execution counts, cell ids
    and editor metadata (what saving a notebook in Jupyter or Colab adds) do not count.
    """
    problems = []
    committed = {p.name: p for p in Path(student_dir).glob("*.ipynb")}
    for name, text in sorted(expected.items()):
        if name not in committed:
            problems.append((name, "missing: run `make exercises` and commit exercises/student/"))
            continue
        current = dumps(nbformat.read(committed[name], as_version=4))
        if current != text:
            diff = difflib.unified_diff(
                current.splitlines(), text.splitlines(), "committed", "generated", lineterm="", n=1
            )
            problems.append((name, "stale: run `make exercises` and commit it\n" + "\n".join(list(diff)[:40])))
    for name in sorted(set(committed) - set(expected)):
        problems.append((name, f"has no master exercises/source/{name}: remove it"))
    return problems


# --------------------------------------------------------------------------- grading


def _grade_one(submission: str, autograder: str) -> dict:
    """Grade one notebook (in a worker process); a plain dict that pickles safely."""
    import io
    from contextlib import redirect_stderr

    import otter.api

    record = {"file": Path(submission).name, "questions": {}, "error": None}
    try:
        with redirect_stderr(io.StringIO()):
            results = otter.api.grade_submission(submission, autograder, quiet=True)
    except Exception as error:  # a notebook that cannot be read or run scores zero
        record["error"] = f"{type(error).__name__}: {error}"
        return record
    if results.has_catastrophic_failure():
        record["error"] = str(results.catastrophic_error)
    for question, test_file in results.results.items():
        record["questions"][question] = {
            "score": float(test_file.score),
            "possible": float(test_file.possible),
            "tests": [
                {
                    "hidden": bool(r.test_case.hidden),
                    "points": float(r.test_case.points or 0),
                    "passed": bool(r.passed),
                    "message": r.message,
                }
                for r in test_file.test_case_results
            ],
        }
    return record


def points_possible(autograder: Path) -> dict:
    """{question: points possible}, read from the test files inside an autograder zip."""
    import zipfile

    from otter.test_files import NBMetadataConfig, create_test_file

    with tempfile.TemporaryDirectory() as workdir, zipfile.ZipFile(autograder) as archive:
        names = [n for n in archive.namelist() if n.startswith("tests/") and n.endswith(".py")]
        archive.extractall(workdir, members=names)
        return {
            Path(n).stem: float(create_test_file(str(Path(workdir) / n), NBMetadataConfig()).possible)
            for n in sorted(names)
        }


def resolve_autograder(name_or_zip: str) -> Path:
    path = Path(name_or_zip)
    if path.suffix == ".zip":
        if not path.is_file():
            raise ExerciseError(f"no autograder zip {path}")
        return path
    built = BUILD_DIR / Path(name_or_zip).stem / "autograder.zip"
    if not built.is_file():
        raise ExerciseError(f"{_shown(built)} does not exist: run `make exercises` first")
    return built


def submissions_in(paths) -> list:
    found = []
    for path in map(Path, paths):
        if path.is_dir():
            found += sorted(p for p in path.glob("*.ipynb") if p.is_file())
        elif path.is_file():
            found.append(path)
        else:
            raise ExerciseError(f"no such submission file or folder: {path}")
    if not found:
        raise ExerciseError(f"no .ipynb submissions in {', '.join(map(str, paths))}")
    return found


def grade(autograder: Path, submissions, csv_path: Path, feedback_dir=None, jobs: int = 1) -> list:
    """Grade ``submissions`` with ``autograder``; write one CSV row per submission.

    Columns: ``file``, one per question (points earned), ``total_points_earned``,
    ``points_possible``, ``percent_correct``, ``grading_status`` ("Completed" or the error that
    stopped the notebook, which then scores zero). With ``feedback_dir``, each submission's
    per-test results, hidden tests included, are also written there as ``<file>.json``.
    """
    possible_by_question = points_possible(autograder)
    questions, possible = list(possible_by_question), sum(possible_by_question.values())
    context = multiprocessing.get_context("spawn")  # each grading in a clean interpreter
    with concurrent.futures.ProcessPoolExecutor(max_workers=max(1, jobs), mp_context=context) as pool:
        records = list(pool.map(_grade_one, [str(s) for s in submissions], [str(autograder)] * len(submissions)))
    csv_path.parent.mkdir(parents=True, exist_ok=True)
    with open(csv_path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(
            ["file", *questions, "total_points_earned", "points_possible", "percent_correct", "grading_status"]
        )
        for record in records:
            scores = {q: (0.0 if record["error"] else v["score"]) for q, v in record["questions"].items()}
            total = sum(scores.values())
            writer.writerow(
                [
                    record["file"],
                    *(f"{scores.get(q, 0.0):g}" for q in questions),
                    f"{total:g}",
                    f"{possible:g}",
                    f"{100 * total / possible:.1f}" if possible else "0.0",
                    record["error"] or "Completed",
                ]
            )
    if feedback_dir is not None:
        feedback_dir = Path(feedback_dir)
        feedback_dir.mkdir(parents=True, exist_ok=True)
        for record in records:
            (feedback_dir / f"{record['file']}.json").write_text(
                json.dumps(record, indent=1, ensure_ascii=False), encoding="utf-8"
            )
    return records


# --------------------------------------------------------------------------- command line


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    p_build = commands.add_parser("build", help="regenerate student notebooks and autograders")
    p_build.add_argument("sets", nargs="*", help="set names (default: every master)")
    p_build.add_argument("--no-run-tests", action="store_true", help="skip running the tests on the solutions")
    commands.add_parser("check", help="fail if a committed student notebook is stale")
    p_grade = commands.add_parser("grade", help="grade a folder of submissions into a CSV")
    p_grade.add_argument("autograder", help="set name (uses _build/exercises/<set>/autograder.zip) or a zip")
    p_grade.add_argument("submissions", nargs="+", help=".ipynb files or folders of them")
    p_grade.add_argument("-o", "--output", default="scores.csv", help="CSV file to write (default: scores.csv)")
    p_grade.add_argument("--feedback", help="folder for per-submission test results (JSON)")
    p_grade.add_argument("-j", "--jobs", type=int, default=1, help="submissions graded in parallel")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    try:
        if args.command == "build":
            build(args.sets, run_tests=not args.no_run_tests)
        elif args.command == "check":
            with tempfile.TemporaryDirectory() as workdir:
                problems = stale_problems(generate_students(Path(workdir)))
            for name, reason in problems:
                print(f"exercises/student/{name}: {reason}", file=sys.stderr)
            if problems:
                return 1
            print("exercises/student/: every student notebook is up to date")
        else:
            autograder = resolve_autograder(args.autograder)
            records = grade(autograder, submissions_in(args.submissions), Path(args.output), args.feedback, args.jobs)
            failed = [r["file"] for r in records if r["error"]]
            print(f"graded {len(records)} submission(s) with {autograder} -> {args.output}")
            if failed:
                print(f"could not run (scored zero): {', '.join(failed)}", file=sys.stderr)
    except ExerciseError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(f"({time.perf_counter() - start:.1f} s)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
