"""nbval as the course's one notebook executor: the pytest plugin of `make test-notebooks`.

    pytest --nbval-lax -p nbval_course -n 2 --dist loadfile <the notebooks of scripts/course_notebooks.py>

nbval (0.11) runs every code cell of each notebook as a test item (`notebook.ipynb::Cell N`); a
cell that raises fails with its traceback, except in a cell tagged `raises-exception`. The
notebooks are stored without outputs, so `--nbval-lax` and `--nbval` both check only the
notebooks' own asserts. This plugin adds three things around that run:

* **Where the kernel runs.** Each notebook gets a new virtual environment without normlib
  (tests/fresh_env.py); its kernel is that environment's interpreter, started in the notebook's
  folder (as the book build does), with $NORMLIB_INSTALL_SOURCE pointing the set-up cell's
  install at a wheel of this checkout and pip kept off the network. The cell timeout is the
  book's (`execute.timeout` in _config.yml) unless --nbval-cell-timeout is given.
* **What is kept of the run.** nbval reads every iopub message of a cell and keeps only what it
  compares: it ignores comm messages (the widget state that the book's static sliders need),
  display updates and clear_output, and it writes no outputs. The plugin sees every message
  nbval reads, assigns it to the cell whose execute request it answers, and hands it to
  nbclient's own message handling (``NotebookClient.process_message``, on a separate copy of
  the notebook: nbval fails a cell whose *reference* holds outputs), so outputs, display updates,
  clear_output and widget state come out exactly as `NotebookClient.execute` would store them.
* **One more item per notebook**, `notebook.ipynb::install check and book cache`, after its last
  cell: it checks that the notebook imported normlib from the fresh environment (so the set-up
  cell installed it, as in Colab), stores the executed notebook (outputs, widget state, minus
  pip's note in the set-up cell's output) in the book's jupyter-cache under the source
  notebook's key, so the strict book build renders these outputs instead of executing again,
  and records the execution time for the report at the end of `make test`
  (scripts/notebook_report.py). A notebook with a failed cell is not cached (the item is
  skipped and says why): the build then executes it and fails there too.

Two small changes to how nbval reports: a kernel that dies during a cell (a crash, the OOM
killer) fails that cell at once with "The kernel died" and the kernel's log (nbval alone waits
out the whole cell timeout, then calls it a timeout); and a failing cell's report starts with
where it is ("code cell 12 of 36, under '### Heading'") and its error's last line.

What nbval does as it always has: it sends each cell with ``store_history=False`` (so ``_``,
``Out`` and the kernel's execution count do not advance; the counts in the cache are
nbclient's) and ``stop_on_error=False`` (after a failing cell, the next cells still run and
report their own results).

``--course-build-dir`` (default: the repository's _build) is where the cache
(``.jupyter_cache``), the times (``notebook-times/``) and the fresh environments
(``fresh-env/``) go. With pytest-xdist use ``--dist loadfile``: a notebook's cells share one
kernel and must stay on one worker.
"""

from __future__ import annotations

import copy
import json
import os
import re
import time
from pathlib import Path
from queue import Empty

import pytest
from nbval.kernel import RunningKernel
from nbval.plugin import IPyNbCell, IPyNbFile

import fresh_env
from fresh_env import ROOT, cn

PIP_NOTE = "Note: you may need to restart the kernel to use updated packages."
ITEM_NAME = "install check and book cache"
PROBE = "import normlib\nprint(normlib.__file__)"
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_SHARED = pytest.StashKey()


# --------------------------------------------------------------------------- plugin hooks


def pytest_addoption(parser):
    group = parser.getgroup("nbval_course", "the course's notebook executor (tests/nbval_course.py)")
    group.addoption(
        "--course-build-dir",
        default=str(ROOT / "_build"),
        help="where the book's jupyter-cache, the times and the fresh environments go (default: _build)",
    )


def pytest_configure(config):
    if not (config.option.nbval or config.option.nbval_lax):
        return
    if config.option.nbval_current_env or config.option.nbval_kernel_name:
        raise pytest.UsageError("nbval_course runs each notebook in its own fresh environment: drop "
                                "--nbval-current-env / --nbval-kernel-name")  # fmt: skip
    if not any(str(a).startswith("--nbval-cell-timeout") for a in config.invocation_params.args):
        config.option.nbval_cell_timeout = fresh_env.cell_timeout()


