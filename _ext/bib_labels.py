"""Sphinx extension: bibliography labels that keep a lettered year's letter.

Two papers with the same first author and year carry a letter in ``references.bib``
(``year = {2020a}``), so that the author-year citations in the text tell them apart. The
bibliography lists entries under pybtex's ``alpha`` labels, which take the last two
characters of the year: "2020a" would give [LJH+0a]. The ``alpha_lettered`` style registered
here labels it [LJH+20a]; every other label is ``alpha``'s. ``_config.yml`` selects it
(``bibtex_default_style``).
"""

from __future__ import annotations

import re

from pybtex.plugin import register_plugin
from pybtex.style.formatting.alpha import Style as AlphaStyle
from pybtex.style.labels.alpha import LabelStyle as AlphaLabels

LETTERED_YEAR = re.compile(r"(\d{2,4})([a-z])")


class LetteredYearLabels(AlphaLabels):
    """``alpha`` labels, with a year such as "2020a" shortened to "20a" (not "0a")."""

    def format_label(self, entry):
        label = super().format_label(entry)
        match = LETTERED_YEAR.fullmatch(entry.fields.get("year", ""))
        if match is None:
            return label
        digits, letter = match.groups()
        return label[:-2] + digits[-2:] + letter


class LetteredYearStyle(AlphaStyle):
    """pybtex's ``alpha`` formatting style with :class:`LetteredYearLabels`."""

    default_label_style = "alpha_lettered"


def register() -> None:
    """Make both known to pybtex under the name ``alpha_lettered`` (idempotent)."""
    register_plugin("pybtex.style.labels", "alpha_lettered", LetteredYearLabels, force=True)
    register_plugin("pybtex.style.formatting", "alpha_lettered", LetteredYearStyle, force=True)


def setup(app):
    register()
    return {"parallel_read_safe": True, "parallel_write_safe": True}
