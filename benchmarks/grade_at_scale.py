#!/usr/bin/env python
"""Grading a workshop's worth of submissions: sequential `nbgrader autograde` vs parallel groups.

    python benchmarks/grade_at_scale.py                        # N=50 submissions of 00_welcome, --jobs = cores
    python benchmarks/grade_at_scale.py --n 4 --jobs 2 --out - # small run, table printed only

nbgrader autogrades one submission after another in one process (one kernel at a time), so a class of
50 uses one core. The parallel way, tested in tests/test_grade_at_scale.py:

1. split the students into ``--jobs`` groups (round robin);
2. give each group its own copy of the course (source, release, a copy of the gradebook that already
   knows the assignment, and only that group's ``submitted/<student>/``) and run ``nbgrader autograde``
   in each copy at the same time, one process per group (torch threads = cores / jobs in each);
3. merge: for each graded submission of each group's gradebook, create the submission in the main
   gradebook (``Gradebook.add_submission``) and copy every grade (auto/manual score, extra credit,
   needs-manual-grade) and comment, then copy ``autograded/<student>/`` into the main course. The main
   gradebook ends exactly as if the main course had autograded everyone itself: ``nbgrader export``,
   ``generate_feedback`` and formgrader work on it unchanged.

A submission is never graded by two groups, so no gradebook is written by two processes (sqlite is not
safe for that) and the merge is a plain insertion. The benchmark builds two identical courses of N
submissions (half typed-correct solutions, half the unmodified release), grades one sequentially and one
in parallel, checks that both give the same score to every student and writes the timing table
(default benchmarks/results/grade_at_scale_cpu.md).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from course_lib.env import cpu_name  # noqa: E402
from nbgrader_course import notebook_name, release_path, solution_path, typed_solutions  # noqa: E402

COURSE_CONFIG = '''c = get_config()  # noqa: F821
c.CourseDirectory.root = {root!r}
c.CourseDirectory.source_directory = "source"
c.CourseDirectory.release_directory = "release"
c.CourseDirectory.db_url = "sqlite:///{root}/gradebook.db"
c.CourseDirectory.course_id = "quantization-course"
c.Exchange.root = "{root}/exchange"
# As in the course's nbgrader_config.py, but 120 s per cell instead of 600 (00_welcome's slowest cell
# takes a few seconds): with TCP kernels, a client once waited on an idle kernel until the timeout (a
# lost reply, likely the TCP port race that grade_parallel works around); the timeout bounds what such a hang costs.
c.Execute.timeout = 120
c.Execute.interrupt_on_timeout = True
c.OverwriteCells.add_missing_cells = True
'''


def nbgrader_exe() -> str:
    exe = Path(sys.executable).parent / "nbgrader"
    return str(exe) if exe.exists() else shutil.which("nbgrader") or "nbgrader"


def run_nbgrader(course: Path, *args: str, threads: int | None = None) -> None:
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    if threads is not None:
        for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
            env[var] = str(threads)
    proc = subprocess.run([nbgrader_exe(), *args], cwd=course, env=env, capture_output=True, text=True)
    with open(course / "nbgrader.log", "a") as log:  # kept with the course copy for a post-mortem
        log.write(f"$ nbgrader {' '.join(args)}\n{proc.stdout}{proc.stderr}\n")
    if proc.returncode != 0:
        raise RuntimeError(f"nbgrader {' '.join(args)} failed in {course}:\n{proc.stdout}\n{proc.stderr}")


def write_config(course: Path) -> None:
    (course / "nbgrader_config.py").write_text(COURSE_CONFIG.format(root=str(course)))


def make_course(course: Path, assignment: str, n: int) -> dict[str, str]:
    """A course in ``course`` with ``assignment`` generated and n submissions; returns {student: kind}."""
    course.mkdir(parents=True)
    shutil.copytree(ROOT / "solutions" / assignment, course / "source" / assignment,
                    ignore=shutil.ignore_patterns(".ipynb_checkpoints", "__pycache__"))
    write_config(course)
    run_nbgrader(course, "generate_assignment", assignment, "--force")
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


def scores(course: Path, assignment: str) -> dict[str, float]:
    """{student: total score of assignment} read from the course's gradebook."""
    from nbgrader.api import Gradebook

    with Gradebook(f"sqlite:///{course}/gradebook.db") as gb:
        return {s.student.id: s.score for s in gb.assignment_submissions(assignment)}


def grade_sequential(course: Path, assignment: str) -> None:
    """What an instructor runs by default: one `nbgrader autograde` for every student."""
    run_nbgrader(course, "autograde", assignment, "--force")


