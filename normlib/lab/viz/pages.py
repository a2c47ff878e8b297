"""Tables and source listings for a notebook page."""

from __future__ import annotations

from typing import Sequence

# --------------------------------------------------------------------------- tables


def markdown_table(header: Sequence[str], rows: Sequence[Sequence], align: str | None = None):
    """A small table as ``IPython.display.Markdown`` (the book does not depend on pandas).

    ``rows`` hold any values (formatted with ``str``); ``align`` is one letter per column,
    "l", "c" or "r" (default: first column left, the others right).
    """
    from IPython.display import Markdown

    align = align or "l" + "r" * (len(header) - 1)
    if len(align) != len(header):
        raise ValueError("align needs one letter per column")
    rule = {"l": ":--", "c": ":-:", "r": "--:"}
    lines = [
        "| " + " | ".join(str(h).replace("|", "\\|") for h in header) + " |",
        "|" + "|".join(rule[a] for a in align) + "|",
    ]
    for row in rows:
        if len(row) != len(header):
            raise ValueError(f"row {row!r} has {len(row)} cells, header has {len(header)}")
        lines.append("| " + " | ".join(str(v).replace("|", "\\|") for v in row) + " |")
    return Markdown("\n".join(lines))


def show_source(*objects):
    """The source code of functions or classes, as highlighted Markdown.

    Chapters show library code with this instead of copying it, so the text and the
    library cannot drift apart.
    """
    import inspect

    from IPython.display import Markdown

    blocks = [inspect.getsource(obj).rstrip() for obj in objects]
    return Markdown("```python\n" + "\n\n\n".join(blocks) + "\n```")
