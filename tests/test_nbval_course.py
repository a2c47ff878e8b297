"""The course's notebook executor (tests/nbval_course.py, the nbval plugin of `make test-notebooks`).

* The premise: a fresh environment cannot import normlib until a set-up cell installs it.
* The message handling, fed by hand: outputs, display updates across cells, clear_output,
  widget state and output widgets come out as nbclient stores them; the cache bundle drops
  pip's note and nothing else.
* The whole plugin on three small notebooks run as `make test-notebooks` runs the course's
  (nbval, two xdist workers, --dist loadfile): a widget, a display update, clear_output and an
  intended error (`raises-exception`) pass and reach the cache with their outputs and widget
  state; a failing assert fails the run, names its cell, and keeps that notebook out of the
  cache; a kernel that dies is reported as such; the time report has them all.

Marked `notebooks` where a kernel runs (`-m "not notebooks"` leaves them out for a quick run).
"""

from __future__ import annotations

import datetime
import json
import os
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

import fresh_env
import nbval_course
from fresh_env import ROOT, cn

# --------------------------------------------------------------------------- the premise


@pytest.fixture(scope="session")
def shared(tmp_path_factory):
    # Under xdist, basetemp (one per worker) sits in a folder of this run that the workers share.
    base = tmp_path_factory.getbasetemp()
    fresh_dir = (base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / "fresh-env"
    return fresh_env.prepare(fresh_dir, os.environ.get("PYTEST_XDIST_TESTRUNUID", f"run-{os.getpid()}"))


@pytest.mark.notebooks
def test_fresh_environment_lacks_normlib(shared):
    """The premise: without its set-up cell, a notebook in a fresh environment cannot import
    normlib (but finds torch and the other pinned packages)."""
    python, _ = fresh_env.create(shared, "premise")
    gone = subprocess.run([str(python), "-c", "import normlib"], capture_output=True, text=True, cwd=ROOT / "chapters")
    assert gone.returncode != 0 and "No module named 'normlib'" in gone.stderr, gone.stderr
    found = subprocess.run(
        [str(python), "-c", "import torch, ipykernel, matplotlib, nbval; print(torch.__version__)"],
        capture_output=True, text=True,
    )  # fmt: skip
    assert found.returncode == 0, found.stderr


# --------------------------------------------------------------------------- messages, by hand


def _msg(msg_type: str, content: dict, parent: str) -> dict:
    header = {"msg_type": msg_type, "date": datetime.datetime.now(datetime.timezone.utc)}
    return {"msg_type": msg_type, "header": header, "parent_header": {"msg_id": parent},
            "content": content, "metadata": {}, "buffers": []}  # fmt: skip


def _status(state: str, parent: str) -> dict:
    return _msg("status", {"execution_state": state}, parent)


def _stream(text: str, parent: str) -> dict:
    return _msg("stream", {"name": "stdout", "text": text}, parent)


def _display(text: str, parent: str, display_id=None, kind="display_data") -> dict:
    content = {"data": {"text/plain": text}, "metadata": {}}
    if display_id:
        content["transient"] = {"display_id": display_id}
    return _msg(kind, content, parent)


def _run(rebuilt, msg_id: str, cell_num: int, *messages) -> None:
    """nbval's view of one cell: the request, then its iopub messages up to idle."""
    rebuilt.start(msg_id, cell_num)
    for msg in [_status("busy", msg_id), *messages, _status("idle", msg_id)]:
        rebuilt.feed(msg)


def _notebook(*sources: str):
    cells = [nbformat.v4.new_markdown_cell("# A title")]
    cells += [nbformat.v4.new_code_cell(src) for src in sources]
    return nbformat.v4.new_notebook(cells=cells)


def test_outputs_display_updates_and_counts_as_nbclient_stores_them():
    rebuilt = nbval_course.Reconstruction(_notebook("h = display(...)", "", "h.update(...)", "1 + 1"))
    _run(rebuilt, "a", 0, _msg("execute_input", {"code": "", "execution_count": 1}, "a"),
         _display("first", "a", display_id="d1"), _stream("printed\n", "a"))  # fmt: skip
    rebuilt.feed(_stream("from another request\n", "kernel-info"))
    _run(rebuilt, "e", 1)  # an empty cell: nbval sends it, nbclient would not
    _run(rebuilt, "b", 2, _display("second", "b", display_id="d1", kind="update_display_data"))
    rebuilt.feed(_stream("after idle\n", "b"))  # nbclient stops reading a cell at idle
    # nbval runs cells without history, so the kernel's count stands still at 1
    _run(rebuilt, "c", 3, _msg("execute_result", {"data": {"text/plain": "2"}, "metadata": {},
                                                  "execution_count": 1}, "c"))  # fmt: skip
    nb = rebuilt.finish()
    first, empty, update, result = nb.cells[1:]
    assert [o.output_type for o in first.outputs] == ["display_data", "stream"]
    assert first.outputs[0].data["text/plain"] == "second", "the update did not reach the earlier cell"
    assert first.outputs[1].text == "printed\n"
    assert (empty.execution_count, empty.outputs) == (None, [])
    assert (update.execution_count, update.outputs) == (2, [])
    assert result.execution_count == 3 and result.outputs[0].execution_count == 3
    assert result.outputs[0].data["text/plain"] == "2"
    assert rebuilt.completed == {0, 1, 2, 3} and rebuilt.errors == []
    assert {"iopub.status.busy", "iopub.status.idle"} <= set(first.metadata.execution)
    assert "widgets" not in nb.metadata


def test_clear_output_with_and_without_wait():
    rebuilt = nbval_course.Reconstruction(_notebook("wait", "now"))
    clear = {"wait": True}
    _run(rebuilt, "a", 0, _stream("gone\n", "a"), _msg("clear_output", clear, "a"), _stream("kept\n", "a"))
    _run(rebuilt, "b", 1, _stream("gone\n", "b"), _msg("clear_output", {"wait": False}, "b"))
    waited, now = rebuilt.finish().cells[1:]
    assert [o.text for o in waited.outputs] == ["kept\n"]
    assert now.outputs == []


def _comm_open(comm_id: str, state: dict, parent: str) -> dict:
    content = {"comm_id": comm_id, "target_name": "jupyter.widget", "data": {"state": state, "buffer_paths": []}}
    return _msg("comm_open", content, parent)


def _comm_update(comm_id: str, state: dict, parent: str) -> dict:
    content = {"comm_id": comm_id, "data": {"method": "update", "state": state, "buffer_paths": []}}
    return _msg("comm_msg", content, parent)


def test_widget_state_follows_comm_updates_across_cells():
    rebuilt = nbval_course.Reconstruction(_notebook("slider", "slider.value = 7"))
    state = {"_model_name": "IntSliderModel", "_model_module": "@jupyter-widgets/controls",
             "_model_module_version": "2.0.0", "value": 3}  # fmt: skip
    view = {"data": {"application/vnd.jupyter.widget-view+json": {"model_id": "w1"}}, "metadata": {}}
    _run(rebuilt, "a", 0, _comm_open("w1", state, "a"), _msg("execute_result", {**view, "execution_count": 1}, "a"))
    _run(rebuilt, "b", 1, _comm_update("w1", {"value": 7}, "b"))
    nb = rebuilt.finish()
    saved = nb.metadata.widgets["application/vnd.jupyter.widget-state+json"]["state"]
    assert saved["w1"]["model_name"] == "IntSliderModel" and saved["w1"]["state"]["value"] == 7
    assert nb.cells[1].outputs[0].data["application/vnd.jupyter.widget-view+json"]["model_id"] == "w1"


class _FakeShell:
    def __init__(self):
        self.sent = []

    def send(self, msg):
        self.sent.append(msg)


class _FakeKernelClient:
    """What nbclient's output-widget mimic needs: a session and a shell channel."""

    def __init__(self):
        from jupyter_client.session import Session

        self.session = Session()
        self.shell_channel = _FakeShell()


def test_output_widget_captures_its_outputs_and_syncs_them_to_the_kernel():
    kc = _FakeKernelClient()
    rebuilt = nbval_course.Reconstruction(_notebook("with out: print('inside')"), kernel_client=kc)
    state = {"_model_name": "OutputModel", "_model_module": "@jupyter-widgets/output",
             "_model_module_version": "1.0.0", "outputs": [], "msg_id": ""}  # fmt: skip
    _run(rebuilt, "a", 0, _comm_open("o1", state, "a"), _comm_update("o1", {"msg_id": "a"}, "a"),
         _stream("inside\n", "a"), _comm_update("o1", {"msg_id": ""}, "a"), _stream("outside\n", "a"))  # fmt: skip
    nb = rebuilt.finish()
    saved = nb.metadata.widgets["application/vnd.jupyter.widget-state+json"]["state"]["o1"]["state"]
    assert [o["text"] for o in saved["outputs"]] == ["inside\n"]
    assert [o.text for o in nb.cells[1].outputs] == ["outside\n"]
    assert kc.shell_channel.sent, "the output widget's state was not sent back to the kernel"


def test_a_message_that_cannot_be_handled_is_kept_as_an_error():
    rebuilt = nbval_course.Reconstruction(_notebook("x"))
    _run(rebuilt, "a", 0, _msg("display_data", {"metadata": {}}, "a"))  # no "data"
    assert rebuilt.errors and "Cell 0" in rebuilt.errors[0] and "display_data" in rebuilt.errors[0]


# What `%pip install` prints in a notebook after installing (IPython's pip magic).
PIP_SAYS = "Note: you may need to restart the kernel to use updated packages.\n"


def test_bundle_drops_pips_note_and_nothing_else():
    source = _notebook(cn.setup_block("chapter") + "data", "print(1)")
    executed = nbformat.from_dict(json.loads(json.dumps(source)))
    stream = nbformat.v4.new_output
    executed.cells[1].outputs = [stream("stream", name="stdout", text=PIP_SAYS)]
    executed.cells[1].execution_count = 1
    executed.cells[2].outputs = [stream("stream", name="stdout", text="1\n")]
    executed.cells[2].execution_count = 2
    executed.metadata["language_info"] = {"name": "python"}
    bundle = nbval_course.bundle_for_the_book(source, executed)
    assert bundle.cells[1].outputs == [] and bundle.cells[1].execution_count == 1
    assert bundle.cells[2].outputs[0].text == "1\n" and bundle.cells[2].execution_count == 2
    assert bundle.metadata.language_info == {"name": "python"}
    assert source.cells[2].outputs == [], "the source notebook was changed"
    # what else the set-up cell shows stays, also in the same stream as pip's note
    shown = stream("execute_result", data={"text/plain": "Dataset(...)"}, execution_count=1)
    executed.cells[1].outputs = [stream("stream", name="stdout", text="Mode: Minimal\n" + PIP_SAYS), shown]
    bundle = nbval_course.bundle_for_the_book(source, executed)
    assert [o.get("text") for o in bundle.cells[1].outputs] == ["Mode: Minimal\n", None]
    assert bundle.cells[1].outputs[1].data == {"text/plain": "Dataset(...)"}
    assert PIP_SAYS in executed.cells[1].outputs[0].text, "the executed notebook was changed"


# --------------------------------------------------------------------------- the whole plugin

GOOD = [
    cn.setup_block("chapter") + "import ipywidgets as widgets\nfrom IPython.display import Markdown, display",
    'handle = display(Markdown("first"), display_id=True)\nprint("printed")',
    'handle.update(Markdown("second"))',
    "slider = widgets.IntSlider(value=3, max=9)\nslider",
    "slider.value = 7",
    'from IPython.display import clear_output\nprint("gone")\nclear_output(wait=True)\nprint("kept")',
    ("raises-exception", 'raise ValueError("an intended error")'),
    "1 + 1",
]
BROKEN = [cn.setup_block("chapter"), "x = 1", 'assert x == 2, "x should be 2 here"', 'print("after")']
CRASH = ["import os\n\nos._exit(1)  # the kernel process ends", 'print("never")']


def _write(path: Path, cells) -> None:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"display_name": "Python 3", "language": "python", "name": "python3"}
    nb.cells.append(nbformat.v4.new_markdown_cell("# A synthetic notebook"))
    for cell in cells:
        tag, source = cell if isinstance(cell, tuple) else (None, cell)
        nb.cells.append(nbformat.v4.new_code_cell(source, metadata={"tags": [tag]} if tag else {}))
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, path)


