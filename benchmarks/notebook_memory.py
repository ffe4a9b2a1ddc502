#!/usr/bin/env python
"""Peak memory of every solution notebook, against mybinder.org's limit (1-2 GB) and the 1.5 GB budget.

    OMP_NUM_THREADS=1 python benchmarks/notebook_memory.py            # all notebooks, one at a time
    python benchmarks/notebook_memory.py 05 13                        # those whose folder starts with 05 or 13
    python benchmarks/notebook_memory.py --out FILE.md                # default: benchmarks/results/notebook_memory_cpu.md

Each notebook runs headless in its own kernel (scripts/profile_notebooks.profile): peak = the largest
resident set of the kernel's process tree, sampled every 50 ms. The table records the machine
(course_lib.env.cpu_name()) and torch's version.
"""

from __future__ import annotations

import argparse
import functools
import os
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from benchmarks.provenance import git_commit  # noqa: E402
from course_lib.env import cpu_name  # noqa: E402
import profile_notebooks  # noqa: E402
from profile_notebooks import MEMORY_BUDGET_GB, TIME_BUDGET_S, NotebookClient, profile  # noqa: E402

DEFAULT_OUT = ROOT / "benchmarks" / "results" / "notebook_memory_cpu.md"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("prefixes", nargs="*", help="notebook folders to run (a prefix each; default all)")
    args = parser.parse_args(argv)
    os.environ.update({k: os.environ.get(k, v) for k, v in (("HF_HUB_OFFLINE", "1"), ("MPLBACKEND", "Agg"))})
    import torch

    paths = [p for p in sorted(ROOT.glob("solutions/*/*.ipynb"))
             if not args.prefixes or any(p.parent.name.startswith(x) for x in args.prefixes)]
    rows, over, slow = [], [], []
    for path in paths:
        note = ""
        try:
            seconds, gb = profile(path)
        except Exception as exc:  # a failing cell: measure again with every cell run, errors or not
            print(str(exc)[-2000:], file=sys.stderr)
            last = re.sub(r"\x1b\[[0-9;]*m", "", str(exc)).strip().splitlines()[-1]
            note = f" (a cell failed: {last[:120]}; measured with allow_errors)"
            profile_notebooks.NotebookClient = functools.partial(NotebookClient, allow_errors=True)
            try:
                seconds, gb = profile(path)
            finally:
                profile_notebooks.NotebookClient = NotebookClient
        status = ("yes" if gb <= MEMORY_BUDGET_GB else "NO") + note
        if gb > MEMORY_BUDGET_GB:
            over.append(path.parent.name)
        if seconds > TIME_BUDGET_S:
            slow.append(path.parent.name)
        rows.append(f"| {path.parent.name} | {gb:.2f} | {seconds:.1f} | {status} | "
                    f"{'yes' if seconds <= TIME_BUDGET_S else 'NO'} |")
        print(rows[-1], flush=True)
    text = "\n".join([
        "# Peak memory of each solution notebook (Binder check)",
        "",
        f"Machine: {cpu_name()}, {os.cpu_count()} cores visible; torch {torch.__version__}; "
        f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}; code of commit {git_commit()}. Measured with "
        "`python benchmarks/notebook_memory.py`: each notebook executed headless in a fresh kernel, one at a time; "
        "peak = largest resident set of the kernel process tree, sampled every 50 ms. "
        f"Budgets {MEMORY_BUDGET_GB} GB (mybinder.org gives 1-2 GB) and {TIME_BUDGET_S:.0f} s on a 2-core CPU; wall "
        "times depend on the machine and its load.",
        "",
        f"| notebook | peak memory (GB) | wall time (s) | within {MEMORY_BUDGET_GB} GB | within {TIME_BUDGET_S:.0f} s |",
        "|---|---:|---:|---|---|",
        *rows,
        "",
        f"Over the memory budget: {', '.join(over) if over else 'none'}. Over the time budget: "
        f"{', '.join(slow) if slow else 'none'}.",
        "",
    ])
    if not args.prefixes or args.out != DEFAULT_OUT:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
    print(text)
    return 0 if not over else 1


if __name__ == "__main__":
    sys.exit(main())
