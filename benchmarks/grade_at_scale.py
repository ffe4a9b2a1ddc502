#!/usr/bin/env python
"""Grading a workshop's worth of submissions: sequential `nbgrader autograde` vs parallel groups.

    python benchmarks/grade_at_scale.py                        # N=50 submissions of 00_welcome, --jobs = cores
    python benchmarks/grade_at_scale.py --n 4 --jobs 2 --out - # small run, table printed only

nbgrader autogrades one submission after another in one process (one kernel at a time), so a class of
50 uses one core. The parallel way is ``course_lib.course_grading.grade`` (its docstring: students split
into ``--jobs`` groups, each autograded in its own copy of the course at the same time, the gradebooks
merged into the main one), the same code as ``scripts/grade_assignment.py --jobs N``; tested in
tests/course/test_grade_at_scale.py. ``--per-student`` times it as grade_assignment.py runs it (one nbgrader
process per student); by default each group is one ``nbgrader autograde``.

The benchmark builds two identical courses of N submissions (half typed-correct solutions, half the
unmodified release), grades one sequentially and one in parallel, checks that both give the same score
to every student and writes the timing table (default benchmarks/results/grade_at_scale_cpu.md).
Both courses use the course's nbgrader settings and hooks (``course_grading.write_config``), with 120 s
per cell instead of 600 (00_welcome's slowest cell takes a few seconds): with TCP kernels, a client once
waited on an idle kernel until the timeout (a lost reply, likely the TCP port race that ``grade`` works
around); the timeout bounds what such a hang costs.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from course_lib import course_grading  # noqa: E402
from course_lib.env import cpu_name  # noqa: E402
from nbgrader_course import notebook_name, release_path, solution_path, typed_solutions  # noqa: E402

CELL_TIMEOUT = 120


def make_course(course: Path, assignment: str, n: int) -> dict[str, str]:
    """A course in ``course`` with ``assignment`` generated and n submissions; returns {student: kind}."""
    course.mkdir(parents=True)
    shutil.copytree(ROOT / "solutions" / assignment, course / "source" / assignment,
                    ignore=shutil.ignore_patterns(".ipynb_checkpoints", "__pycache__"))
    course_grading.write_config(course, timeout=CELL_TIMEOUT)
    rc, out = course_grading.nbgrader("generate_assignment", assignment, "--force", course=course)
    if rc:
        raise RuntimeError(f"nbgrader generate_assignment failed in {course}:\n{out}")
    release = nbformat.read(release_path(assignment), as_version=4)
    correct = typed_solutions(release, nbformat.read(solution_path(assignment), as_version=4))
    kinds = {}
    for i in range(n):
        student = f"student{i:03d}"
        kinds[student] = "correct" if i % 2 == 0 else "unmodified"
        target = course / "submitted" / student / assignment / f"{notebook_name(assignment)}.ipynb"
        target.parent.mkdir(parents=True)
        nbformat.write(correct if kinds[student] == "correct" else release, target)
    return kinds


def grade(course: Path, assignment: str, jobs: int, per_student: bool = False, workdir: Path | None = None) -> None:
    """``course_grading.grade`` (jobs=1: one plain `nbgrader autograde`, what an instructor runs by default);
    raises when a student was not graded."""
    failed = {s: log for s, log in course_grading.grade(course, assignment, jobs, per_student=per_student,
                                                        cell_timeout=CELL_TIMEOUT, workdir=workdir).items() if log}
    if failed:
        raise RuntimeError(f"not graded in {course}: " + "\n".join(f"{s}:\n{log}" for s, log in failed.items()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", "--students", dest="n", type=int, default=50,
                        help="number of submissions (default 50)")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="parallel groups (default: cores)")
    parser.add_argument("--assignment", default="00_welcome")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "grade_at_scale_cpu.md"),
                        help="markdown file for the table, '-' for none")
    parser.add_argument("--per-student", action="store_true",
                        help="one nbgrader process per student in each group (as scripts/grade_assignment.py)")
    parser.add_argument("--note", default="", help="a line added under the table (e.g. machine load)")
    args = parser.parse_args()

    rows = []
    with tempfile.TemporaryDirectory(prefix="grade-at-scale-") as tmp:
        tmp = Path(tmp)
        timings = {}
        results = {}
        for mode in ("parallel", "sequential"):
            course = tmp / mode
            kinds = make_course(course, args.assignment, args.n)
            start = time.perf_counter()
            if mode == "sequential":
                grade(course, args.assignment, jobs=1)
            else:
                grade(course, args.assignment, args.jobs, per_student=args.per_student, workdir=tmp)
            timings[mode] = time.perf_counter() - start
            results[mode] = course_grading.scores(course, args.assignment)
            print(f"{mode}: {timings[mode]:.1f} s for {args.n} submissions", flush=True)
        if results["parallel"] != results["sequential"]:
            raise SystemExit(f"parallel and sequential scores differ:\n{results}")
        correct = sorted({results["sequential"][s] for s, k in kinds.items() if k == "correct"})
        unmodified = sorted({results["sequential"][s] for s, k in kinds.items() if k == "unmodified"})
        for mode, label in (("sequential", "sequential (`nbgrader autograde`, 1 process)"),
                            ("parallel", f"parallel ({args.jobs} groups"
                             + (", a process per student" if args.per_student else "") + ", merged gradebook)")):
            t = timings[mode]
            rows.append(f"| {label} | {args.n} | {t:.1f} | {t / args.n:.2f} | {timings['sequential'] / t:.2f}x |")

    lines = [
        f"# Autograding {args.n} submissions of {args.assignment}: sequential vs parallel",
        "",
        "Measured with `python benchmarks/grade_at_scale.py"
        + (f" --n {args.n}" if args.n != 50 else "") + f" --jobs {args.jobs}"
        + (" --per-student" if args.per_student else "") + "`.",
        f"Machine: {cpu_name()}, {os.cpu_count()} cores, Python {sys.version.split()[0]}, "
        f"{time.strftime('%Y-%m-%d')}.",
        "",
        "| grading | submissions | wall time (s) | s per submission | speed-up |",
        "|---|---:|---:|---:|---:|",
        *rows,
        "",
        f"Half the submissions are the solutions typed into the student notebook (score {correct}), half the "
        f"unmodified release (score {unmodified}); both ways gave every student the same score. Parallel time "
        "includes copying the course per group and merging the gradebooks.",
    ]
    if args.note:
        lines += ["", args.note]
    table = "\n".join(lines) + "\n"
    print(table)
    if args.out != "-":
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(table)


if __name__ == "__main__":
    main()