@pytest.fixture(scope="module")
def plugin_run(tmp_path_factory):
    """Three notebooks through the plugin, as `make test-notebooks` runs the course's."""
    folder = tmp_path_factory.mktemp("plugin")
    _write(folder / "chapters" / "good.ipynb", GOOD)
    _write(folder / "chapters" / "broken.ipynb", BROKEN)
    _write(folder / "chapters" / "crash.ipynb", CRASH)
    build = folder / "_build"
    env = {**os.environ, "PYTHONPATH": str(ROOT / "tests"), "NB_THREADS": "1"}
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--rootdir", str(folder), "-c", os.devnull,
         "--nbval-lax", "-p", "nbval_course", "--course-build-dir", str(build), "-n", "2", "--dist", "loadfile",
         "-rfEs", "--color=no", "chapters/good.ipynb", "chapters/broken.ipynb", "chapters/crash.ipynb"],
        cwd=folder, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    return folder, build, run


@pytest.mark.notebooks
def test_plugin_fails_the_run_and_names_the_failing_cell(plugin_run):
    folder, build, run = plugin_run
    out = run.stdout + run.stderr
    assert run.returncode == 1, out
    assert "FAILED chapters/broken.ipynb::Cell 2" in out, out
    # where the cell is, and the error, on the failure's first line
    assert "code cell 3 of 4, under '# A synthetic notebook': AssertionError: x should be 2 here" in out, out
    assert "chapters/good.ipynb" not in " ".join(line for line in out.splitlines() if line.startswith("FAILED")), out
    # the hand-off item is skipped and says why
    assert "chapters/broken.ipynb: not stored in the book's cache: Cell 2 failed" in out, out
    # a kernel that dies is reported at once as such (nbval alone waits out the cell timeout)
    assert "FAILED chapters/crash.ipynb::Cell 0" in out, out
    assert "code cell 1 of 2, under '# A synthetic notebook': The kernel died" in out, out
    assert "Timeout" not in out, out
    # every other cell passes (nbval executes the cells after a failure too), and good.ipynb's hand-off
    passed = len(GOOD) + 1 + len(BROKEN) - 1
    assert f"3 failed, {passed} passed, 2 skipped" in out, out


