#!/usr/bin/env python
"""Execute every solution notebook headless and print its wall time and peak memory.

    python scripts/profile_notebooks.py                 # all notebooks in solutions/
    python scripts/profile_notebooks.py 01 02           # those whose folder starts with 01 or 02

Peak memory is the largest resident set size of the notebook's kernel process (and its
children), sampled every 50 ms. Budgets (CONTRIBUTING.md): <= 60 s and <= 1.5 GB on the 2-core CI machine.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import threading
import time
from pathlib import Path

import nbformat
import psutil
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]
TIME_BUDGET_S, MEMORY_BUDGET_GB = 60.0, 1.5


def _tree_rss(pid: int) -> int:
    try:
        proc = psutil.Process(pid)
        return proc.memory_info().rss + sum(c.memory_info().rss for c in proc.children(recursive=True))
    except psutil.Error:
        return 0


def profile(path: Path, timeout: int = 600) -> tuple[float, float]:
    """Run one notebook in its folder; returns (wall seconds, peak kernel RSS in GB)."""
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(nb, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}})
    peak, done = [0], threading.Event()

    def sample():
        while not done.is_set():
            km = client.km
            pid = getattr(getattr(km, "provisioner", None), "pid", None) if km else None
            if pid:
                peak[0] = max(peak[0], _tree_rss(pid))
            time.sleep(0.05)

    watcher = threading.Thread(target=sample, daemon=True)
    start = time.perf_counter()
    watcher.start()
    try:
        client.execute()
    finally:
        done.set()
        watcher.join()
    return time.perf_counter() - start, peak[0] / 1e9


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("prefixes", nargs="*", help="only notebooks whose folder starts with one of these")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("MPLBACKEND", "Agg")
    paths = sorted((ROOT / "solutions").glob("*/*.ipynb"))
    if args.prefixes:
        paths = [p for p in paths if p.parent.name.startswith(tuple(args.prefixes))]
    print(f"machine: {platform.node()} {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}")
    print("| notebook | wall time (s) | peak memory (GB) | within budget |")
    print("|---|---:|---:|---|")
    ok = True
    for path in paths:
        seconds, gb = profile(path)
        within = seconds <= TIME_BUDGET_S and gb <= MEMORY_BUDGET_GB
        ok &= within
        print(f"| {path.parent.name} | {seconds:.1f} | {gb:.2f} | {'yes' if within else 'NO'} |", flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
