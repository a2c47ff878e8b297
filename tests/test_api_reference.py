"""The API reference (appendices/api.rst) has an entry for every public name of normlib.

The names come from the code: ``normlib.__all__`` and ``normlib.functional.__all__``. A name
added there without an autodoc entry on the page fails ``test_every_public_name_has_an_entry``
(the strict build fails too: the page's summary table links to every name of
``normlib.__all__``). An entry is an explicit ``.. autoclass::``/``autofunction::``/``autodata::``
line, or an ``.. automodule::`` whose members (its ``__all__``, as autodoc lists them) include
the name. When the book has been built since the page and normlib last changed, the built
HTML is checked too: there every name must have its anchor.
"""

from __future__ import annotations

import importlib
import inspect
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
API_PAGE = ROOT / "appendices" / "api.rst"
API_HTML = ROOT / "_build" / "html" / "appendices" / "api.html"

_DIRECTIVE = re.compile(r"^\.\. (?P<kind>auto\w+|currentmodule|autosummary-all):: *(?P<target>\S+) *$")
_OPTION = re.compile(r"^\s+:(?P<name>[\w-]+):(?P<value>.*)$")


def entries(source: str) -> list[tuple[str, str, dict[str, str]]]:
    """The page's directives as (kind, full target name, options), in order."""
    found: list[tuple[str, str, dict[str, str]]] = []
    module = ""
    for line in source.splitlines():
        match = _DIRECTIVE.match(line)
        if match:
            kind, target = match["kind"], match["target"]
            if kind in ("currentmodule", "automodule"):
                module = target
            elif "." not in target and module:
                target = f"{module}.{target}"
            found.append((kind, target, {}))
            continue
        option = _OPTION.match(line)
        if option and found:
            found[-1][2][option["name"]] = option["value"].strip()
    return found


def _names(value: str) -> set[str]:
    return {name.strip() for name in value.split(",") if name.strip()}


def automodule_members(options: dict[str, str], public: list[str]) -> set[str]:
    """The names an ``automodule`` entry documents, as autodoc chooses them from ``__all__``."""
    if "no-members" in options:
        return set()
    if options.get("members"):  # an explicit list
        return _names(options["members"])
    return set(public) - _names(options.get("exclude-members", ""))


def undocumented(full_names: list[str], source: str) -> list[str]:
    """The names of ``full_names`` that no entry of ``source`` documents."""
    found = entries(source)
    explicit = {target for kind, target, _ in found if kind not in ("currentmodule", "autosummary-all")}
    missing = []
    for full in full_names:
        if full in explicit:
            continue
        module_name, _, name = full.rpartition(".")
        covered = False
        for kind, target, options in found:
            if kind == "automodule" and target == module_name:
                public = list(getattr(importlib.import_module(module_name), "__all__", []))
                covered = covered or name in automodule_members(options, public)
        if not covered:
            missing.append(full)
    return missing


def public_names() -> list[str]:
    import normlib
    import normlib.functional

    return [f"normlib.{n}" for n in normlib.__all__] + [f"normlib.functional.{n}" for n in normlib.functional.__all__]


def test_every_public_name_has_an_entry():
    missing = undocumented(public_names(), API_PAGE.read_text(encoding="utf-8"))
    assert not missing, (
        f"public names without an entry in {API_PAGE.relative_to(ROOT)}: {missing}. Add one line to "
        "the matching group, e.g. `.. autoclass:: normlib.NewNorm2d`"
    )


def test_automodule_members_have_docstrings():
    """autodoc skips a function or class without a docstring, even when it is in __all__."""
    import normlib.functional

    bare = [
        name
        for name in normlib.functional.__all__
        if (inspect.isroutine(obj := getattr(normlib.functional, name)) or inspect.isclass(obj))
        and not (obj.__doc__ or "").strip()
    ]
    assert not bare, f"normlib.functional names without a docstring (the API page would skip them): {bare}"


def _built_page_is_current() -> bool:
    if not API_HTML.is_file():
        return False
    built = API_HTML.stat().st_mtime
    sources = [API_PAGE, *(ROOT / "normlib").rglob("*.py")]
    return all(path.stat().st_mtime <= built for path in sources)


def test_built_page_has_an_anchor_for_every_public_name():
    if not _built_page_is_current():
        pytest.skip(f"{API_HTML.relative_to(ROOT)} is missing or older than the page or normlib: build the book")
    html = API_HTML.read_text(encoding="utf-8")
    missing = [n for n in public_names() if f'id="{n}"' not in html and f'id="module-{n}"' not in html]
    assert not missing, f"no entry for {missing} in the built {API_HTML.relative_to(ROOT)}"


def test_the_check_can_fail():
    page = """
.. automodule:: normlib
   :no-members:

.. autoclass:: normlib.BatchNorm1d
.. currentmodule:: normlib
.. autofunction:: seed

.. automodule:: normlib.functional
   :exclude-members: adain
"""
    assert undocumented(["normlib.BatchNorm1d", "normlib.seed", "normlib.functional.normalize"], page) == []
    assert undocumented(["normlib.BatchNorm2d"], page) == ["normlib.BatchNorm2d"]  # no entry
    assert undocumented(["normlib.functional.adain"], page) == ["normlib.functional.adain"]  # excluded
    assert undocumented(["normlib.device"], page) == ["normlib.device"]  # automodule without members
    only = ".. automodule:: normlib.functional\n   :members: normalize\n"
    assert undocumented(["normlib.functional.layer_norm"], only) == ["normlib.functional.layer_norm"]


def test_summary_table_lists_the_public_names():
    """The page's `autosummary-all` table (_ext/api_reference.py) follows __all__."""
    sys.path.insert(0, str(ROOT / "_ext"))
    try:
        api_reference = importlib.import_module("api_reference")
    finally:
        sys.path.remove(str(ROOT / "_ext"))
    import normlib

    assert api_reference.public_names("normlib") == [n for n in normlib.__all__ if not n.startswith("_")]
    assert "_animation_html" not in api_reference.public_names("normlib.lab.viz")
    assert "color" not in api_reference.public_names("normlib.lab.viz", exclude=["color"])
