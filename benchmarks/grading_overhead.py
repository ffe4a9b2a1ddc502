#!/usr/bin/env python
"""What the grader's watch costs: each solution notebook's test cells, timed with and without it.

    python benchmarks/grading_overhead.py [--out benchmarks/results/grading_overhead_cpu.md] [NAME ...]

Every learner call in a test cell runs inside ``grading.no_delegation`` (a profile hook that looks for
calls of code that computes the answer) and ``grading.unchanged`` (a snapshot of course_lib, builtins and
the notebook's names, compared afterwards). This script runs a solution notebook's code cells in one
namespace (as ``scripts/run_notebook_cells.py`` does), then runs each graded test cell again twice, once
as graded and once with both watches replaced by no-ops, alternating, and prints the totals side by side.
The no-op run exists only here: the product has no switch that turns the watch off.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# this folder's kernels.py would shadow the `kernels` package that transformers looks for
sys.path[:] = [str(ROOT)] + [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]
os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def _cells(path: Path) -> list[tuple[str, str, bool]]:
    """(grade id or "cell i", source with magics made `pass`, is a graded test cell) of each code cell."""
    out = []
    for i, cell in enumerate(c for c in json.loads(path.read_text())["cells"] if c["cell_type"] == "code"):
        source = "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]
        source = "\n".join(ln[: len(ln) - len(ln.lstrip())] + "pass" if ln.lstrip().startswith(("%", "!")) else ln
                           for ln in source.split("\n"))
        meta = cell.get("metadata", {}).get("nbgrader", {})
        out.append((meta.get("grade_id", f"cell {i}"), source, bool(meta.get("grade")) and not meta.get("solution")))
    return out


@contextlib.contextmanager
def _watch_off():
    from course_lib import grading

    saved = grading.no_delegation, grading.unchanged
    grading.no_delegation = lambda *a, **k: contextlib.nullcontext()
    grading.unchanged = lambda *a, **k: contextlib.nullcontext()
    try:
        yield
    finally:
        grading.no_delegation, grading.unchanged = saved


def measure(path: Path, repeats: int) -> tuple[float, float, int]:
    """(seconds of the test cells with the watch, without it, number of test cells), best of ``repeats``."""
    namespace: dict = {"__name__": "__main__", "display": lambda *a, **k: None}
    cwd = os.getcwd()
    os.chdir(path.parent)
    try:
        cells = _cells(path)
        for gid, source, _ in cells:  # the notebook once, so every test cell has what it reads
            exec(compile(source, f"{path.name}:{gid}", "exec"), namespace)
        tests = [(gid, compile(source, f"{path.name}:{gid}", "exec")) for gid, source, graded in cells if graded]
        watched, unwatched = [], []
        for _ in range(repeats):
            for off, times in ((False, watched), (True, unwatched)):
                with _watch_off() if off else contextlib.nullcontext():
                    start = time.perf_counter()
                    for _, code in tests:
                        exec(code, namespace)
                    times.append(time.perf_counter() - start)
        return min(watched), min(unwatched), len(tests)
    finally:
        os.chdir(cwd)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("names", nargs="*", help="solution folders (default: all), e.g. 07_gptq")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    import torch

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    folders = sorted((ROOT / "solutions").iterdir())
    paths = [next(f.glob("*.ipynb")) for f in folders if not args.names or f.name in args.names]
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                            text=True).stdout.strip()
    lines = [f"Test cells of the solution notebooks, with the grader's watch and without it (best of "
             f"{args.repeats}; {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
             f"torch threads {torch.get_num_threads()}, torch {torch.__version__}, commit {commit}).", "",
             "| notebook | test cells | with the watch (s) | without (s) | ratio |", "|---|---:|---:|---:|---:|"]
    for path in paths:
        with_watch, without, n = measure(path, args.repeats)
        lines.append(f"| {path.parent.name} | {n} | {with_watch:.2f} | {without:.2f} | {with_watch / without:.2f}x |")
        print(lines[-1], flush=True)
    table = "\n".join(lines) + "\n"
    print(table)
    if args.out:
        args.out.write_text(table)


if __name__ == "__main__":
    main()
