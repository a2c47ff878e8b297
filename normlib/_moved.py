"""The old names of the modules that moved into :mod:`normlib.lab`, kept for one release.

``normlib.data``, ``normlib.train``, ``normlib.models``, ``normlib.transformer``,
``normlib.probes``, ``normlib.invariance``, ``normlib.style``, ``normlib.viz`` and
``normlib.exercises`` now live in :mod:`normlib.lab`. Every old spelling still works --
``normlib.viz.color``, ``from normlib import data``, ``import normlib.models``,
``from normlib.train import fit`` -- and gives the very module under its new name, with a
:class:`DeprecationWarning` that says where it went. Nothing is imported until an old name is
used, so ``import normlib`` loads no lab module (and no matplotlib).

This is the one module of the layer library that names the lab, by strings only.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
import warnings

MOVED = ("data", "train", "models", "transformer", "probes", "invariance", "style", "viz", "exercises")


def _warn(old: str, new: str) -> None:
    warnings.warn(
        f"{old} moved to {new}: import it from there (e.g. `from normlib.lab import {new.rsplit('.', 1)[-1]}`); "
        f"the old name will be removed in the next release",
        DeprecationWarning,
        stacklevel=3,
    )


class _MovedModuleFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """``import normlib.<old>``: the module ``normlib.lab.<old>``, registered under both names."""

    def __init__(self, package: str):
        self.package = package

    def _new_name(self, fullname: str):
        prefix = self.package + "."
        if not fullname.startswith(prefix):
            return None
        first, _, rest = fullname[len(prefix) :].partition(".")
        if first not in MOVED:
            return None
        return f"{self.package}.lab.{first}" + (f".{rest}" if rest else "")

    def find_spec(self, fullname, path=None, target=None):
        new = self._new_name(fullname)
        return None if new is None else importlib.util.spec_from_loader(fullname, self)

    def create_module(self, spec):
        new = self._new_name(spec.name)
        _warn(spec.name, new)
        # The moved module itself: its __name__ and __spec__ stay those of its new place.
        return importlib.import_module(new)

    def exec_module(self, module):
        pass  # already executed under its new name


def install(package: str):
    """Register the import hook for ``package`` and return the package's ``__getattr__``."""
    if not any(isinstance(f, _MovedModuleFinder) and f.package == package for f in sys.meta_path):
        sys.meta_path.append(_MovedModuleFinder(package))

    def __getattr__(name: str):
        if name in MOVED:
            _warn(f"{package}.{name}", f"{package}.lab.{name}")
            module = importlib.import_module(f"{package}.lab.{name}")
            setattr(sys.modules[package], name, module)  # warn once, not on every access
            return module
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    return __getattr__
