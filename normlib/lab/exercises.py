"""Set-up for the course's graded exercises (otter-grader).

Each exercise notebook's first cell installs what is missing and then calls
:func:`start_grader`, which returns the ``otter.Notebook`` whose ``check("q1_...")``
runs a question's public tests. otter-grader is a dependency of the exercises, not of
normlib: the set-up cell installs it, and this module imports it only when called.

Where the public tests come from:

* **Locally** (Jupyter, VS Code, nbval, ``otter run``) they are stored in the student
  notebook's own metadata, so the notebook file is all a learner needs.
* **On Colab** otter refuses tests stored in the notebook, and the notebook file is not
  on the runtime's disk. The tests are then read from the same notebook in the course
  repository (``<repository>/exercises/student/<name>``, by its raw URL) and written to
  ``.otter_tests/<name>/``, where otter reads test files.
"""

from __future__ import annotations

import json
import os
import re
import sys
import urllib.request
from pathlib import Path
from typing import Callable, Optional

__all__ = ["start_grader", "raw_url", "write_tests", "STUDENT_DIR"]

#: Where the generated student notebooks live in the repository.
STUDENT_DIR = "exercises/student"

_GITHUB = re.compile(r"https://github\.com/([^/\s]+)/([^/\s]+?)(?:\.git)?/?")


def _on_colab() -> bool:
    return "google.colab" in sys.modules


def raw_url(repository: str, branch: str, path: str) -> str:
    """The raw-file URL of ``path`` on ``branch`` of a GitHub ``repository`` URL."""
    match = _GITHUB.fullmatch(repository)
    if match is None:
        raise ValueError(
            f"start_grader: {repository!r} is not a GitHub repository URL "
            "(https://github.com/<owner>/<name>); on Colab the tests are read from GitHub"
        )
    owner, name = match.groups()
    return f"https://raw.githubusercontent.com/{owner}/{name}/{branch}/{path.lstrip('/')}"


def write_tests(notebook: dict, tests_dir) -> list:
    """Write the public tests stored in a student notebook's metadata as otter test files.

    Returns the question names, sorted. The notebook must hold otter's exception-based
    tests (``OK_FORMAT: false``), as every exercise of this course does.
    """
    meta = (notebook.get("metadata") or {}).get("otter") or {}
    tests = meta.get("tests") or {}
    if not tests:
        raise ValueError("start_grader: the notebook stores no otter tests in its metadata")
    if meta.get("OK_FORMAT") is not False or not all(isinstance(t, str) for t in tests.values()):
        raise ValueError("start_grader: expected otter's exception-based tests (OK_FORMAT: false)")
    tests_dir = Path(tests_dir)
    tests_dir.mkdir(parents=True, exist_ok=True)
    for question, source in tests.items():
        if not re.fullmatch(r"\w+", question):
            raise ValueError(f"start_grader: unexpected question name {question!r}")
        (tests_dir / f"{question}.py").write_text(source, encoding="utf-8")
    return sorted(tests)


def _download(url: str) -> str:
    try:
        with urllib.request.urlopen(url, timeout=60) as response:
            return response.read().decode("utf-8")
    except OSError as error:
        raise RuntimeError(
            f"start_grader: could not download this exercise's tests from {url} ({error}). "
            "On Colab the public tests come from the course repository: check the runtime's "
            "network, or run the notebook locally, where the tests are inside the notebook."
        ) from error


def _find_notebook(name: str) -> Optional[str]:
    """``name`` if it is in the working directory, else the one exercise notebook there."""
    if Path(name).is_file():
        return name
    candidates = []
    for path in sorted(Path.cwd().glob("*.ipynb")):
        try:
            meta = json.loads(path.read_text(encoding="utf-8")).get("metadata", {})
        except (OSError, ValueError):
            continue
        if (meta.get("otter") or {}).get("tests"):
            candidates.append(path.name)
    return candidates[0] if len(candidates) == 1 else None


def start_grader(
    notebook: str,
    repository: str,
    branch: str = "main",
    *,
    download: Callable[[str], str] = _download,
):
    """Return the ``otter.Notebook`` grader of the exercise notebook ``notebook``.

    ``notebook`` is the student notebook's file name (e.g. ``"01_normalize_and_count.ipynb"``)
    and ``repository``/``branch`` the course repository (``repository.url`` and
    ``repository.branch`` in the book's ``_config.yml``), used only on Colab to fetch the
    public tests. A notebook renamed by a download ("Copy of ...") is found as long as it is
    the only exercise notebook in its folder. ``download`` is for tests.
    """
    import otter  # installed by the exercise's set-up cell

    if _on_colab():
        tests_dir = Path(".otter_tests") / Path(notebook).stem
        url = raw_url(repository, branch, f"{STUDENT_DIR}/{notebook}")
        write_tests(json.loads(download(url)), tests_dir)
        return otter.Notebook(tests_dir=str(tests_dir))
    if getattr(otter.Notebook, "_grading_mode", False):
        return otter.Notebook(notebook)  # `otter run`: otter locates the tests itself
    found = _find_notebook(notebook)
    if found is None:
        raise FileNotFoundError(
            f"start_grader: {notebook} is not in {os.getcwd()}. Run the notebook from its own "
            "folder (the public tests are stored inside it), and keep it the only exercise "
            "notebook there if you renamed it."
        )
    return otter.Notebook(found)
