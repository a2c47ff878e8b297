"""Every course notebook, executed once, as a reader in Colab would run it.

This is the one execution of each notebook in `make test` (the book build then reuses its
outputs, see the Makefile):

* **A fresh environment without normlib.** Each notebook gets a new virtual environment whose
  interpreter sees the pinned packages of `.venv` (a folder of links to its site-packages,
  named in a .pth file) except normlib itself: .venv's editable install of normlib lives in
  .pth files of its own, which Python does not process in a folder that a .pth file adds.
  So `import normlib` fails at first, as in Colab, and the notebook's set-up cell must install
  it. $NORMLIB_INSTALL_SOURCE points that install at a wheel built from this checkout, and
  pip runs with --no-index (nothing comes from the network). The kernel is that environment's
  interpreter, started in the notebook's folder (as the book build does).
* **Every cell runs; an error fails the test** with the cell's traceback: the notebook's
  assert cells are its checks. A cell tagged `raises-exception` may raise (and the build shows
  its error, which the browser test allows only there).
* **Outputs go to the book.** The executed notebook (outputs and widget state, minus pip's
  note in the set-up cell's output) is stored in the book's jupyter-cache, keyed by the
  notebook's code, so the strict book build that follows renders these outputs instead of
  executing the notebook again. The build executes only what is not in the cache.
* **Times.** Each notebook's execution time is written to _build/notebook-times/ for the
  report at the end of `make test` (scripts/notebook_report.py).

Marked `notebooks`: `make test-unit` leaves these out; `make test-notebooks` runs them.
"""

from __future__ import annotations

import contextlib
import copy
import fcntl
import json
import os
import re
import shutil
import subprocess
import sys
import time
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
import course_notebooks as cn  # noqa: E402

BUILD = ROOT / "_build"
CACHE_DIR = BUILD / ".jupyter_cache"  # Jupyter Book 1's default execution cache
TIMES_DIR = BUILD / "notebook-times"
FRESH_DIR = BUILD / "fresh-env"
PIP_NOTE = "Note: you may need to restart the kernel to use updated packages."

NOTEBOOKS = cn.course_notebooks()
pytestmark = pytest.mark.notebooks


@contextlib.contextmanager
def _locked(path: Path):
    """An exclusive lock shared by the pytest-xdist workers."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _cell_timeout() -> int:
    import yaml

    config = yaml.safe_load((ROOT / "_config.yml").read_text(encoding="utf-8")) or {}
    return int((config.get("execute") or {}).get("timeout") or 120)


# --------------------------------------------------------------------------- the fresh environment


@pytest.fixture(scope="session")
def shared(tmp_path_factory):
    """What every fresh environment of this test run shares: a wheel of normlib built from this
    checkout, and a folder of links to .venv's packages without normlib."""
    run = FRESH_DIR / os.environ.get("PYTEST_XDIST_TESTRUNUID", f"run-{os.getpid()}")
    with _locked(FRESH_DIR / ".lock"):
        if not (run / "ready").exists():
            if FRESH_DIR.exists():  # environments of earlier runs
                for old in FRESH_DIR.iterdir():
                    if old.is_dir():
                        shutil.rmtree(old, ignore_errors=True)
            _build_wheel(run / "wheel")
            _link_packages(run / "packages")
            (run / "ready").write_text("")
    wheels = sorted((run / "wheel").glob("normlib-*.whl"))
    assert len(wheels) == 1, wheels
    return {"run": run, "wheel": wheels[0], "packages": run / "packages"}


def _build_wheel(out: Path) -> None:
    """A wheel of the working tree, built from a clean copy (a stale build/ folder in the
    checkout could otherwise slip deleted modules into it), as `pip install git+URL` would."""
    source = out.parent / "source"
    shutil.rmtree(source, ignore_errors=True)
    source.mkdir(parents=True)
    for name in ["pyproject.toml", "README.md", *(p.name for p in ROOT.glob("LICENSE*"))]:
        shutil.copy2(ROOT / name, source / name)
    shutil.copytree(ROOT / "normlib", source / "normlib", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "--no-index",
         "-w", str(out), str(source)],
        check=True, capture_output=True, text=True,
    )  # fmt: skip