def merge_gradebook(main: Path, group: Path, assignment: str) -> list[str]:
    """Copy every submission of ``assignment`` graded in ``group`` into ``main``'s gradebook and folders."""
    from nbgrader.api import Gradebook, MissingEntry

    merged = []
    with Gradebook(f"sqlite:///{group}/gradebook.db") as src, Gradebook(f"sqlite:///{main}/gradebook.db") as dst:
        for sub in src.assignment_submissions(assignment):
            student = sub.student
            dst.update_or_create_student(student.id, first_name=student.first_name,
                                         last_name=student.last_name, email=student.email)
            try:
                dst.remove_submission(assignment, student.id)  # re-grading replaces, as autograde does
            except MissingEntry:
                pass
            dst.add_submission(assignment, student.id, timestamp=sub.timestamp)
            for nb in sub.notebooks:
                for grade in nb.grades:
                    g = dst.find_grade(grade.name, nb.name, assignment, student.id)
                    g.auto_score, g.manual_score = grade.auto_score, grade.manual_score
                    g.extra_credit, g.needs_manual_grade = grade.extra_credit, grade.needs_manual_grade
                for comment in nb.comments:
                    c = dst.find_comment(comment.name, nb.name, assignment, student.id)
                    c.auto_comment, c.manual_comment = comment.auto_comment, comment.manual_comment
                dst_nb = dst.find_submission_notebook(nb.name, assignment, student.id)
                dst_nb.flagged = nb.flagged
            dst.db.commit()
            merged.append(student.id)
    for student in merged:
        target = main / "autograded" / student / assignment
        if target.exists():
            shutil.rmtree(target)
        shutil.copytree(group / "autograded" / student / assignment, target)
    return merged


def grade_parallel(course: Path, assignment: str, jobs: int, workdir: Path | None = None) -> None:
    """Autograde ``course``'s submissions in ``jobs`` course copies at once, then merge into ``course``."""
    students = sorted(p.name for p in (course / "submitted").iterdir() if (p / assignment).is_dir())
    groups = [g for g in (students[i::jobs] for i in range(jobs)) if g]
    threads = max(1, (os.cpu_count() or 1) // len(groups))
    scratch = Path(tempfile.mkdtemp(prefix="grade-groups-", dir=workdir))
    try:
        copies = []
        for k, group in enumerate(groups):
            copy = scratch / f"group{k}"
            for part in ("source", "release"):
                shutil.copytree(course / part, copy / part)
            shutil.copy2(course / "gradebook.db", copy / "gradebook.db")
            for student in group:
                shutil.copytree(course / "submitted" / student, copy / "submitted" / student)
            write_config(copy)
            copies.append(copy)
        def autograde_group(k: int) -> None:
            # Kernels started at the same instant pick free TCP ports and then bind them: two can pick the
            # same port ("Address already in use", the kernel dies). Start the groups a few seconds apart
            # and re-run a group whose autograde failed (--force re-grades it from scratch).
            time.sleep(3 * k)
            for attempt in range(3):
                try:
                    return run_nbgrader(copies[k], "autograde", assignment, "--force", threads=threads)
                except RuntimeError:
                    if attempt == 2:
                        raise

        with ThreadPoolExecutor(len(copies)) as pool:  # each thread waits on its own nbgrader process
            list(pool.map(autograde_group, range(len(copies))))
        for copy in copies:
            merge_gradebook(course, copy, assignment)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=50, help="number of submissions (default 50)")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="parallel groups (default: cores)")
    parser.add_argument("--assignment", default="00_welcome")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "grade_at_scale_cpu.md"),
                        help="markdown file for the table, '-' for none")
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
                grade_sequential(course, args.assignment)
            else:
                grade_parallel(course, args.assignment, args.jobs, workdir=tmp)
            timings[mode] = time.perf_counter() - start
            results[mode] = scores(course, args.assignment)
            print(f"{mode}: {timings[mode]:.1f} s for {args.n} submissions", flush=True)
        if results["parallel"] != results["sequential"]:
            raise SystemExit(f"parallel and sequential scores differ:\n{results}")
        correct = sorted({results["sequential"][s] for s, k in kinds.items() if k == "correct"})
        unmodified = sorted({results["sequential"][s] for s, k in kinds.items() if k == "unmodified"})
        for mode, label in (("sequential", "sequential (`nbgrader autograde`, 1 process)"),
                            ("parallel", f"parallel ({args.jobs} groups, merged gradebook)")):
            t = timings[mode]
            rows.append(f"| {label} | {args.n} | {t:.1f} | {t / args.n:.2f} | {timings['sequential'] / t:.2f}x |")

    lines = [
        f"# Autograding {args.n} submissions of {args.assignment}: sequential vs parallel",
        "",
        "Measured with `python benchmarks/grade_at_scale.py"
        + (f" --n {args.n}" if args.n != 50 else "") + f" --jobs {args.jobs}`.",
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
