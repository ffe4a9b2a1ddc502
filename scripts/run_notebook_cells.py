#!/usr/bin/env python
"""Run a notebook's code cells in one Python namespace, without Jupyter (for machines without a kernel).

    python scripts/run_notebook_cells.py solutions/01_precision_formats/precision_formats.ipynb

Used on the GPU machine, where the test cells' checks then also run on CUDA. IPython magics and
shell escapes are skipped. Prints one line per cell and exits 1 if any cell raised.
"""

from __future__ import annotations

import json
import os
import sys
import time
import traceback
from pathlib import Path


def _display_as_text(*objects, **_) -> None:
    """`display` without a front end: text and Markdown objects are printed (tables), the rest is dropped."""
    for obj in objects:
        text = obj if isinstance(obj, str) else getattr(obj, "data", None)
        if isinstance(text, str):
            print(text, flush=True)


def main(paths: list[str]) -> int:
    os.environ.setdefault("MPLBACKEND", "Agg")
    try:  # notebooks import IPython's display; without a front end it would print only the objects' repr
        import IPython.display

        IPython.display.display = _display_as_text
    except ImportError:
        pass
    failed = 0
    for path in map(Path, paths):
        cells = [c for c in json.loads(path.read_text())["cells"] if c["cell_type"] == "code"]
        namespace: dict = {"__name__": "__main__", "display": _display_as_text}
        cwd = os.getcwd()
        os.chdir(path.parent)
        start = time.perf_counter()
        for i, cell in enumerate(cells):
            source = "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]
            # a skipped magic or shell line becomes `pass` at its indentation, so an `if` around it stays valid
            code = "\n".join(ln[: len(ln) - len(ln.lstrip())] + "pass" if ln.lstrip().startswith(("%", "!")) else ln
                             for ln in source.split("\n"))
            gid = cell.get("metadata", {}).get("nbgrader", {}).get("grade_id", f"cell {i}")
            try:
                exec(compile(code, f"{path.name}:{gid}", "exec"), namespace)
            except Exception:
                failed += 1
                print(f"FAIL {path.name} {gid}\n{traceback.format_exc(limit=3)}", flush=True)
        os.chdir(cwd)
        print(f"ran {path} ({len(cells)} code cells) in {time.perf_counter() - start:.1f} s", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
