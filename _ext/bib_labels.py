"""Sphinx extension: the bibliography's labels and order, pybtex's ``alpha`` with two repairs.

* Two papers with the same first author and year carry a letter in ``references.bib``
  (``year = {2020a}``), so that the author-year citations in the text tell them apart.
  ``alpha`` takes the last two characters of the year: "2020a" would give [LJH+0a]; here
  [LJH+20a].
* A corporate author is written in braces (``author = {{NVIDIA Corporation}}``) so that
  pybtex does not split it into first and last names. ``alpha`` would label it with the
  whole name, [NVIDIACorporation21], and sort it by its opening brace, after Z; here it is
  [NVI21], sorted under N.

Every other label and position is ``alpha``'s. The style is registered as
``alpha_lettered``; ``_config.yml`` selects it (``bibtex_default_style``).
"""

from __future__ import annotations

import re

from pybtex.plugin import register_plugin
from pybtex.style.formatting.alpha import Style as AlphaStyle
from pybtex.style.labels.alpha import LabelStyle as AlphaLabels
from pybtex.style.sorting.author_year_title import SortingStyle as AuthorYearTitle

LETTERED_YEAR = re.compile(r"(\d{2,4})([a-z])")


def _corporate(persons) -> str:
    """The name of a single braced (corporate) author, without its braces, or ""."""
    if len(persons) != 1 or persons[0].first_names or persons[0].middle_names:
        return ""
    name = " ".join(persons[0].last_names)
    return name[1:-1] if name.startswith("{") and name.endswith("}") else ""


class LetteredYearLabels(AlphaLabels):
    """``alpha`` labels, with a year such as "2020a" shortened to "20a" (not "0a"), and a
    corporate author's label its first three letters, as alpha.bst does for one author."""

    def format_lab_names(self, persons):
        corporate = _corporate(persons)
        if corporate:
            return "".join(ch for ch in corporate if ch.isalnum())[:3]
        return super().format_lab_names(persons)

    def format_label(self, entry):
        label = super().format_label(entry)
        match = LETTERED_YEAR.fullmatch(entry.fields.get("year", ""))
        if match is None:
            return label
        digits, letter = match.groups()
        return label[:-2] + digits[-2:] + letter


class PlainAuthorOrder(AuthorYearTitle):
    """``alpha``'s order (author, year, title), a corporate author sorted without its braces."""

    def person_key(self, person):
        return super().person_key(person).replace("{", "").replace("}", "")


class LetteredYearStyle(AlphaStyle):
    """pybtex's ``alpha`` formatting style with :class:`LetteredYearLabels` and
    :class:`PlainAuthorOrder`."""

    default_label_style = "alpha_lettered"
    default_sorting_style = "alpha_lettered"


def register() -> None:
    """Make the three styles known to pybtex under the name ``alpha_lettered`` (idempotent)."""
    register_plugin("pybtex.style.labels", "alpha_lettered", LetteredYearLabels, force=True)
    register_plugin("pybtex.style.sorting", "alpha_lettered", PlainAuthorOrder, force=True)
    register_plugin("pybtex.style.formatting", "alpha_lettered", LetteredYearStyle, force=True)


def setup(app):
    register()
    return {"parallel_read_safe": True, "parallel_write_safe": True}
