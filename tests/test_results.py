"""normlib.lab.results: where chapters record numbers, how chapter 10 reads them, and the
stored fallback shipped with normlib."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from normlib.lab import results

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def folder(tmp_path, monkeypatch):
    monkeypatch.setenv(results.VARIABLE, str(tmp_path / "results"))
    return tmp_path / "results"


def test_record_creates_updates_and_loads(folder):
    path = results.record("08_groupnorm", "error", {"bn": [1.5, 2.0]}, note="test error (%)")
    assert path == folder / "08_groupnorm.json"
    results.record("08_groupnorm", "batch_sizes", [2, 4])
    results.record("08_groupnorm", "error", {"bn": [3.0, 4.0]})  # updated; its note goes
    assert results.load("08_groupnorm") == {"error": {"bn": [3.0, 4.0]}, "batch_sizes": [2, 4]}
    assert results.notes("08_groupnorm") == {}
    results.record("04_batchnorm_training", "n", 3)
    assert results.load() == {
        "04_batchnorm_training": {"n": 3},
        "08_groupnorm": {"error": {"bn": [3.0, 4.0]}, "batch_sizes": [2, 4]},
    }
    assert not list(folder.glob(".*tmp"))  # no scratch file left behind


def test_values_are_made_json_simple(folder):
    results.record("05_x", "scalars", [np.float32(0.5), torch.tensor(3), np.int64(2), True, None])
    assert results.load("05_x")["scalars"] == [0.5, 3, 2, True, None]
    with pytest.raises(TypeError, match="not JSON-simple"):
        results.record("05_x", "tensor", torch.ones(3))
    with pytest.raises(ValueError, match="finite"):
        results.record("05_x", "nan", float("nan"))
    with pytest.raises(TypeError, match="keys"):
        results.record("05_x", "dict", {1: 2})


def test_a_missing_chapter_names_the_notebook_to_run(folder):
    with pytest.raises(results.MissingResults, match=r"run chapters/08_groupnorm\.ipynb first"):
        results.load("08_groupnorm")
    with pytest.raises(FileNotFoundError, match="run the chapters first"):
        results.load()


def test_the_folder_is_found_from_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.delenv(results.VARIABLE, raising=False)
    (tmp_path / "normlib").mkdir()
    (tmp_path / "normlib" / "__init__.py").write_text("")
    (tmp_path / "_toc.yml").write_text("")
    (tmp_path / "chapters").mkdir()
    monkeypatch.chdir(tmp_path / "chapters")  # a kernel runs in the notebook's folder
    assert results.results_dir() == tmp_path.resolve() / "_build" / "results"
    results.record("06_layernorm", "gap", 0.25)
    assert json.loads((tmp_path / "_build" / "results" / "06_layernorm.json").read_text())["values"] == {"gap": 0.25}


def test_outside_a_checkout_nothing_is_written_and_the_stored_run_is_used(tmp_path, monkeypatch):
    monkeypatch.delenv(results.VARIABLE, raising=False)
    monkeypatch.chdir(tmp_path)  # e.g. /content on Colab
    assert results.results_dir() is None
    assert results.record("08_groupnorm", "x", 1) is None
    with pytest.raises(results.MissingResults, match="not inside the course's checkout"):
        results.load("08_groupnorm")
    values, source = results.load_or_stored()
    assert source == "stored" and set(values) == set(results.GUIDE_CHAPTERS)


def test_measured_only_when_complete_and_strict_with_the_variable(folder, monkeypatch):
    for chapter in results.GUIDE_CHAPTERS[:-1]:
        results.record(chapter, "x", 1)
    with pytest.raises(results.MissingResults, match=results.GUIDE_CHAPTERS[-1]):
        results.load_or_stored()  # a build ($NORMLIB_RESULTS_DIR) never falls back
    results.record(results.GUIDE_CHAPTERS[-1], "x", 1)
    values, source = results.load_or_stored()
    assert source == "measured" and values[results.GUIDE_CHAPTERS[0]] == {"x": 1}


def test_store_copies_one_complete_run(folder, tmp_path, monkeypatch):
    monkeypatch.setattr(results, "STORED_DIR", tmp_path / "stored")
    results.record("03_a", "x", 1)
    with pytest.raises(results.MissingResults, match="04_b"):
        results.store(["03_a", "04_b"])
    assert not (tmp_path / "stored").exists()
    results.record("04_b", "y", 2)
    results.store(["03_a", "04_b"])
    assert results.load_stored("04_b") == {"y": 2}


# What chapter 10 reads from each chapter: the keys in its `guide[...]["..."]` look-ups.
def _keys_chapter_10_reads() -> dict:
    import nbformat

    nb = nbformat.read(ROOT / "chapters" / "10_choosing.ipynb", as_version=4)
    code = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
    found: dict = {}
    for chapter, key in re.findall(r"guide\[\s*\"(\d\d_\w+)\"\s*\]\[\s*\"(\w+)\"\s*\]", code):
        found.setdefault(chapter, set()).add(key)
    return found


def test_the_stored_run_has_every_key_chapter_10_reads():
    reads = _keys_chapter_10_reads()
    assert reads, "chapter 10 reads nothing from guide[...][...]?"
    assert set(reads) <= set(results.GUIDE_CHAPTERS)
    for chapter, keys in reads.items():
        stored = results.load_stored(chapter)
        assert keys <= set(stored), f"{chapter}: the stored run lacks {sorted(keys - set(stored))} (make results)"


def test_the_chapters_chapter_10_reads_record_them_and_run_before_it():
    """make book executes notebooks in the order of their names; nbval runs chapter 10 last."""
    import nbformat

    for chapter in results.GUIDE_CHAPTERS:
        assert chapter < "10_choosing"
        nb = nbformat.read(ROOT / "chapters" / f"{chapter}.ipynb", as_version=4)
        cells = [c for c in nb.cells if c.cell_type == "code" and "results.record(" in c.source]
        assert len(cells) == 1, f"{chapter}: one recording cell"
        assert f'"{chapter}"' in cells[0].source
        assert "remove-cell" in cells[0].metadata.get("tags", [])
    from fresh_env import cn

    last = cn.course_notebooks_last()
    assert [p.name for p in last] == ["10_choosing.ipynb"]


def test_the_stored_run_ships_with_the_package():
    text = (ROOT / "pyproject.toml").read_text()
    assert '"normlib.lab" = ["results_stored/*.json"]' in text
    assert sorted(p.stem for p in results.STORED_DIR.glob("*.json")) == sorted(results.GUIDE_CHAPTERS)
