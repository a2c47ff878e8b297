"""Fresh virtual environments without normlib, as a reader's Colab runtime is.

Used by the course's notebook executor (tests/nbval_course.py, the nbval plugin of
`make test-notebooks`) and by its tests. Not a test module.

* ``prepare(fresh_dir, run_id)`` makes, once per test run (under a lock shared by the
  pytest-xdist workers), what every fresh environment of the run shares: a wheel of normlib
  built from this checkout, and a folder of links to .venv's site-packages without normlib.
* ``create(shared, name)`` makes a new virtual environment whose interpreter sees those
  packages (named in a .pth file) but not normlib: .venv's editable install of normlib lives in
  .pth files of its own, which Python does not process in a folder that a .pth file adds. So
  `import normlib` fails at first, as in Colab, and a notebook's set-up cell must install it.
* ``kernel_env(shared, python)`` is the kernel's environment: $NORMLIB_INSTALL_SOURCE points
  the set-up cell's install at the wheel, pip runs with --no-index (nothing comes from the
  network), and torch gets $NB_THREADS threads (the Makefile's share of the cores).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import shutil
import subprocess
import sys
import venv
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT / "scripts") not in sys.path:
    sys.path.insert(0, str(ROOT / "scripts"))
import course_notebooks as cn  # noqa: E402


@dataclass(frozen=True)
class Shared:
    run: Path  # this test run's folder
    wheel: Path  # normlib, built from the working tree
    packages: Path  # links to .venv's site-packages, without normlib


@contextlib.contextmanager
def locked(path: Path):
    """An exclusive lock shared by the pytest-xdist workers."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def cell_timeout(root: Path = ROOT) -> int:
    """Seconds a cell may run: `execute.timeout` in _config.yml, as in the book build."""
    import yaml

    config = yaml.safe_load((root / "_config.yml").read_text(encoding="utf-8")) or {}
    return int((config.get("execute") or {}).get("timeout") or 120)


def prepare(fresh_dir: Path, run_id: str) -> Shared:
    """The wheel and the package links of this run, made by the first worker that asks.

    The first worker of a new run also removes the environments of earlier runs."""
    run = fresh_dir / run_id
    with locked(fresh_dir / ".lock"):
        if not (run / "ready").exists():
            for old in fresh_dir.iterdir():
                if old.is_dir():
                    shutil.rmtree(old, ignore_errors=True)
            build_wheel(run / "wheel")
            link_packages(run / "packages")
            (run / "ready").write_text("")
    wheels = sorted((run / "wheel").glob("normlib-*.whl"))
    assert len(wheels) == 1, wheels
    return Shared(run=run, wheel=wheels[0], packages=run / "packages")


def build_wheel(out: Path) -> None:
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


def link_packages(folder: Path) -> None:
    """Links to every entry of .venv's site-packages except normlib and every .pth file."""
    import site

    folder.mkdir(parents=True)
    (site_packages,) = [Path(p) for p in site.getsitepackages() if Path(p).name == "site-packages"][:1]
    for entry in site_packages.iterdir():
        name = entry.name
        if name.endswith(".pth") or name.startswith("__editable__") or re.match(r"normlib([-.]|$)", name):
            continue
        (folder / name).symlink_to(entry)


def create(shared: Shared, name: str) -> tuple[Path, Path]:
    """A new virtual environment of this run: (its python, its site-packages)."""
    home = shared.run / "envs" / name
    shutil.rmtree(home, ignore_errors=True)
    venv.EnvBuilder(with_pip=False, symlinks=True, clear=True).create(home)
    python = home / "bin" / "python"
    (site_packages,) = list(home.glob("lib/python*/site-packages"))
    (site_packages / "course_packages.pth").write_text(str(shared.packages) + "\n")
    return python, site_packages


def kernel_manager(python: Path, spec_root: Path, name: str):
    """A (not yet started) KernelManager whose kernel is ``python``'s ipykernel."""
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


def kernel_env(shared: Shared, python: Path) -> dict:
    """The environment of a kernel in the fresh environment of ``python``."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    env.update(
        {
            cn.SOURCE_VARIABLE: shared.wheel.as_uri(),  # the set-up cell installs "normlib[lab] @ <URL>"
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