@pytest.hookimpl(wrapper=True)
def pytest_collect_file(file_path, parent):
    """nbval's notebook collectors, replaced by the subclass below (same arguments)."""
    collected = yield
    return [
        CourseNotebook.from_parent(parent, path=file_path) if type(node) is IPyNbFile else node
        for node in collected or []
    ]


def _build_dir(config) -> Path:
    return Path(config.option.course_build_dir).resolve()


def _shared(config) -> fresh_env.Shared:
    """The wheel and package links of this run (one per run, shared by the xdist workers)."""
    if _SHARED not in config.stash:
        run_id = os.environ.get("PYTEST_XDIST_TESTRUNUID", f"run-{os.getpid()}")
        config.stash[_SHARED] = fresh_env.prepare(_build_dir(config) / "fresh-env", run_id)
    return config.stash[_SHARED]


# --------------------------------------------------------------------------- outputs, rebuilt


class Reconstruction:
    """The executed notebook, rebuilt from the kernel messages nbval reads.

    A ``nbclient.NotebookClient`` that never executes anything: for each code cell that nbval
    sends to the kernel (``start``), every iopub message answering that request (``feed``) goes
    to ``NotebookClient.process_message`` until the kernel is idle again, as in
    ``NotebookClient.execute_cell``: outputs, display_id updates (also of earlier cells),
    clear_output (with and without wait), output widgets and the widgets' comm state. Cells are
    numbered as nbclient numbers them (empty cells are not executed and get no number).
    ``finish()`` writes the widget state into the notebook's metadata.
    """

    def __init__(self, nb, kernel_client=None):
        from nbclient import NotebookClient

        self.nb = copy.deepcopy(nb)
        self.client = NotebookClient(self.nb, record_timing=True, store_widget_state=True)
        # nbclient's output-widget mimic sends its state back to the kernel, as a frontend does.
        self.client.kc = kernel_client
        self.code_index = [i for i, cell in enumerate(self.nb.cells) if cell.cell_type == "code"]
        self.completed: set[int] = set()  # code cells (nbval's numbers) whose kernel went idle again
        self.errors: list[str] = []  # what went wrong in the message handling itself
        self._running: dict[str, tuple] = {}  # execute msg_id -> (cell number, index, cell, count)

    def start(self, msg_id: str, cell_num: int) -> None:
        index = self.code_index[cell_num]
        cell = self.nb.cells[index]
        if not cell.source.strip():  # nbclient does not send empty cells
            self.completed.add(cell_num)
            return
        cell.outputs = []
        cell.metadata["execution"] = {}
        self.client.clear_before_next_output = False
        self.client.code_cells_executed += 1
        self._running[msg_id] = (cell_num, index, cell, self.client.code_cells_executed)

    def feed(self, msg: dict) -> None:
        from nbclient.exceptions import CellExecutionComplete

        parent = (msg.get("parent_header") or {}).get("msg_id")
        entry = self._running.get(parent)
        if entry is None:  # kernel_info, a comm reply, or a cell that nbval did not send
            return
        cell_num, index, cell, count = entry
        # nbclient rewrites the header's msg_type of a display update: nbval keeps the original.
        msg = {**msg, "header": dict(msg.get("header") or {})}
        try:
            self.client.process_message(msg, cell, index)
        except CellExecutionComplete:  # idle: nbclient stops reading this cell's messages here
            del self._running[parent]
            # The execution count that nbclient gives (nbval executes without history, so the
            # kernel's own count stands still).
            cell.execution_count = count
            for output in cell.outputs:
                if output.get("output_type") == "execute_result":
                    output["execution_count"] = count
            self.completed.add(cell_num)
        except Exception as error:  # noqa: BLE001 - reported by the hand-off item, never lost
            self.errors.append(f"Cell {cell_num}: {msg.get('msg_type')}: {type(error).__name__}: {error}")

    def finish(self):
        self.client.set_widgets_metadata()
        return self.nb


# --------------------------------------------------------------------------- the kernel


class KernelDied(RuntimeError):
    """The kernel process ended while a cell was running."""


