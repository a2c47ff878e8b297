"""The package's two halves stay apart: the layer library (normlib) never imports the lab
(normlib.lab) or a plotting, widget, data or progress-bar package, and works without them.

* every import statement (and every module name in a string) under normlib/, outside
  normlib/lab/ and the deprecation shim normlib/_moved.py, is checked;
* a fresh interpreter in which those packages cannot be imported builds and runs every layer
  and tool of the library;
* a virtual environment with the wheel installed by ``pip install --no-deps`` and none of the
  lab's packages imports normlib and runs a layer (the issue's "only torch and numpy");
* the package metadata lists matplotlib and the rest only under the ``lab`` extra;
* the old module names (normlib.data, ...) still work, with a DeprecationWarning.
"""

import ast
import json
import os
import subprocess
import sys
import textwrap
import venv
import warnings
from pathlib import Path

import pytest
import tomllib

import normlib

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "normlib"
# Top-level names of the packages only the lab may import.
LAB_ONLY = ("matplotlib", "ipywidgets", "IPython", "sklearn", "skimage", "mnist1d", "tqdm")
MOVED = ("data", "train", "models", "transformer", "probes", "invariance", "style", "viz", "exercises")


def _library_files():
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE)
        if rel.parts[0] == "lab" or rel.name == "_moved.py":
            continue
        yield path, rel


def _imported_modules(path: Path, rel: Path):
    """Absolute names of everything a file imports (relative imports resolved)."""
    package = ".".join(("normlib",) + rel.parent.parts)
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module
            yield module
            yield from (f"{module}.{alias.name}" for alias in node.names)


def test_the_library_imports_no_lab_and_no_plotting_package():
    offenders = []
    for path, rel in _library_files():
        for module in _imported_modules(path, rel):
            if module.split(".")[0] in LAB_ONLY or module.startswith("normlib.lab"):
                offenders.append(f"normlib/{rel}: imports {module}")
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and "normlib.lab" in node.value:
                if "import" in node.value or node.value.strip().startswith("normlib.lab"):
                    offenders.append(f"normlib/{rel}: names {node.value!r}")
    assert not offenders, "the layer library reaches into the lab:\n" + "\n".join(offenders)


def test_the_check_finds_an_offender(tmp_path):
    """The import walk above sees relative, absolute and nested imports (so it can fail)."""
    probe = tmp_path / "normlib" / "probe.py"
    probe.parent.mkdir()
    probe.write_text("from .lab import data\nimport matplotlib.pyplot\ndef f():\n    from tqdm import tqdm\n")
    found = set(_imported_modules(probe, Path("probe.py")))
    assert {"normlib.lab", "matplotlib.pyplot", "tqdm"} <= found


def test_lab_modules_stay_below_the_size_limit():
    """The lab's modules are split by subject before they grow past ~500 lines."""
    long = [
        f"{p.relative_to(ROOT)}: {n} lines"
        for p in sorted((PACKAGE / "lab").rglob("*.py"))
        if (n := len(p.read_text().splitlines())) > 500
    ]
    assert not long, long


# What the library offers, run where none of the lab's packages can be imported.
LIBRARY_SCRIPT = """
import importlib.abc, sys
import torch
before = set(sys.modules)
BLOCKED = {blocked!r}

class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED or name.startswith("normlib.lab"):
            raise ImportError(f"{{name}} is not installed here (the lab's packages are absent)")

sys.meta_path.insert(0, Block())
import normlib
from torch import nn

x = torch.randn(4, 6, 5, 5, requires_grad=True)
layers = [
    normlib.BatchNorm2d(6), normlib.InstanceNorm2d(6, affine=True), normlib.GroupNorm(3, 6),
    normlib.LayerNorm([5, 5]), normlib.RMSNorm(5), normlib.IBNorm(6),
]
for layer in layers:
    layer(x).sum().backward()
for name in normlib.NORM_NAMES:
    normlib.make_norm(name, 6, spatial_dims=0)(torch.randn(4, 6)) if name in ("rms", "ln", "bn", "none") else None
    normlib.make_norm(name, 6)(x) if name != "rms" else None
normlib.BatchNorm1d(6)(torch.randn(8, 6))
normlib.LayerNormLSTM(5, 7)(torch.randn(3, 2, 5))
normlib.weight_norm(nn.Linear(4, 3))(torch.randn(2, 4))
model = nn.Sequential(nn.Conv2d(6, 6, 3), nn.BatchNorm2d(6), nn.ReLU(inplace=True)).eval()
model = normlib.convert(model)
normlib.fold_bn(model)
normlib.recompute_bn_stats(model, [x.detach()])
normlib.diagnose(model, x.detach())
normlib.to_torch(model)
# (normlib.compiled and bench.traffic import torch._dynamo, which probes for scikit-learn with
# find_spec: they run in the environment below where the lab's packages are really absent.)
import normlib.bench
normlib.seed(0); normlib.device()
new = sorted(m for m in set(sys.modules) - before if m.split(".")[0] in BLOCKED or m.startswith("normlib.lab"))
print("NEW", new)
"""


