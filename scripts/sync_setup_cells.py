#!/usr/bin/env python3
"""Give every course notebook the canonical set-up block at the top of its first code cell.

    .venv/bin/python scripts/sync_setup_cells.py          # rewrite the notebooks that differ
    .venv/bin/python scripts/sync_setup_cells.py --check  # only list them (exit 1 if any)

The notebooks are those of scripts/course_notebooks.py plus the exercise masters (whose first
code cell `make exercises` copies into the student notebooks: run it after syncing); the block comes from the same module
(chapters and student exercise notebooks have one form each; the repository URL is
`repository.url` in _config.yml). The old install statements at the top of the first code cell
(``try: import normlib ... except ImportError: ...``, in any earlier form) are replaced; the
rest of the cell, its tags and every other cell are left as they are. Run it after changing
`repository.url` (e.g. in a fork) or after adding a chapter written from an older template.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import nbformat

sys.path.insert(0, str(Path(__file__).resolve().parent))
import course_notebooks as cn  # noqa: E402


def sync(path: Path, check: bool) -> bool:
    """True when the notebook's set-up cell had to change."""
    nb = nbformat.read(path, as_version=nbformat.NO_CONVERT)
    cell = cn.first_code_cell(nb)
    if cell is None:
        print(f"{cn.relative(path)}: no code cell, skipped", file=sys.stderr)
        return False
    block = cn.setup_block(cn.kind(path))
    old = cn.cell_source(cell)
    new = cn.replace_setup_block(old, block)
    if new == old:
        return False
    print(("differs: " if check else "updated: ") + cn.relative(path))
    if not check:
        cell["source"] = new.rstrip("\n")
        tags = cell.setdefault("metadata", {}).setdefault("tags", [])
        if "hide-input" not in tags:
            tags.append("hide-input")
        cell["metadata"].setdefault("mystnb", {}).setdefault("code_prompt_show", "Show the set-up code")
        cell["metadata"]["mystnb"].setdefault("code_prompt_hide", "Hide the set-up code")
        nbformat.write(nb, path)
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 if a notebook differs")
    parser.add_argument("notebooks", nargs="*", type=Path, help="default: every course notebook")
    args = parser.parse_args(argv)
    paths = args.notebooks or cn.setup_notebooks()
    changed = [p for p in paths if sync(p, args.check)]
    if args.check and changed:
        print(f"{len(changed)} notebook(s) differ: run scripts/sync_setup_cells.py", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
