"""Execute each chapter twice and report any output that differs between the runs.

A developer tool (not part of `make test`, where it would double the notebook time):
    .venv/bin/python scripts/check_determinism.py [chapters/01_one_recipe.ipynb ...]
Exit status 1 if any output differs. Widget model ids are random by design and ignored.
"""

import hashlib
import json
import pathlib
import sys
import time

import nbformat
from nbclient import NotebookClient

ROOT = pathlib.Path(__file__).resolve().parent.parent


def _fingerprint(output) -> str:
    data = dict(output.get("data", {}))
    data.pop("application/vnd.jupyter.widget-view+json", None)  # random model id
    payload = {"text": output.get("text"), "data": data, "type": output.get("output_type")}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def _merge_streams(outputs):
    """Join consecutive stream outputs of the same stream: the kernel flushes on a timer,
    so one print can arrive as one output in one run and as two in the next."""
    merged = []
    for output in outputs:
        if (
            merged
            and output.get("output_type") == "stream"
            and merged[-1].get("output_type") == "stream"
            and merged[-1].get("name") == output.get("name")
        ):
            merged[-1] = {**merged[-1], "text": merged[-1]["text"] + output["text"]}
        else:
            merged.append(output)
    return merged


def run(path: pathlib.Path):
    nb = nbformat.read(path, as_version=4)
    start = time.perf_counter()
    NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}).execute()
    seconds = time.perf_counter() - start
    cells = [[_fingerprint(o) for o in _merge_streams(c.get("outputs", []))] for c in nb.cells if c.cell_type == "code"]
    return cells, seconds


def main(paths) -> int:
    paths = [pathlib.Path(p) for p in paths] or sorted((ROOT / "chapters").glob("*.ipynb"))
    failed = 0
    for path in paths:
        first, t1 = run(path)
        second, t2 = run(path)
        differing = [i for i, (a, b) in enumerate(zip(first, second)) if a != b]
        status = "deterministic" if not differing else f"DIFFERS in code cells {differing}"
        print(f"{path.name}: {status} (runs took {t1:.1f} s and {t2:.1f} s)")
        failed += bool(differing)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