def test_every_layer_and_tool_runs_without_the_lab_packages():
    script = LIBRARY_SCRIPT.format(blocked=list(LAB_ONLY))
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "NEW []" in done.stdout, done.stdout


def test_package_metadata_keeps_the_lab_packages_in_the_lab_extra():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    names = lambda reqs: {r.split(">")[0].split("=")[0].split("[")[0].strip().lower() for r in reqs}  # noqa: E731
    core = names(project["dependencies"])
    assert core <= {"torch", "numpy"}, core
    lab = names(project["optional-dependencies"]["lab"])
    assert {"matplotlib", "ipywidgets", "scikit-learn", "scikit-image", "mnist1d", "tqdm"} <= lab
    packages = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    found = sorted(
        ".".join(p.relative_to(ROOT).parts[:-1]) for p in PACKAGE.rglob("__init__.py") if "__pycache__" not in p.parts
    )
    assert sorted(packages) == found, "pyproject's packages must list every package folder (else pip drops it)"


@pytest.mark.notebooks
def test_wheel_installed_without_dependencies_works_in_an_env_without_the_lab(tmp_path):
    """`pip install --no-deps` of the wheel into a venv that sees torch and numpy (and what they
    need) but none of the lab's packages: import normlib and run a layer, forward and backward."""
    from fresh_env import build_wheel

    build_wheel(tmp_path / "wheel")
    (wheel,) = (tmp_path / "wheel").glob("normlib-*.whl")
    home = tmp_path / "env"
    venv.EnvBuilder(with_pip=False, symlinks=True).create(home)
    (site,) = list(home.glob("lib/python*/site-packages"))
    # torch, numpy and their own dependencies, linked from this environment; nothing of the lab
    shared = tmp_path / "shared"
    shared.mkdir()
    ours = Path(__import__("torch").__file__).parents[1]
    lab_dists = ("matplotlib", "ipywidgets", "scikit_learn", "sklearn", "scikit_image", "skimage", "mnist1d", "tqdm")
    for entry in ours.iterdir():
        name = entry.name.lower()
        if name.endswith(".pth") or name.startswith(("__editable__", "normlib")) or name.startswith(lab_dists):
            continue
        (shared / entry.name).symlink_to(entry)
    (site / "shared.pth").write_text(f"{shared}\n")
    python = home / "bin" / "python"
    pip = [sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps", "--no-index", str(wheel)]
    done = subprocess.run(pip, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    check = textwrap.dedent(
        """
        import importlib.util, json, torch, normlib
        missing = [m for m in ("matplotlib", "ipywidgets", "sklearn", "tqdm")
                   if importlib.util.find_spec(m) is not None]
        x = torch.randn(3, 4, 5, requires_grad=True)
        normlib.LayerNorm(5)(x).sum().backward()
        model = normlib.convert(torch.nn.Sequential(torch.nn.Conv1d(4, 4, 1), torch.nn.BatchNorm1d(4)))
        normlib.fold_bn(model.eval())
        normlib.compiled(model)  # builds the compiled wrapper (compiles on first call)
        import normlib.bench
        normlib.bench.traffic(lambda: normlib.functional.layer_norm(x, (5,)), x.numel())
        print(json.dumps({"file": normlib.__file__, "present": missing}))
        """
    )
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    done = subprocess.run(
        [str(python), "-c", check], capture_output=True, text=True, env=env, timeout=300, cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["present"] == [], f"lab packages visible in the test env: {report['present']}"
    assert str(home) in report["file"], report


@pytest.mark.parametrize("name", MOVED)
def test_old_module_names_still_work_with_a_deprecation_warning(name):
    import importlib

    new = importlib.import_module(f"normlib.lab.{name}")
    normlib.__dict__.pop(name, None)  # an earlier access caches the attribute
    sys.modules.pop(f"normlib.{name}", None)
    with pytest.warns(DeprecationWarning, match=rf"normlib\.{name} moved to normlib\.lab\.{name}"):
        assert getattr(normlib, name) is new
    sys.modules.pop(f"normlib.{name}", None)
    with pytest.warns(DeprecationWarning, match=f"normlib.lab.{name}"):
        assert importlib.import_module(f"normlib.{name}") is new
    assert new.__name__ == f"normlib.lab.{name}"  # the module keeps its new name


def test_import_normlib_loads_no_lab_module():
    script = "import torch, sys; before = set(sys.modules); import normlib; print(sorted(set(sys.modules) - before))"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    with warnings.catch_warnings():
        done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    loaded = ast.literal_eval(done.stdout.strip())
    bad = [m for m in loaded if m.startswith("normlib.lab") or m.split(".")[0] in LAB_ONLY]
    assert not bad, bad
