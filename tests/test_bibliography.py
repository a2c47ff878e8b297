"""The bibliography's author-year labels tell every entry apart.

The book cites with sphinxcontrib-bibtex's ``author_year`` style (``_config.yml``): a citation
reads "Surname et al. 2020". Two papers by the same first author in the same year would then
render alike, and a reader could not tell which one a sentence cites; such pairs carry a
letter in their year field (2020a, 2020b), as the printed literature does.
"""

from collections import defaultdict
from pathlib import Path

from pybtex.database import parse_file

ROOT = Path(__file__).resolve().parents[1]


def label(entry) -> str:
    """The text an author_year citation shows: one or two surnames, or the first and "et al."."""
    people = entry.persons["author"]
    surnames = [" ".join(p.last_names) for p in people]
    if len(surnames) == 1:
        names = surnames[0]
    elif len(surnames) == 2:
        names = f"{surnames[0]} and {surnames[1]}"
    else:
        names = f"{surnames[0]} et al."
    return f"{names} {entry.fields['year']}"


def test_author_year_labels_are_unique():
    entries = parse_file(ROOT / "references.bib").entries
    keys_by_label = defaultdict(list)
    for key, entry in entries.items():
        keys_by_label[label(entry)].append(key)
    clashes = {text: keys for text, keys in keys_by_label.items() if len(keys) > 1}
    assert not clashes, f"entries that would cite alike (give their years a letter, 2020a/2020b): {clashes}"


def test_a_letter_in_a_year_is_there_to_tell_two_entries_apart():
    entries = parse_file(ROOT / "references.bib").entries
    plain = defaultdict(list)  # the label each entry would have without its letter
    for key, entry in entries.items():
        year = entry.fields["year"]
        plain[label(entry).removesuffix(year) + year.rstrip("abcdefgh")].append(year)
    lettered = {text: years for text, years in plain.items() if any(not y.isdigit() for y in years)}
    assert lettered, "no lettered years: the clash test has nothing to check here"
    for text, years in lettered.items():
        assert len(years) > 1 and len(set(years)) == len(years), (text, years)


def alpha_labels() -> dict:
    """{key: label} as the bibliography page shows them (the style ``_config.yml`` names,
    ``alpha_lettered`` of _ext/bib_labels.py: e.g. [HGDG17] for He, Gkioxari, Dollár and
    Girshick 2017)."""
    import sys

    import yaml
    from pybtex.plugin import find_plugin

    sys.path.insert(0, str(ROOT / "_ext"))
    try:
        import bib_labels
    finally:
        sys.path.remove(str(ROOT / "_ext"))
    bib_labels.register()
    config = yaml.safe_load((ROOT / "_config.yml").read_text(encoding="utf-8"))
    style_name = config["sphinx"]["config"]["bibtex_default_style"]
    assert "bib_labels" in config["sphinx"]["config"]["extensions"]
    style = find_plugin("pybtex.style.formatting", style_name)()
    entries = parse_file(ROOT / "references.bib").entries
    return {entry.key: entry.label for entry in style.format_entries(entries.values())}


def test_a_corporate_author_is_labelled_and_sorted_by_its_name():
    """{{NVIDIA Corporation}}: [NVI21], listed among the N's, not after Z by its brace."""
    labels = alpha_labels()
    assert labels["nvidia2021a100"] == "NVI21" and labels["paszke2019pytorch"] == "PyT24"
    names = list(labels.values())  # in the bibliography's order
    initials = [name[0].upper() for name in names]
    assert initials == sorted(initials), names


def test_alpha_labels_are_the_authors_initials():
    """A LaTeX accent in a name leaks into the label ("Doll{\\'a}r" gave [HGDollarG17]):
    names are written in Unicode, and an entry of two to four authors gets one letter per
    author (the first letter of each surname)."""
    source = (ROOT / "references.bib").read_text(encoding="utf-8")
    authors = [line for line in source.splitlines() if line.strip().startswith("author")]
    assert not [line for line in authors if "\\" in line], "write accented names in Unicode"
    labels = alpha_labels()
    assert labels["he2017mask"] == "HGDG17" and labels["lecun1998efficient"] == "LBOM98"
    for key, entry in parse_file(ROOT / "references.bib").entries.items():
        surnames = [" ".join(p.last_names) for p in entry.persons["author"]]
        if 2 <= len(surnames) <= 4 and "others" not in surnames:
            initials = "".join(name[0] for name in surnames)
            assert labels[key].startswith(initials) and labels[key][len(initials)].isdigit(), (key, labels[key])


def test_a_lettered_year_keeps_its_letter_in_the_label():
    """alpha takes the year's last two characters ("2020a" -> [LJH+0a]); the labels keep the
    year's last two digits and the letter, and no two entries share a label."""
    labels = alpha_labels()
    assert labels["liu2020variance"] == "LJH+20a" and labels["liu2020understanding"] == "LLG+20b"
    assert labels["luo2019switchable"] == "LRP+19a" and labels["luo2019towards"] == "LWSP19b"
    assert len(set(labels.values())) == len(labels), "two entries share a label"