class FreshKernel(RunningKernel):
    """nbval's RunningKernel, started from a given KernelManager (the fresh environment's
    interpreter) with an environment, and reporting each execute request and each iopub message
    it reads to ``on_execute`` / ``on_iopub``. The kernel's own output goes to ``log``."""

    def __init__(self, km, *, cwd, env, startup_timeout, log: Path, on_execute, on_iopub):
        self._on_execute, self._on_iopub = on_execute, on_iopub
        self.log_path = log
        self._log = open(log, "w")  # noqa: SIM115 - closed in stop()
        km.start_kernel(cwd=cwd, env=env, stdout=self._log, stderr=self._log)
        kc = km.client()
        kc.start_channels()
        try:
            kc.wait_for_ready(timeout=startup_timeout)
        except RuntimeError as error:
            kc.stop_channels()
            km.shutdown_kernel(now=True)
            self._log.close()
            raise RuntimeError(f"{error}\nkernel log ({log}):\n{log.read_text()[-3000:]}") from None
        self.km, self.kc = km, kc
        self._ensure_iopub_up()
        self.language_info = self._shell_request(kc.kernel_info(), timeout=startup_timeout)["language_info"]

    def get_message(self, stream, timeout=None):
        msg = super().get_message(stream, timeout=timeout)
        if stream == "iopub":
            self._on_iopub(msg)
        return msg

    def execute_cell_input(self, cell_input, allow_stdin=None):
        msg_id = super().execute_cell_input(cell_input, allow_stdin=allow_stdin)
        self._on_execute(msg_id)
        return msg_id

    def await_reply(self, msg_id, timeout=None):
        """nbval's wait for a cell's reply, which would sit out the whole cell timeout after the
        kernel died (a crash, the OOM killer): here the kernel is looked at every second."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            step = 1.0 if deadline is None else max(0.0, min(1.0, deadline - time.monotonic()))
            try:
                return super().await_reply(msg_id, timeout=step)
            except Empty:
                if not self.is_alive():
                    tail = self.log_path.read_text(errors="replace")[-3000:]
                    raise KernelDied(f"The kernel died while running this cell. Its log ({self.log_path}):\n{tail}")
                if deadline is not None and time.monotonic() >= deadline:
                    raise

    def _shell_request(self, msg_id: str, timeout: float) -> dict:
        while True:
            msg = self.get_message("shell", timeout=timeout)
            if msg["parent_header"].get("msg_id") == msg_id:
                return msg["content"]

    def run_quietly(self, code: str, timeout: float = 60) -> str:
        """Run ``code`` outside the notebook (no cell, no history); its stdout, or an error."""
        msg_id = self.kc.execute(code, store_history=False, allow_stdin=False)
        self.await_reply(msg_id, timeout=timeout)
        text, error = [], None
        while True:
            msg = self.get_message("iopub", timeout=timeout)
            if msg["parent_header"].get("msg_id") != msg_id:
                continue
            kind, content = msg["msg_type"], msg["content"]
            if kind == "stream" and content.get("name") == "stdout":
                text.append(content["text"])
            elif kind == "error":
                error = f"{content['ename']}: {content['evalue']}"
            elif kind == "status" and content["execution_state"] == "idle":
                break
        if error:
            raise RuntimeError(error)
        return "".join(text)

    def stop(self):
        try:
            super().stop()
        finally:
            self._log.close()


# --------------------------------------------------------------------------- nbval's collector


class CourseNotebook(IPyNbFile):
    """nbval's notebook collector, with the kernel in a fresh environment, every message it
    reads rebuilt into an executed notebook, and a last item that hands that to the book."""

    def collect(self):
        for item in super().collect():  # nbval's items, one per code cell, as CourseCell
            yield CourseCell.from_parent(self, name=item.name, cell_num=item.cell_num, cell=item.cell,
                                         options=item.options)  # fmt: skip
        yield HandOff.from_parent(self, name=ITEM_NAME)

    @property
    def rel(self) -> str:
        try:
            return self.path.resolve().relative_to(self.config.rootpath.resolve()).as_posix()
        except ValueError:
            return self.path.name

    @property
    def slug(self) -> str:
        return re.sub(r"[^A-Za-z0-9]+", "_", self.rel.removesuffix(".ipynb"))

    def setup(self):
        self.started = time.perf_counter()
        self.current_cell: int | None = None
        self.failed_cells: list[int] = []
        self.recorded = False
        self.reconstruction = Reconstruction(self.nb)
        shared = _shared(self.config)
        python, self.site_packages = fresh_env.create(shared, self.slug)
        km = fresh_env.kernel_manager(python, shared.run / "kernels", self.slug.lower())
        self.kernel = FreshKernel(
            km,
            cwd=str(self.path.parent),
            env=fresh_env.kernel_env(shared, python),
            startup_timeout=self.config.option.nbval_kernel_startup_timeout,
            log=python.parent.parent / "kernel.log",
            on_execute=self._on_execute,
            on_iopub=self.reconstruction.feed,
        )
        self.reconstruction.client.kc = self.kernel.kc
        self.setup_sanitize_files()

    def _on_execute(self, msg_id: str) -> None:
        if self.current_cell is not None:
            self.reconstruction.start(msg_id, self.current_cell)

    def record(self, seconds: float, *, failed: bool, setup_seconds: float | None = None) -> None:
        """One line of the time report (scripts/notebook_report.py)."""
        times = _build_dir(self.config) / "notebook-times"
        times.mkdir(parents=True, exist_ok=True)
        record = {"notebook": self.rel, "kind": cn.kind(self.path, self.config.rootpath),
                  "seconds": round(seconds, 2),
                  "setup_seconds": None if setup_seconds is None else round(setup_seconds, 2),
                  "failed": failed, "threads": os.environ.get("NB_THREADS"), "executor": "nbval"}  # fmt: skip
        (times / f"{self.slug}.json").write_text(json.dumps(record))
        self.recorded = True

    def teardown(self):
        try:
            super().teardown()
        finally:
            # Stopped before the hand-off: a kernel that did not start, or -x after a failed cell.
            # (A partial run, e.g. -k "Cell 3", is not recorded.)
            if hasattr(self, "started") and not self.recorded and (self.kernel is None or self.failed_cells):
                self.record(time.perf_counter() - self.started, failed=True)


class CourseCell(IPyNbCell):
    """nbval's cell item; tells the collector which cell is running and which failed, and says
    where a failing cell is (nbval numbers code cells from 0)."""

    def repr_failure(self, excinfo):
        report = super().repr_failure(excinfo)
        cells = self.parent.nb.cells
        code = [i for i, cell in enumerate(cells) if cell.cell_type == "code"]
        index = code[self.cell_num]
        headings = [
            line.strip()
            for cell in cells[:index]
            if cell.cell_type == "markdown"
            for line in cell.source.splitlines()
            if line.startswith("#")
        ]
        where = f"code cell {self.cell_num + 1} of {len(code)}"
        if headings:
            where += f", under {headings[-1]!r}"
        # The summary line shows this first line: say what went wrong there, for an error the
        # traceback's last line (e.g. "AssertionError: the check's message").
        what = str(excinfo.value).splitlines()[0] if str(excinfo.value) else type(excinfo.value).__name__
        inner = getattr(excinfo.value, "inner_traceback", None)
        if what == "Cell execution caused an exception" and inner:
            lines = [line.strip() for line in _ANSI.sub("", inner).splitlines() if line.strip()]
            what = lines[-1] if lines else what
        return f"{where}: {what}\n{report}"

    def runtest(self):
        notebook = self.parent
        notebook.current_cell = self.cell_num
        try:
            super().runtest()
        except KernelDied as died:
            notebook.failed_cells.append(self.cell_num)
            self.raise_cell_error("The kernel died", str(died))
        except Exception:
            notebook.failed_cells.append(self.cell_num)
            raise
        finally:
            notebook.current_cell = None


class HandOffError(Exception):
    """A failure of the hand-off item, reported without a Python traceback."""


class HandOff(pytest.Item):
    """After the last cell: install check, the book's cache entry, the time."""

    def runtest(self):
        notebook: CourseNotebook = self.parent
        seconds = time.perf_counter() - notebook.started
        rebuilt = notebook.reconstruction
        if rebuilt.errors:
            notebook.record(seconds, failed=True)
            raise HandOffError("the outputs could not be rebuilt from nbval's messages:\n" + "\n".join(rebuilt.errors))
        if notebook.failed_cells:
            notebook.record(seconds, failed=True)
            cells = ", ".join(f"Cell {n}" for n in notebook.failed_cells)
            pytest.skip(
                f"{notebook.rel}: not stored in the book's cache: {cells} failed (the book build would fail too)"
            )
        missing = [n for n in range(len(rebuilt.code_index)) if n not in rebuilt.completed]
        if missing:
            notebook.recorded = True  # a partial run (-k, NBVAL_SKIP) is neither timed nor cached
            cells = ", ".join(f"Cell {n}" for n in missing)
            if len(missing) > 3:
                cells = f"{len(missing)} of its {len(rebuilt.code_index)} code cells"
            pytest.skip(
                f"{notebook.rel}: not stored in the book's cache: {cells} did not run (the book build will run it)"
            )

        # The set-up cell installed normlib into the fresh environment, and the notebook used it.
        try:
            imported_from = notebook.kernel.run_quietly(PROBE).strip()
        except RuntimeError as error:
            raise HandOffError(f"`import normlib` after the last cell failed: {error}") from None
        if not Path(imported_from).resolve().is_relative_to(notebook.site_packages.resolve()):
            raise HandOffError(
                f"normlib came from {imported_from!r}, not from the fresh environment's "
                f"{notebook.site_packages}: did the set-up cell install it?"
            )

        executed = rebuilt.finish()
        executed.metadata["language_info"] = notebook.kernel.language_info
        setup_seconds = _cell_seconds(cn.first_code_cell(executed))
        _cache_for_the_book(notebook, executed, seconds)
        notebook.record(seconds, failed=False, setup_seconds=setup_seconds)

    def repr_failure(self, excinfo):
        if isinstance(excinfo.value, HandOffError):
            return f"{self.parent.rel}: {excinfo.value}"
        return super().repr_failure(excinfo)

    def reportinfo(self):
        return self.path, None, f"{self.parent.rel}::{self.name}"