@pytest.mark.notebooks
def test_plugin_hands_outputs_and_widget_state_to_the_books_cache(plugin_run):
    from jupyter_cache import get_cache

    folder, build, run = plugin_run
    cache = get_cache(str(build / ".jupyter_cache"))
    records = cache.list_cache_records()
    assert [Path(r.uri).name for r in records] == ["good.ipynb"], run.stdout  # never the broken one
    source = nbformat.read(folder / "chapters" / "good.ipynb", as_version=4)
    nb = cache.get_cache_bundle(cache.match_cache_notebook(source).pk).nb
    assert len(nb.cells) == len(GOOD)  # the cache keeps the code cells
    setup, display_cell, update, slider, assign, cleared, intended, result = nb.cells
    assert setup.outputs == [], "pip's note should be dropped from the set-up cell"
    assert [o.output_type for o in display_cell.outputs] == ["display_data", "stream"]
    assert display_cell.outputs[0].data["text/markdown"] == "second", "the display update is missing"
    assert update.outputs == [] and assign.outputs == []
    (view,) = slider.outputs
    model_id = view.data["application/vnd.jupyter.widget-view+json"]["model_id"]
    state = nb.metadata.widgets["application/vnd.jupyter.widget-state+json"]["state"]
    assert state[model_id]["model_name"] == "IntSliderModel"
    assert state[model_id]["state"]["value"] == 7, "the widget state missed the later update"
    assert [o.get("text") for o in cleared.outputs] == ["kept\n"]
    assert [(o.output_type, o.get("ename")) for o in intended.outputs] == [("error", "ValueError")]
    assert result.outputs[0].data["text/plain"] == "2" and result.execution_count == 8
    assert [c.execution_count for c in nb.cells] == list(range(1, len(GOOD) + 1))
    assert nb.metadata.language_info["name"] == "python"


@pytest.mark.notebooks
def test_plugin_records_each_notebooks_time(plugin_run):
    folder, build, run = plugin_run
    times = {r["notebook"]: r for r in (json.loads(p.read_text()) for p in (build / "notebook-times").glob("*.json"))}
    assert set(times) == {"chapters/good.ipynb", "chapters/broken.ipynb", "chapters/crash.ipynb"}, run.stdout
    good, broken = times["chapters/good.ipynb"], times["chapters/broken.ipynb"]
    assert not good["failed"] and broken["failed"] and times["chapters/crash.ipynb"]["failed"]
    assert good["seconds"] > good["setup_seconds"] > 0 and good["threads"] == "1"
    report = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "notebook_report.py"), "--build-dir", str(build)],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    assert "chapters/good.ipynb" in report and "FAILED" in report and "total" in report, report
