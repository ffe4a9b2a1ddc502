"""Grade one assignment for every student, in one command: collect, autograde, export, feedback.

    python scripts/grade_assignment.py 01_precision_formats --submissions ~/inbox   # <student>/<notebook>.ipynb
    python scripts/grade_assignment.py 01_precision_formats --exchange              # nbgrader collect first

Run it inside the course directory's sandbox (INSTRUCTORS.md, "Grading safely"), e.g.
``unshare -rn python scripts/grade_assignment.py ... --memory-limit 4000``.

Each student is autograded by its own ``nbgrader autograde <assignment> --student <id>`` process with a
wall-clock limit (``--timeout-per-student``), one after the other: a crash, a hang or a broken
submission stops that student only, and the one sqlite gradebook never has two writers (nbgrader's
gradebook is not safe for concurrent autograde processes; separate gradebooks would need a merge that
nbgrader does not provide). The course's hooks (nbgrader_config.py) undo tampering and survive dead
kernels within a notebook. Then ``nbgrader export`` writes grades.csv and ``nbgrader generate_feedback``
writes the feedback, whose hidden tests are removed (``HideHiddenTests``); the script checks that no
hidden test line is left in any feedback file. Exit status 1 when any student could not be graded.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HIDDEN = re.compile(r"### BEGIN HIDDEN TESTS\n(.*?)### END HIDDEN TESTS", re.S)


def nbgrader(*args: str, course: Path, timeout: float | None = None, env: dict | None = None) -> tuple[int, str]:
    """Run one nbgrader command in the course directory in its own process group; (returncode, output)."""
    cmd = [sys.executable, "-m", "nbgrader", *args]
    proc = subprocess.Popen(cmd, cwd=course, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=env, start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=timeout)
        return proc.returncode, out
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # the autograder and the kernels it started
        out, _ = proc.communicate()
        return -9, out + f"\n[grade_assignment] stopped after {timeout} s"


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


def hidden_lines(course: Path, assignment: str) -> set[str]:
    """Every non-trivial line of the source notebooks' hidden tests."""
    import nbformat

    lines = set()
    for nb_path in (course / "source" / assignment).glob("*.ipynb"):
        for cell in nbformat.read(nb_path, as_version=4).cells:
            for block in HIDDEN.findall(cell.source):
                lines |= {ln.strip() for ln in block.split("\n") if len(ln.strip()) > 12}
    return lines


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
    parser.add_argument("--timeout-per-student", type=float, default=3600.0, help="seconds (default 3600)")
    parser.add_argument("--memory-limit", type=int, default=None, help="kernel memory limit in MiB (RLIMIT_AS)")
    parser.add_argument("--csv", type=Path, default=None, help="where grades.csv goes (default: course dir)")
    args = parser.parse_args(argv)
    course, assignment = args.course_dir.resolve(), args.assignment

    if args.submissions:
        copy_submissions(args.submissions.resolve(), course, assignment)
    elif args.exchange:
        rc, out = nbgrader("collect", assignment, "--update", course=course)
        print(out)
        if rc:
            return 1
    students = sorted(p.parent.name for p in (course / "submitted").glob(f"*/{assignment}"))
    env = dict(os.environ)
    if args.memory_limit:
        env["COURSE_GRADING_MEMORY_MB"] = str(args.memory_limit)

    report = {}
    for student in students:
        rc, out = nbgrader("autograde", assignment, "--student", student, "--force", course=course,
                           timeout=args.timeout_per_student, env=env)
        ok = rc == 0 and (course / "autograded" / student / assignment).is_dir()
        report[student] = {"graded": ok, "tampering": tampering(course, assignment, student) if ok else []}
        if not ok:
            report[student]["log"] = out[-3000:]
        print(f"{student}: {'graded' if ok else 'NOT GRADED (see the log above)'}", flush=True)
        if not ok:
            print(out[-3000:])

    csv = (args.csv or course / "grades.csv").resolve()
    rc, out = nbgrader("export", "--to", str(csv), course=course)
    if rc:
        print(out)
    rc_fb, out_fb = nbgrader("generate_feedback", assignment, "--force", course=course)
    if rc_fb:
        print(out_fb)
    leaks = []
    secret = hidden_lines(course, assignment)
    for page in (course / "feedback").glob(f"*/{assignment}/*.html"):
        text = page.read_text(encoding="utf-8", errors="replace")
        import html as _html

        plain = _html.unescape(re.sub(r"<[^>]+>", "", text))
        leaks += [f"{page}: {line}" for line in secret if line in plain]
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
