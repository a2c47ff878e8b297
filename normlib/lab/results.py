"""Numbers one chapter measures and another reads: the results files.

Chapter 10 ("Choosing a normalizer") quotes the numbers that chapters 3 to 9 measured. Those
chapters write them here with ``record``, and chapter 10 reads them with ``load``, so no number
is typed by hand and every build shows the numbers of its own run.

Where the files live (``results_dir()``), first match wins:

1. ``$NORMLIB_RESULTS_DIR``, when set. The Makefile sets it (``<checkout>/_build/results``) for
   ``make book`` and ``make test``, and empties that folder before they run the chapters.
2. ``<checkout>/_build/results``, where ``<checkout>`` is the course repository that holds the
   current working directory: the first folder, walking up from the working directory, with
   both ``_toc.yml`` and ``normlib/__init__.py``. A notebook's kernel runs in the notebook's
   folder (``chapters/``) under Jupyter, ``jupyter-book build`` and nbval alike, and normlib may
   be installed elsewhere (nbval installs it into a fresh environment), so the working
   directory, not this file's location, says which checkout is meant.
3. Nowhere: outside a checkout (Colab, a notebook copied elsewhere) ``record`` writes nothing
   and ``load`` raises ``MissingResults``.

One JSON file per chapter, named by the chapter's notebook (``08_groupnorm.json``):
``{"chapter": ..., "values": {key: value}, "notes": {key: note}}``. Values are JSON-simple:
numbers, strings, booleans, None, lists and small dicts of those (a NumPy or torch scalar is
converted with ``.item()``).

A reader who runs chapter 10 alone has no results folder. ``load_or_stored`` then falls back
to the run stored with normlib in ``normlib/lab/results_stored/``, written from a real run by
``make results`` (``python -m normlib.lab.results --store``), never by hand, and says which of
the two it returns, so the page can say which numbers it shows.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
from pathlib import Path
from typing import Any, Dict, Iterable, Optional, Sequence, Tuple

VARIABLE = "NORMLIB_RESULTS_DIR"
STORED_DIR = Path(__file__).resolve().parent / "results_stored"

# The chapters whose results chapter 10 reads (their notebooks' names, which sort before it:
# `make book` executes notebooks in the order of their names).
GUIDE_CHAPTERS = (
    "03_internal_covariate_shift",
    "04_batchnorm_training",
    "05_batchnorm_inference",
    "06_layernorm",
    "07_instancenorm",
    "08_groupnorm",
    "09_weights_and_choosing",
)


class MissingResults(FileNotFoundError):
    """A chapter's results file is not there: that chapter has not run (in this checkout)."""


def checkout_root(start: Optional[Path] = None) -> Optional[Path]:
    """The course checkout holding ``start`` (default: the working directory), or None."""
    here = Path.cwd() if start is None else Path(start)
    for folder in (here.resolve(), *here.resolve().parents):
        if (folder / "_toc.yml").is_file() and (folder / "normlib" / "__init__.py").is_file():
            return folder
    return None


def results_dir() -> Optional[Path]:
    """Where ``record`` writes and ``load`` reads (see the module's docstring), or None."""
    if os.environ.get(VARIABLE):
        return Path(os.environ[VARIABLE]).expanduser().resolve()
    root = checkout_root()
    return None if root is None else root / "_build" / "results"


