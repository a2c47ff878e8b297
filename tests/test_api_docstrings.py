"""normlib's docstrings render as meant in the API reference (appendices/api.rst).

autodoc hands each docstring to napoleon (Google style) and then to docutils. An indented
block after a line that does not end in ``::`` becomes a block quote: its lines run
together into one paragraph and ``--quick`` becomes an en dash, so a command copied from the
page fails. "``num_features: C.``" in an Args section becomes a list item lettered C with an
empty description. A ``#:`` comment whose first line has a colon is split by napoleon into
a "Type:" and a description. These tests parse the docstrings the way the build does.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import pkgutil
import warnings

import docutils.core
import docutils.nodes
import pytest
from sphinx.ext.napoleon import Config
from sphinx.ext.napoleon.docstring import GoogleDocstring
from sphinx.pycode import ModuleAnalyzer
from sphinx.util.inspect import object_description

import normlib
from normlib import bench

NAPOLEON = Config(napoleon_numpy_docstring=False)


def _modules():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for info in pkgutil.walk_packages(normlib.__path__, "normlib."):
            if "_moved" not in info.name:
                yield importlib.import_module(info.name)


def _own_objects(module):
    for name, obj in vars(module).items():
        if (inspect.isclass(obj) or inspect.isfunction(obj)) and obj.__module__ == module.__name__:
            yield f"{module.__name__}.{name}", obj


def _docstrings():
    """(qualified name, docstring) of every module, class, function and method of normlib."""
    for module in _modules():
        yield module.__name__, module.__doc__
        for name, obj in _own_objects(module):
            yield name, obj.__doc__
            if inspect.isclass(obj):
                for attr, value in vars(obj).items():
                    value = value.fget if isinstance(value, property) else getattr(value, "__func__", value)
                    if inspect.isfunction(value):
                        yield f"{name}.{attr}", value.__doc__


def doctree(docstring: str, what: str = "function"):
    """The docutils tree of ``docstring`` after napoleon, as the book's build parses it."""
    text = "\n".join(GoogleDocstring(inspect.cleandoc(docstring), NAPOLEON, what=what).lines())
    return docutils.core.publish_doctree(text, settings_overrides={"report_level": 5, "halt_level": 5})


def test_indented_blocks_are_literal_blocks_and_args_are_not_lists():
    quoted, lettered = [], []
    for name, doc in _docstrings():
        if not doc:
            continue
        tree = doctree(doc)
        quoted += [f"{name}: {node.astext()[:60]!r}" for node in tree.findall(docutils.nodes.block_quote)]
        lettered += [name for node in tree.findall(docutils.nodes.enumerated_list) if node["enumtype"] != "arabic"]
    assert not quoted, "indented blocks without '::' (they render as run-together paragraphs):\n" + "\n".join(quoted)
    assert not lettered, f"an Args line read as a lettered list (e.g. 'num_features: C.'): {lettered}"


def test_bench_usage_is_a_literal_block_with_the_real_commands():
    """Each command line of the usage block survives as typed (no en dash for ``--``)."""
    blocks = [node.astext() for node in doctree(bench.__doc__).findall(docutils.nodes.literal_block)]
    assert blocks, "no literal block in normlib.bench's docstring"
    commands = blocks[0].splitlines()
    assert "python -m normlib.bench --quick" in commands, commands
    assert "python -m normlib.bench --device cpu --threads 1 --clock cpu" in commands
    assert "the shapes Chapter 11 uses" in blocks[0] and "issue" not in bench.__doc__


def test_literal_blocks_fit_their_box():
    """A literal block does not wrap: tests/test_browser.py fails a line wider than its box,
    which inside an API entry holds about 75 characters at the book's 13 px."""
    wide = []
    for name, doc in _docstrings():
        for node in doctree(doc or "").findall(docutils.nodes.literal_block):
            wide += [f"{name}: {line!r}" for line in node.astext().splitlines() if len(line) > 72]
    assert not wide, "\n".join(wide)


def test_attribute_comments_have_no_napoleon_type_field():
    """``#: The panels of :func:`gain_frame`: (...)`` showed "Type: The panels of gain_frame()"."""
    typed = []
    for module in _modules():
        for (_, attr), comment in ModuleAnalyzer.for_module(module.__name__).find_attr_docs().items():
            lines = GoogleDocstring(list(comment), NAPOLEON, what="data", name=attr).lines()
            typed += [f"{module.__name__}.{attr}" for line in lines if line.lstrip().startswith(":type:")]
    assert not typed, typed


def _public_callables():
    for module in _modules():
        for name in getattr(module, "__all__", []):
            obj = getattr(module, name)
            if inspect.isclass(obj) or inspect.isfunction(obj):
                yield f"{module.__name__}.{name}", obj


def test_signatures_show_short_readable_defaults():
    """No ``<factory>`` (dataclass fields), ``<lambda>`` or whole lists of cases in a signature."""
    bad = []
    for name, obj in _public_callables():
        try:
            signature = inspect.signature(obj)
        except (TypeError, ValueError):
            continue
        for parameter in signature.parameters.values():
            if parameter.default is inspect.Parameter.empty:
                continue
            shown = object_description(parameter.default)
            if "<factory>" in shown or "<lambda>" in shown or len(shown) > 60:
                bad.append(f"{name}({parameter.name}={shown[:60]})")
    assert not bad, bad


@pytest.mark.parametrize("cls", [normlib.bn_tools.FoldReport, importlib.import_module("normlib.lab.train").History])
def test_dataclass_signature_defaults_are_the_empty_values(cls):
    """The shown defaults are what a fresh instance holds, and the dataclass still builds them fresh."""
    shown = {p.name: p.default for p in inspect.signature(cls).parameters.values()}
    fresh = cls()
    assert shown == {f.name: getattr(fresh, f.name) for f in dataclasses.fields(cls)}
    assert all(
        getattr(fresh, f.name) is not getattr(cls(), f.name) for f in dataclasses.fields(cls) if shown[f.name] == []
    )


def test_measure_defaults_to_the_chapter_11_cases():
    assert inspect.signature(bench.measure).parameters["cases"].default is None
    assert "defaults to :data:`CASES`" in bench.measure.__doc__


def test_bench_case_signature_shows_types_not_strings():
    """bench.py postpones its annotations, and the API page printed Case's signature with the
    types in quotes ('str', 'Callable[[], nn.Module]'): Case carries a signature with the
    annotations evaluated."""
    annotations = [p.annotation for p in inspect.signature(bench.Case).parameters.values()]
    assert annotations and not any(isinstance(a, str) for a in annotations), annotations
