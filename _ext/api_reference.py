"""Sphinx extension for the API reference (appendices/api.rst), which autodoc writes.

* ``autosummary-all``: an autosummary table of a module's ``__all__``, so that the page's
  summary tables come from the code instead of a hand-kept list::

      .. autosummary-all:: normlib

  is ``.. autosummary::`` with one row per name in ``normlib.__all__`` (in that order, minus
  names that start with an underscore and those given in ``:exclude:``). Each row links to the
  name's autodoc entry, so a name added to ``__all__`` without an entry on the page is an
  unresolved reference, and the strict build (``-n -W``) fails until the entry is added.

* Documented constants re-exported by a package (``normlib.lab.viz`` re-exports
  ``METHOD_COLORS`` from ``normlib.lab.viz.style``): autodoc reads a constant's ``#:`` comment
  only in the module being documented, so it would skip them as undocumented. Here the comment
  is looked up in the package's submodule that defines the constant.

* The lab's figure helpers annotate with ``"matplotlib.figure.Figure"``; that forward reference
  evaluates only once ``matplotlib.figure`` is imported, and autodoc shows every annotation of a
  signature as an unresolved name when one of them does not evaluate.
"""

from __future__ import annotations

import importlib
import inspect
import sys

from docutils.parsers.rst import directives
from docutils.statemachine import StringList
from sphinx.errors import PycodeError
from sphinx.ext.autodoc import DataDocumenter, ModuleDocumenter
from sphinx.ext.autosummary import Autosummary
from sphinx.pycode import ModuleAnalyzer

_MISSING = object()


def public_names(module_name: str, exclude=()) -> list[str]:
    """``module.__all__`` without private and excluded names, in ``__all__``'s order."""
    module = importlib.import_module(module_name)
    names = getattr(module, "__all__", None)
    if names is None:
        raise ValueError(f"autosummary-all: {module_name} has no __all__")
    return [n for n in names if not n.startswith("_") and n not in set(exclude)]


class AutosummaryAll(Autosummary):
    required_arguments = 1
    has_content = False
    option_spec = {
        "nosignatures": directives.flag,
        "exclude": lambda arg: [n.strip() for n in (arg or "").split(",") if n.strip()],
    }

    def run(self):
        module_name = self.arguments[0].strip()
        names = public_names(module_name, self.options.get("exclude", ()))
        source, _ = self.get_source_info()
        # Autosummary wants names relative to the current module when they are in it.
        prefix = "" if self.env.ref_context.get("py:module") == module_name else f"~{module_name}."
        self.content = StringList([prefix + name for name in names], source=source)
        return super().run()


def reexported_comment(module_name: str, name: str) -> list[str] | None:
    """The ``#:`` comment of ``name`` in the submodule of package ``module_name`` defining it."""
    module = sys.modules.get(module_name)
    value = getattr(module, name, _MISSING)
    if module is None or value is _MISSING or not hasattr(module, "__path__"):
        return None
    for sub_name, sub in list(sys.modules.items()):
        if not sub_name.startswith(module_name + ".") or getattr(sub, name, _MISSING) is not value:
            continue
        try:
            comment = ModuleAnalyzer.for_module(sub_name).find_attr_docs().get(("", name))
        except PycodeError:
            continue
        if comment:
            return list(comment)
    return None


class ReexportedDataDocumenter(DataDocumenter):
    """autodata that also finds the ``#:`` comment of a re-exported constant."""

    priority = DataDocumenter.priority + 1

    @classmethod
    def can_document_member(cls, member, membername, isattr, parent) -> bool:
        if super().can_document_member(member, membername, isattr, parent):
            return True
        if not isinstance(parent, ModuleDocumenter):
            return False
        if membername:  # a member of a module that autodoc documents
            return bool(reexported_comment(parent.modname, membername))
        # autosummary asks with no name: a module-level constant (not a function, class, module)
        return not (inspect.isroutine(member) or inspect.isclass(member) or inspect.ismodule(member))

    def get_module_comment(self, attrname: str) -> list[str] | None:
        return super().get_module_comment(attrname) or reexported_comment(self.modname, attrname)


def keep_documented_reexports(app, what, name, obj, skip, options):
    """Keep a module member that autodoc skips for want of a comment it does have."""
    module_name = app.env.temp_data.get("autodoc:module")
    if not (skip and what == "module" and module_name):
        return None
    public = getattr(sys.modules.get(module_name), "__all__", ())
    if name in public and not name.startswith("_") and reexported_comment(module_name, name):
        return False
    return None


def setup(app):
    import matplotlib.figure  # noqa: F401  (see the module docstring)

    app.setup_extension("sphinx.ext.autodoc")
    app.setup_extension("sphinx.ext.autosummary")
    app.add_directive("autosummary-all", AutosummaryAll)
    app.add_autodocumenter(ReexportedDataDocumenter, override=True)
    app.connect("autodoc-skip-member", keep_documented_reexports)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