def _cell_seconds(cell) -> float | None:
    from datetime import datetime

    timing = ((cell or {}).get("metadata") or {}).get("execution") or {}
    try:
        busy = datetime.fromisoformat(timing["iopub.status.busy"].replace("Z", "+00:00"))
        idle = datetime.fromisoformat(timing["iopub.status.idle"].replace("Z", "+00:00"))
    except (KeyError, ValueError):
        return None
    return (idle - busy).total_seconds()


def bundle_for_the_book(source_nb, executed):
    """The source notebook with the executed outputs, counts and widget state.

    The cache's key hashes the code cells' sources and metadata and the kernelspec, so the outputs
    are copied into the *source* notebook (the rebuilt one carries timing metadata in its cells).
    pip's note in the set-up cell ("you may need to restart the kernel") exists only where the
    cell installed normlib; a reader's local build, where normlib is installed, has no such line,
    so it is dropped. Everything else the set-up cell shows is kept."""
    bundle = copy.deepcopy(source_nb)
    for key in ("language_info", "widgets"):
        if key in executed.metadata:
            bundle.metadata[key] = executed.metadata[key]
    setup_cell = cn.first_code_cell(executed)
    for mine, ran in zip(bundle.cells, executed.cells):
        if mine.cell_type != "code":
            continue
        outputs = _without_pips_note(ran.outputs) if ran is setup_cell else ran.outputs
        mine.outputs, mine.execution_count = outputs, ran.execution_count
    return bundle