def _link_packages(folder: Path) -> None:
    """Links to every entry of .venv's site-packages except normlib and every .pth file."""
    import site

    folder.mkdir(parents=True)
    (site_packages,) = [Path(p) for p in site.getsitepackages() if Path(p).name == "site-packages"][:1]
    for entry in site_packages.iterdir():
        name = entry.name
        if name.endswith(".pth") or name.startswith("__editable__") or re.match(r"normlib([-.]|$)", name):
            continue
        (folder / name).symlink_to(entry)


def _fresh_environment(shared: dict, name: str) -> tuple[Path, Path]:
    """A new virtual environment: (its python, its site-packages)."""
    home = shared["run"] / "envs" / name
    shutil.rmtree(home, ignore_errors=True)
    venv.EnvBuilder(with_pip=False, symlinks=True, clear=True).create(home)
    python = home / "bin" / "python"
    (site_packages,) = list(home.glob("lib/python*/site-packages"))
    (site_packages / "course_packages.pth").write_text(str(shared["packages"]) + "\n")
    return python, site_packages


def _kernel_manager(python: Path, spec_root: Path, name: str):
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import KernelManager

    spec_dir = spec_root / name
    spec_dir.mkdir(parents=True, exist_ok=True)
    spec = {
        "argv": [str(python), "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": f"fresh environment ({name})",
        "language": "python",
    }
    (spec_dir / "kernel.json").write_text(json.dumps(spec))
    specs = KernelSpecManager(kernel_dirs=[str(spec_root)], ensure_native_kernel=False)
    return KernelManager(kernel_name=name, kernel_spec_manager=specs)


def _kernel_env(shared: dict, python: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    env.update(
        {
            cn.SOURCE_VARIABLE: str(shared["wheel"]),
            "PIP_NO_INDEX": "1",  # the set-up cell's pip must not reach the network
            "PIP_DISABLE_PIP_VERSION_CHECK": "1",
            "PYTHONNOUSERSITE": "1",
            "VIRTUAL_ENV": str(python.parent.parent),
            "PATH": f"{python.parent}{os.pathsep}{env.get('PATH', '')}",
        }
    )
    threads = os.environ.get("NB_THREADS")  # set by the Makefile: cores per parallel notebook
    if threads:
        env.update({"OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads})
    return env


# --------------------------------------------------------------------------- the test


def test_fresh_environment_lacks_normlib(shared):
    """The premise: without its set-up cell, a notebook in a fresh environment cannot import
    normlib (but finds torch and the other pinned packages)."""
    python, _ = _fresh_environment(shared, "premise")
    gone = subprocess.run([str(python), "-c", "import normlib"], capture_output=True, text=True, cwd=ROOT / "chapters")
    assert gone.returncode != 0 and "No module named 'normlib'" in gone.stderr, gone.stderr
    found = subprocess.run(
        [str(python), "-c", "import torch, ipykernel, matplotlib; print(torch.__version__)"],
        capture_output=True, text=True,
    )  # fmt: skip
    assert found.returncode == 0, found.stderr


@pytest.mark.skipif(not NOTEBOOKS, reason="no course notebooks")
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[cn.relative(p) for p in NOTEBOOKS])
def test_notebook_runs_in_a_fresh_environment(path: Path, shared):
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    rel = cn.relative(path)
    slug = re.sub(r"[^A-Za-z0-9]+", "_", rel.removesuffix(".ipynb"))
    source_nb = nbformat.read(path, as_version=4)
    nb = copy.deepcopy(source_nb)
    python, site_packages = _fresh_environment(shared, slug)
    km = _kernel_manager(python, shared["run"] / "kernels", slug.lower())
    client = NotebookClient(
        nb, km=km, kernel_name=km.kernel_name, timeout=_cell_timeout(), allow_errors=False,
        record_timing=True, resources={"metadata": {"path": str(path.parent)}},
    )  # fmt: skip
    probe = nbformat.v4.new_code_cell("import normlib\nprint(normlib.__file__)")
    start = time.perf_counter()
    try:
        with client.setup_kernel(env=_kernel_env(shared, python)):
            info = client.wait_for_reply(client.kc.kernel_info())
            nb.metadata["language_info"] = info["content"]["language_info"]
            for index, cell in enumerate(nb.cells):
                client.execute_cell(cell, index, execution_count=client.code_cells_executed + 1)
            client.set_widgets_metadata()
            seconds = time.perf_counter() - start
            nb.cells.append(probe)  # nbclient writes a cell back by its index
            try:
                client.execute_cell(probe, len(nb.cells) - 1)
            finally:
                nb.cells.pop()
    except CellExecutionError as error:
        _record_time(slug, rel, time.perf_counter() - start, None, failed=True)
        pytest.fail(f"{rel} failed in a fresh environment:\n{error}", pytrace=False)

    # The set-up cell installed normlib into the fresh environment, and the notebook used it.
    imported_from = "".join(o.get("text", "") for o in probe.outputs if o.get("output_type") == "stream").strip()
    assert Path(imported_from).resolve().is_relative_to(site_packages.resolve()), (
        f"{rel}: normlib came from {imported_from!r}, not from the fresh environment's {site_packages}"
    )
    setup_cell = cn.first_code_cell(nb)
    setup_seconds = _cell_seconds(setup_cell)
    _record_time(slug, rel, seconds, setup_seconds, failed=False)
    _cache_for_the_book(path, source_nb, nb, seconds)


def _cell_seconds(cell) -> float | None:
    from datetime import datetime

    timing = (cell.get("metadata") or {}).get("execution") or {}
    try:
        busy = datetime.fromisoformat(timing["iopub.status.busy"].replace("Z", "+00:00"))
        idle = datetime.fromisoformat(timing["iopub.status.idle"].replace("Z", "+00:00"))
    except (KeyError, ValueError):
        return None
    return (idle - busy).total_seconds()


def _record_time(slug: str, rel: str, seconds: float, setup_seconds, failed: bool) -> None:
    TIMES_DIR.mkdir(parents=True, exist_ok=True)
    record = {"notebook": rel, "kind": cn.kind(ROOT / rel), "seconds": round(seconds, 2),
              "setup_seconds": None if setup_seconds is None else round(setup_seconds, 2),
              "failed": failed, "threads": os.environ.get("NB_THREADS")}  # fmt: skip
    (TIMES_DIR / f"{slug}.json").write_text(json.dumps(record))


def _cache_for_the_book(path: Path, source_nb, executed, seconds: float) -> None:
    """Store the outputs under the source notebook's key in the book's jupyter-cache.

    The key hashes the code cells' sources and metadata and the kernelspec, so the outputs are
    copied into the *source* notebook (nbclient adds timing metadata to the cells it runs)."""
    from jupyter_cache import get_cache
    from jupyter_cache.base import CacheBundleIn

    bundle = copy.deepcopy(source_nb)
    for key in ("language_info", "widgets"):
        if key in executed.metadata:
            bundle.metadata[key] = executed.metadata[key]
    setup_cell = cn.first_code_cell(executed)
    for mine, ran in zip(bundle.cells, executed.cells):
        if mine.cell_type != "code":
            continue
        outputs = ran.outputs
        if ran is setup_cell:
            # pip's note exists only where the cell installed normlib; a reader's local build,
            # where normlib is installed, shows nothing there. Anything else must be kept.
            extra = [
                o
                for o in outputs
                if not (o.get("output_type") == "stream" and o.get("text", "").strip() in ("", PIP_NOTE))
            ]
            assert not extra, f"{cn.relative(path)}: the set-up cell printed more than pip's note: {extra}"
            outputs = []
        mine.outputs, mine.execution_count = outputs, ran.execution_count
    with _locked(BUILD / ".jupyter_cache.lock"):
        cache = get_cache(str(CACHE_DIR))
        cache.cache_notebook_bundle(
            CacheBundleIn(bundle, str(path), data={"execution_seconds": round(seconds, 2)}),
            check_validity=True,
            overwrite=True,
        )
        assert cache.match_cache_notebook(source_nb) is not None  # the build will find it
