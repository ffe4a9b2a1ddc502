"""Grade one assignment for every student, in one command: collect, autograde, export, feedback.

    python scripts/grade_assignment.py 01_precision_formats --submissions ~/inbox   # <student>/<notebook>.ipynb
    python scripts/grade_assignment.py 01_precision_formats --exchange              # nbgrader collect first
    python scripts/grade_assignment.py 01_precision_formats --exchange --jobs 4     # 4 students at a time

Run it inside the course directory's sandbox (INSTRUCTORS.md, "Grading safely"), e.g.
``unshare -rn python scripts/grade_assignment.py ... --memory-limit 4000``.

Each student is autograded by its own ``nbgrader autograde <assignment> --student <id>`` process with a
wall-clock limit (``--timeout-per-student``): a crash, a hang or a broken submission stops that student
only. ``--jobs 1`` (the default) grades the students one after the other in the course directory itself.
``--jobs N`` splits them into N groups graded at the same time, each in its own copy of the course with a
copy of the gradebook, and merges the groups' gradebooks into the course's (``course_lib.course_grading``,
the code benchmarks/grade_at_scale.py times): the sqlite gradebook never has two writers. ``--jobs 0`` is
one group per CPU core. Each group needs its own kernel's memory (``--memory-limit`` per kernel).
The course's hooks (its nbgrader_config.py calls ``course_grading.configure``) undo tampering and
survive dead kernels within a notebook. Then ``nbgrader export`` writes grades.csv and ``nbgrader
generate_feedback`` writes the feedback, whose hidden tests are removed (``HideHiddenTests``); the script
checks that no hidden test line is left in any feedback file. Exit status 1 when any student could not be
graded.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from course_lib.course_grading import grade, hidden_lines, leaked_lines, nbgrader  # noqa: E402

__all__ = ["main", "copy_submissions", "hidden_lines", "tampering"]


def copy_submissions(source: Path, course: Path, assignment: str) -> list[str]:
    """Copy <source>/<student>/[<assignment>/]*.ipynb into the course's submitted/ folder."""
    students = []
    for folder in sorted(p for p in source.iterdir() if p.is_dir()):
        files = folder / assignment if (folder / assignment).is_dir() else folder
        target = course / "submitted" / folder.name / assignment
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(files, target, ignore=shutil.ignore_patterns(".ipynb_checkpoints"))
        students.append(folder.name)
    return students


def tampering(course: Path, assignment: str, student: str) -> list[str]:
    """What the guard had to undo in a student's autograded notebooks (course_guard cell metadata)."""
    import nbformat

    found = []
    for nb_path in (course / "autograded" / student / assignment).glob("*.ipynb"):
        for cell in nbformat.read(nb_path, as_version=4).cells:
            guard = cell.metadata.get("course_guard")
            if guard is not None:
                gid = cell.metadata.get("nbgrader", {}).get("grade_id", "?")
                found.append(f"{gid}: " + (",".join(guard["restored"]) if guard["restored"] else
                                           "NOT RESTORED (test not run): grade by hand"))
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("assignment")
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--submissions", type=Path, help="folder of <student>/<notebook>.ipynb")
    where.add_argument("--exchange", action="store_true", help="nbgrader collect from the exchange first")
    parser.add_argument("--course-dir", type=Path, default=ROOT, help="nbgrader course directory (default: this repo)")
    parser.add_argument("--jobs", type=int, default=1,
                        help="students graded at the same time, each group in a course copy, gradebooks merged "
                             "(default 1: one after the other; 0: one per CPU core)")
    parser.add_argument("--timeout-per-student", type=float, default=3600.0, help="seconds (default 3600)")
    parser.add_argument("--memory-limit", type=int, default=None, help="kernel memory limit in MiB (RLIMIT_AS)")
    parser.add_argument("--csv", type=Path, default=None, help="where grades.csv goes (default: course dir)")
    args = parser.parse_args(argv)
    course, assignment = args.course_dir.resolve(), args.assignment
    jobs = args.jobs if args.jobs > 0 else (os.cpu_count() or 1)

    if args.submissions:
        copy_submissions(args.submissions.resolve(), course, assignment)
    elif args.exchange:
        rc, out = nbgrader("collect", assignment, "--update", course=course)
        print(out)
        if rc:
            return 1
    env = dict(os.environ)
    if args.memory_limit:
        env["COURSE_GRADING_MEMORY_MB"] = str(args.memory_limit)

    graded = grade(course, assignment, jobs, timeout_per_student=args.timeout_per_student, env=env)
    report = {}
    for student, log in graded.items():
        ok = log is None
        report[student] = {"graded": ok, "tampering": tampering(course, assignment, student) if ok else []}
        print(f"{student}: {'graded' if ok else 'NOT GRADED (log below)'}", flush=True)
        if not ok:
            report[student]["log"] = log
            print(log)

    csv = (args.csv or course / "grades.csv").resolve()
    rc, out = nbgrader("export", "--to", str(csv), course=course)
    if rc:
        print(out)
    rc_fb, out_fb = nbgrader("generate_feedback", assignment, "--force", course=course)
    if rc_fb:
        print(out_fb)
    secret = hidden_lines(course, assignment)
    leaks = [f"{page}: {line}" for page in (course / "feedback").glob(f"*/{assignment}/*.html")
             for line in leaked_lines(page.read_text(encoding="utf-8", errors="replace"), secret)]
    if leaks:
        print("hidden tests found in feedback:\n" + "\n".join(leaks))
    for student, entry in report.items():
        for line in entry["tampering"]:
            print(f"FLAG {student}: tampering undone before {line}")
    (course / f"grading_report_{assignment}.json").write_text(json.dumps(report, indent=1))
    print(f"grades: {csv}; feedback: {course / 'feedback'}")
    return int(rc != 0 or rc_fb != 0 or bool(leaks) or not all(e["graded"] for e in report.values()))


if __name__ == "__main__":
    sys.exit(main())