def _without_pips_note(outputs):
    kept = []
    for output in outputs:
        if output.get("output_type") == "stream" and output.get("name") == "stdout":
            lines = output.get("text", "").splitlines(keepends=True)
            rest = "".join(line for line in lines if line.strip() != PIP_NOTE)
            if len(rest) != len(output.get("text", "")):
                if not rest.strip():
                    continue
                output = copy.deepcopy(output)
                output["text"] = rest
        kept.append(output)
    return kept


def _cache_for_the_book(notebook: CourseNotebook, executed, seconds: float) -> None:
    from jupyter_cache import get_cache
    from jupyter_cache.base import CacheBundleIn

    bundle = bundle_for_the_book(notebook.nb, executed)
    build = _build_dir(notebook.config)
    with fresh_env.locked(build / ".jupyter_cache.lock"):
        cache = get_cache(str(build / ".jupyter_cache"))
        cache.cache_notebook_bundle(
            CacheBundleIn(
                bundle, str(notebook.path), data={"execution_seconds": round(seconds, 2), "executor": "nbval"}
            ),
            check_validity=True,
            overwrite=True,
        )
        try:
            cache.match_cache_notebook(notebook.nb)  # what the build will look up
        except KeyError:
            raise HandOffError("stored in the cache, but the cache does not match the notebook to it") from None
