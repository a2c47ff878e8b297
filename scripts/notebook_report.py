#!/usr/bin/env python3
"""Print how long each notebook took in `make test`, and the total.

    .venv/bin/python scripts/notebook_report.py [--started EPOCH_SECONDS]

Reads the times that nbval's run wrote to _build/notebook-times/ (tests/nbval_course.py: one
execution per notebook, in a fresh environment, kernel start, set-up cell and pip install
included) and the log of the book build that followed (_build/book-build.log), which names any
notebook the build had to execute itself because it was not in the cache. A notebook over its budget (90 s on 2 CPU
cores, CONTRIBUTING.md) is marked; this is a report, never a failure: times depend on the
machine and its load. With --started, only what this run wrote is read, and the wall time of the
whole run is printed too.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BUDGET_SECONDS = 90.0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--started", type=float, help="epoch seconds when the run started")
    parser.add_argument("--build-dir", type=Path, default=ROOT / "_build")
    args = parser.parse_args(argv)

    records = []
    for path in sorted((args.build_dir / "notebook-times").glob("*.json")):
        if args.started and path.stat().st_mtime < args.started:
            continue  # from an earlier run (this one stopped before the notebooks)
        try:
            records.append(json.loads(path.read_text()))
        except (OSError, json.JSONDecodeError):
            continue
    print("\n=== Notebook execution times (one execution each, fresh environment) ===")
    if not records:
        print("no notebook was executed")
    threads = {r.get("threads") for r in records} - {None}
    width = max([len(r["notebook"]) for r in records] + [8])
    over = 0
    for r in sorted(records, key=lambda r: r["notebook"]):
        setup = r.get("setup_seconds")
        note = ""
        if r.get("failed"):
            note = "  FAILED"
        elif r["seconds"] > BUDGET_SECONDS:
            note = f"  OVER BUDGET ({BUDGET_SECONDS:.0f} s)"
            over += 1
        setup_text = f"(set-up cell {setup:5.1f} s)" if setup is not None else ""
        print(f"  {r['notebook']:<{width}}  {r['seconds']:7.1f} s  {setup_text}{note}")
    total = sum(r["seconds"] for r in records)
    if records:
        print(
            f"  {'total':<{width}}  {total:7.1f} s  over {len(records)} notebook(s)"
            + (f", {next(iter(threads))} torch thread(s) each" if len(threads) == 1 else "")
        )
    if over:
        print(f"  {over} notebook(s) over the {BUDGET_SECONDS:.0f} s budget (a report, not a failure)")

    log = args.build_dir / "book-build.log"
    if log.exists() and args.started and log.stat().st_mtime < args.started:
        print("Book build: not run (an earlier step failed)")
    elif log.exists():
        text = re.sub(r"\x1b\[[0-9;]*m", "", log.read_text(errors="replace"))
        executed = re.findall(r"^(\S+\.ipynb): Executed notebook in ([0-9.]+) seconds", text, flags=re.M)
        cached = re.findall(r"^(\S+\.ipynb): Using cached notebook", text, flags=re.M)
        print(f"Book build: {len(cached)} notebook(s) rendered from the cache", end="")
        if executed:
            print(f", {len(executed)} executed by the build (not in scripts/course_notebooks.py?):")
            for name, seconds in executed:
                print(
                    f"  {Path(name).relative_to(ROOT) if Path(name).is_absolute() else name}  {float(seconds):7.1f} s"
                )
        else:
            print(", none executed again.")
    if args.started:
        wall = time.time() - args.started
        print(f"make test wall time: {wall / 60:.1f} min ({wall:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