def _simple(value: Any, where: str) -> Any:
    """``value`` as plain JSON data, or a TypeError saying what is not."""
    if hasattr(value, "item") and callable(value.item) and getattr(value, "ndim", 0) == 0:
        value = value.item()  # a NumPy or torch scalar
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{where}: {value} is not a finite number (JSON has no NaN or inf)")
        return value
    if isinstance(value, (list, tuple)):
        return [_simple(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, dict):
        if not all(isinstance(k, str) for k in value):
            raise TypeError(f"{where}: dict keys must be strings, got {list(value)!r}")
        return {k: _simple(v, f"{where}[{k!r}]") for k, v in value.items()}
    raise TypeError(f"{where}: {type(value).__name__} is not JSON-simple (numbers, strings, lists, small dicts)")


def _read(path: Path) -> Dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8"))


def record(chapter: str, key: str, value: Any, *, note: str = "") -> Optional[Path]:
    """Store ``value`` under ``key`` in ``chapter``'s results file (created or updated).

    ``chapter`` is the chapter's notebook name without ``.ipynb`` (``"08_groupnorm"``).
    Returns the file written, or None outside a checkout with no ``$NORMLIB_RESULTS_DIR``.
    """
    value = _simple(value, f"{chapter}/{key}")
    folder = results_dir()
    if folder is None:
        return None
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{chapter}.json"
    content = _read(path) if path.exists() else {"chapter": chapter, "values": {}, "notes": {}}
    content["values"][key] = value
    if note:
        content["notes"][key] = note
    else:
        content["notes"].pop(key, None)
    scratch = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    scratch.write_text(json.dumps(content, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(scratch, path)  # readers never see half a file
    return path


def _load_from(folder: Optional[Path], chapter: Optional[str], what: str) -> Dict[str, Any]:
    if folder is None:
        raise MissingResults(
            f"No results folder: not inside the course's checkout and ${VARIABLE} is not set. "
            + (f"Run chapters/{chapter}.ipynb in the checkout first" if chapter else "Run the chapters first")
            + " (or use load_or_stored / load_stored)."
        )
    if chapter is None:
        files = sorted(folder.glob("*.json")) if folder.is_dir() else []
        if not files:
            raise MissingResults(f"No {what} in {folder}: run the chapters first (make book runs them all).")
        return {p.stem: _read(p)["values"] for p in files}
    path = folder / f"{chapter}.json"
    if not path.is_file():
        raise MissingResults(
            f"No {what} of chapter {chapter} ({path} is missing): run chapters/{chapter}.ipynb first "
            "(make book and make test run it before chapter 10)."
        )
    return _read(path)["values"]


def load(chapter: Optional[str] = None, *, directory: Optional[Path] = None) -> Dict[str, Any]:
    """The values one chapter recorded ({key: value}), or, without ``chapter``, every chapter's
    ({chapter: {key: value}}), from ``directory`` (default ``results_dir()``).

    A missing file raises ``MissingResults`` naming the chapter that must run first."""
    folder = results_dir() if directory is None else Path(directory)
    return _load_from(folder, chapter, "results")


def load_stored(chapter: Optional[str] = None) -> Dict[str, Any]:
    """As ``load``, from the run stored with normlib (``normlib/lab/results_stored``)."""
    return _load_from(STORED_DIR, chapter, "stored results")


def notes(chapter: str, *, stored: bool = False) -> Dict[str, str]:
    """The notes recorded with a chapter's values ({key: note})."""
    folder = STORED_DIR if stored else results_dir()
    path = None if folder is None else folder / f"{chapter}.json"
    if path is None or not path.is_file():
        raise MissingResults(f"No results of chapter {chapter} in {folder}: run chapters/{chapter}.ipynb first.")
    return _read(path)["notes"]


def load_or_stored(chapters: Sequence[str] = GUIDE_CHAPTERS) -> Tuple[Dict[str, Dict[str, Any]], str]:
    """Every chapter's values, and where they come from: ``"measured"`` or ``"stored"``.

    * ``$NORMLIB_RESULTS_DIR`` set (``make book``, ``make test``): the measured values, and a
      missing chapter is an error (``MissingResults``): a build never shows stored numbers.
    * Otherwise the measured values if every chapter's file is in ``results_dir()``, else
      the stored run for all of them (never a mix of two runs).
    """
    folder = results_dir()
    strict = bool(os.environ.get(VARIABLE))
    if strict or (folder is not None and all((folder / f"{c}.json").is_file() for c in chapters)):
        return {c: load(c) for c in chapters}, "measured"
    return {c: load_stored(c) for c in chapters}, "stored"


def store(chapters: Iterable[str] = GUIDE_CHAPTERS, *, source: Optional[Path] = None) -> list:
    """Copy the measured results of ``chapters`` into ``normlib/lab/results_stored`` (the
    fallback shipped with normlib). Every file must be there: a stored run is one run."""
    folder = results_dir() if source is None else Path(source)
    files = []
    for chapter in chapters:
        path = None if folder is None else folder / f"{chapter}.json"
        if path is None or not path.is_file():
            raise MissingResults(f"No results of chapter {chapter} in {folder}: run chapters/{chapter}.ipynb first.")
        files.append(path)
    STORED_DIR.mkdir(exist_ok=True)
    for path in files:
        shutil.copyfile(path, STORED_DIR / path.name)
    return [STORED_DIR / p.name for p in files]


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m normlib.lab.results", description=__doc__.splitlines()[0])
    parser.add_argument("--store", action="store_true", help="copy the measured results into results_stored/")
    args = parser.parse_args(argv)
    if args.store:
        for path in store():
            print(f"stored {path}")
        return 0
    print(json.dumps(load(), indent=1, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
