"""What every results file's header says about where its numbers come from: the commit of the code and the
machine. One definition for all benchmark scripts (imported as ``benchmarks.provenance``: the scripts put the
repository root, not ``benchmarks/``, on ``sys.path``, since ``benchmarks/kernels.py`` would shadow the
``kernels`` package that transformers imports)."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

import torch

from course_lib.env import cpu_name

ROOT = Path(__file__).resolve().parents[1]


def git_commit() -> str:
    """The short commit of the code, with " +changes" when tracked files differ from it; "unknown" outside git.

    ``COURSE_COMMIT``, when set, is returned instead: for a copy of the tree whose ``.git`` is missing or older than
    its files (the GPU machine's copy of a checkout is one), pass the commit from the checkout it was copied from,
    e.g. ``COURSE_COMMIT=e9ccc9b python benchmarks/kernels.py --out ...``.
    """
    if os.environ.get("COURSE_COMMIT"):
        return os.environ["COURSE_COMMIT"]
    def git(*args: str) -> str:
        try:
            return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True).stdout.strip()
        except OSError:
            return ""

    return (git("rev-parse", "--short", "HEAD") or "unknown") + (
        " +changes" if git("status", "--porcelain", "--untracked-files=no") else "")


def machine_line(device: str) -> str:
    """"Machine: <GPU or CPU model>; torch <version> (<n> threads); code of commit <commit>" for a results header."""
    threads = torch.get_num_threads()
    return (f"Machine: {torch.cuda.get_device_name() if device == 'cuda' else cpu_name()}; torch {torch.__version__} "
            f"({threads} thread{'s' if threads > 1 else ''}); code of commit {git_commit()}")


def write_results(out: str | Path, text: str) -> None:
    """Write a results file (creating its folder) and say where."""
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(text)
    print(f"written to {out}")
