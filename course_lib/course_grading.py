"""The course's nbgrader configuration and autograding at scale, in one place.

Configuration. ``configure(c)`` puts the course's nbgrader settings into a config ``c``: course id, cell
timeout, the stubs of answer cells, ``OverwriteCells.add_missing_cells`` and the grading hooks of
``course_lib/nbgrader_hooks.py`` (``GuardedExecute`` for autograde, ``HideHiddenTests`` for
generate_feedback; a kernel memory limit from ``COURSE_GRADING_MEMORY_MB``). The repository's
``nbgrader_config.py``, the hub image's ``jupyterhub/nbgrader_config.py``, and every course copy or scratch
course (``write_config``: benchmarks/grade_at_scale.py, the group copies below, tests/deployment/test_jupyterhub.py,
tests/course/test_grade_assignment.py) call it: a course directory anywhere grades with the same hooks.

Autograding in parallel groups (``grade``; scripts/grade_assignment.py ``--jobs N`` and
benchmarks/grade_at_scale.py). ``nbgrader autograde`` grades one submission after another in one process
(one kernel at a time), so a class uses one core. With ``jobs > 1``:

1. the students are split into ``jobs`` groups (round robin);
2. each group gets its own copy of the course (source, release, a copy of the gradebook that already
   knows the assignment, and only that group's ``submitted/<student>/``) and is autograded there, all
   groups at the same time, one process per group or per student (torch threads = cores / jobs in each);
3. merge (``merge_gradebook``): for each graded submission of each group's gradebook, the submission is
   created in the main gradebook (``Gradebook.add_submission``) with every grade (auto/manual score,
   extra credit, needs-manual-grade) and comment, and ``autograded/<student>/`` is copied into the main
   course. The main gradebook ends as if the main course had autograded everyone itself:
   ``nbgrader export``, ``generate_feedback`` and formgrader work on it unchanged.

A submission is never graded by two groups, so no gradebook is written by two processes (sqlite is not
safe for that) and the merge is a plain insertion. With ``jobs == 1`` the main course is graded directly.
"""

from __future__ import annotations

import html
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

COURSE_ID = "quantization-course"
HIDDEN = re.compile(r"### BEGIN HIDDEN TESTS\n(.*?)### END HIDDEN TESTS", re.S)


# --- the references without their source (workshops) ----------------------------------------------


def strip_reference_sources(package_dir: Path | None = None) -> list[str]:
    """Replace the source of course_lib's reference modules with their bytecode, in place.

    For graded courses: a learner can still call every function (``help()`` and ``inspect.signature``
    work: docstrings and annotations live in the bytecode) but cannot read how a reference computes its
    answer. The plumbing (``grading``, ``models``, ``data``...) keeps its source. Each ``name.py`` becomes a
    sourceless ``name.pyc`` for the running interpreter (run this with the Python that will import it);
    its ``__pycache__`` entries are removed. The C++/CUDA sources of the kernels stay: they are compiled
    where the course runs.

    Args:
        package_dir: the installed course_lib folder (default: the one this module belongs to).

    Returns:
        The stripped modules, relative to ``package_dir``.
    """
    import py_compile

    from .grading import reference_modules

    root = Path(package_dir) if package_dir is not None else Path(__file__).resolve().parent
    stripped = reference_modules(root)
    for relative in stripped:
        source = root / relative
        compiled = source.with_suffix(".pyc")
        # the code objects name the .pyc: the grading hooks compare co_filename with the module's file
        py_compile.compile(str(source), cfile=str(compiled), dfile=str(compiled), doraise=True,
                           invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH)
        source.unlink()
        for cached in (source.parent / "__pycache__").glob(f"{source.stem}.*.pyc"):
            cached.unlink()
    return stripped


# --- configuration ------------------------------------------------------------------------------------

def configure(c, memory_limit_mb: int | None = None, timeout: int = 600) -> None:
    """The course's nbgrader settings and grading hooks in the nbgrader config ``c``.

    Args:
        c: a traitlets Config (``get_config()`` in an nbgrader_config.py).
        memory_limit_mb: the kernel's RLIMIT_AS when autograding; None: ``COURSE_GRADING_MEMORY_MB``
            from the environment (unset or 0: no limit).
        timeout: seconds per cell. A cell may train a small model or build a C++ extension: a laptop CPU
            needs more than nbgrader's 30 s; a notebook that hangs is still stopped (interrupted, then killed).
    """
    from course_lib import nbgrader_hooks

    c.CourseDirectory.course_id = COURSE_ID
    c.Execute.timeout = int(timeout)
    c.Execute.interrupt_on_timeout = True
    # What the learner sees in an answer cell.
    c.ClearSolutions.code_stub = {"python": "# YOUR CODE HERE\nraise NotImplementedError()"}
    c.ClearSolutions.text_stub = "YOUR ANSWER HERE"
    # A learner who deletes a locked or graded cell gets it back at autograde time.
    c.OverwriteCells.add_missing_cells = True
    # Grading that cannot be fooled or broken (course_lib/nbgrader_hooks.py, INSTRUCTORS.md "Grading safely"):
    # tampering undone before every test cell, a dead kernel costs only its cells, duplicated grade ids no
    # longer fail a submission, feedback shows no hidden tests.
    if memory_limit_mb is None:
        memory_limit_mb = int(os.environ.get("COURSE_GRADING_MEMORY_MB", "0") or 0) or None
    nbgrader_hooks.configure(c, memory_limit_mb=memory_limit_mb)


CONFIG_FILE = '''"""nbgrader configuration of this course directory (written by course_lib.course_grading.write_config)."""
c = get_config()  # noqa: F821
c.CourseDirectory.root = {root!r}
c.CourseDirectory.source_directory = {source!r}
c.CourseDirectory.release_directory = {release!r}
c.CourseDirectory.db_url = {db!r}
c.Exchange.root = {exchange!r}

from course_lib import course_grading  # noqa: E402  (the course's settings and hooks)

course_grading.configure(c, timeout={timeout!r})
'''


def write_config(root: Path, *, exchange: Path | None = None, source: str = "source", release: str = "release",
                 timeout: int = 600) -> Path:
    """Write ``root/nbgrader_config.py`` for a course directory (a copy, a scratch or a hub course).

    Its own gradebook (``root/gradebook.db``) and exchange (default ``root/exchange``), the course's settings
    and hooks (``configure``). Returns the file's path.
    """
    root = Path(root)
    path = root / "nbgrader_config.py"
    path.write_text(CONFIG_FILE.format(root=str(root), source=source, release=release,
                                       db=f"sqlite:///{root / 'gradebook.db'}",
                                       exchange=str(exchange or root / "exchange"), timeout=int(timeout)))
    return path


# --- running nbgrader ---------------------------------------------------------------------------------

def nbgrader(*args: str, course: Path, timeout: float | None = None, env: dict | None = None,
             threads: int | None = None) -> tuple[int, str]:
    """Run one nbgrader command in ``course`` in its own process group; (returncode, output).

    After ``timeout`` seconds the process group (the autograder and its kernels) is killed: returncode -9.
    ``threads`` sets OMP/MKL/OpenBLAS threads of the process and its kernels.
    """
    env = dict(os.environ if env is None else env)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    if threads is not None:
        for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
            env[var] = str(threads)
    proc = subprocess.Popen([sys.executable, "-m", "nbgrader", *args], cwd=course, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=env, start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=timeout)
        rc = proc.returncode
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # the autograder and the kernels it started
        out, _ = proc.communicate()
        rc, out = -9, out + f"\n[course_grading] stopped after {timeout} s"
    return rc, out


def submitted(course: Path, assignment: str) -> list[str]:
    """The students with a submission of ``assignment`` in ``course/submitted``."""
    return sorted(p.parent.name for p in Path(course).glob(f"submitted/*/{assignment}") if p.is_dir())


def autograde(course: Path, assignment: str, students: list[str] | None = None, *, per_student: bool = True,
              timeout_per_student: float | None = None, env: dict | None = None, threads: int | None = None,
              attempts: int = 1) -> dict[str, str | None]:
    """Autograde ``students`` (default: all submitted) in ``course``, one after the other.

    ``per_student``: one ``nbgrader autograde --student`` process per student, with a wall-clock limit of
    ``timeout_per_student`` (a crash, a hang or a broken submission stops that student only); otherwise one
    ``nbgrader autograde`` for all (what an instructor types). A failed run is tried again up to ``attempts``
    times in all (never one that ran out of time). Returns {student: None when graded, else the log's tail}.
    """
    course = Path(course)
    students = submitted(course, assignment) if students is None else list(students)
    runs = [(s,) for s in students] if per_student else [tuple(students)]
    result: dict[str, str | None] = {}
    for run in runs:
        args = ["autograde", assignment, "--force"] + (["--student", run[0]] if per_student else [])
        limit = None if timeout_per_student is None else timeout_per_student * len(run)
        for _ in range(max(1, attempts)):
            rc, out = nbgrader(*args, course=course, timeout=limit, env=env, threads=threads)
            graded = {s: rc == 0 and (course / "autograded" / s / assignment).is_dir() for s in run}
            if all(graded.values()) or rc == -9:
                break
        result.update({s: None if ok else out[-3000:] for s, ok in graded.items()})
    return result


def scores(course: Path, assignment: str) -> dict[str, float]:
    """{student: total score of assignment} read from the course's gradebook."""
    from nbgrader.api import Gradebook

    with Gradebook(f"sqlite:///{course}/gradebook.db") as gb:
        return {s.student.id: s.score for s in gb.assignment_submissions(assignment)}


def grades(course: Path, assignment: str) -> dict[tuple[str, str, str], tuple]:
    """{(student, notebook, grade cell): (auto score, manual score, max score, needs manual grade)} of
    ``assignment`` in the course's gradebook: every cell, to compare two gradebooks."""
    from nbgrader.api import Gradebook

    with Gradebook(f"sqlite:///{course}/gradebook.db") as gb:
        return {(s.student.id, nb.name, g.name): (g.auto_score, g.manual_score, g.max_score, g.needs_manual_grade)
                for s in gb.assignment_submissions(assignment) for nb in s.notebooks for g in nb.grades}


# --- parallel groups ----------------------------------------------------------------------------------

def merge_gradebook(main: Path, group: Path, assignment: str, students: list[str] | None = None) -> list[str]:
    """Copy every submission of ``assignment`` graded in ``group`` (only ``students`` when given) into
    ``main``'s gradebook and ``autograded/`` folder; returns the students merged."""
    from nbgrader.api import Gradebook, MissingEntry

    merged = []
    with Gradebook(f"sqlite:///{group}/gradebook.db") as src, Gradebook(f"sqlite:///{main}/gradebook.db") as dst:
        for sub in src.assignment_submissions(assignment):
            student = sub.student
            if students is not None and student.id not in students:
                continue
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
        target = Path(main) / "autograded" / student / assignment
        if target.exists():
            shutil.rmtree(target)
        shutil.copytree(Path(group) / "autograded" / student / assignment, target)
    return merged


def course_directories(course: Path) -> tuple[str, str]:
    """(source, release) directory names of ``course`` as its nbgrader_config.py sets them
    (nbgrader's defaults "source" and "release" when it sets none)."""
    from traitlets.config.loader import PyFileConfigLoader

    config = Path(course) / "nbgrader_config.py"
    settings = PyFileConfigLoader(config.name, path=str(config.parent)).load_config().CourseDirectory \
        if config.exists() else {}
    return settings.get("source_directory", "source"), settings.get("release_directory", "release")


def _course_copy(course: Path, copy: Path, students: list[str], assignment: str, timeout: int) -> Path:
    """A copy of ``course`` for one group: the assignment's source and release, the gradebook (which knows
    the assignment) and the group's submissions; its own config (``write_config``)."""
    for part, name in zip(course_directories(course), ("source", "release")):
        if (course / part / assignment).is_dir():
            shutil.copytree(course / part / assignment, copy / name / assignment)
    copy.mkdir(parents=True, exist_ok=True)
    shutil.copy2(course / "gradebook.db", copy / "gradebook.db")
    for student in students:
        shutil.copytree(course / "submitted" / student / assignment, copy / "submitted" / student / assignment)
    write_config(copy, timeout=timeout)
    return copy


def grade(course: Path, assignment: str, jobs: int = 1, *, students: list[str] | None = None,
          per_student: bool = True, timeout_per_student: float | None = None, env: dict | None = None,
          cell_timeout: int = 600, workdir: Path | None = None, stagger: float = 3.0) -> dict[str, str | None]:
    """Autograde ``assignment`` in ``course`` with ``jobs`` parallel groups (see the module docstring).

    ``jobs <= 1``: ``autograde`` in the course itself. Otherwise each group is autograded by ``autograde``
    in its own course copy (under ``workdir``, removed afterwards; ``cell_timeout``: its Execute.timeout)
    and the graded students are merged into ``course``. The gradebook must already know the assignment
    (``nbgrader generate_assignment`` ran). Returns {student: None when graded, else the log's tail}.
    """
    course = Path(course).resolve()
    students = submitted(course, assignment) if students is None else sorted(students)
    options = dict(per_student=per_student, timeout_per_student=timeout_per_student, env=env)
    if jobs <= 1 or len(students) <= 1:
        return autograde(course, assignment, students, **options)
    groups = [g for g in (students[i::jobs] for i in range(jobs)) if g]
    threads = max(1, (os.cpu_count() or 1) // len(groups))
    scratch = Path(tempfile.mkdtemp(prefix="grade-groups-", dir=workdir))
    try:
        copies = [_course_copy(course, scratch / f"group{k}", g, assignment, cell_timeout)
                  for k, g in enumerate(groups)]

        def grade_group(k: int) -> dict[str, str | None]:
            # Kernels started at the same instant pick free TCP ports and then bind them: two can pick the
            # same port ("Address already in use", the kernel dies). Start the groups a few seconds apart
            # and run a failed autograde again (--force re-grades from scratch).
            time.sleep(stagger * k)
            return autograde(copies[k], assignment, groups[k], threads=threads, attempts=3, **options)

        with ThreadPoolExecutor(len(copies)) as pool:  # each thread waits on its own nbgrader processes
            outcomes = list(pool.map(grade_group, range(len(copies))))
        result: dict[str, str | None] = {}
        for copy, outcome in zip(copies, outcomes):
            merge_gradebook(course, copy, assignment, [s for s, error in outcome.items() if error is None])
            result.update(outcome)
        return result
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


# --- feedback without hidden tests --------------------------------------------------------------------

def hidden_lines(course: Path, assignment: str) -> set[str]:
    """Every non-trivial line of the hidden tests of the course's source notebooks of ``assignment``."""
    import nbformat

    lines = set()
    for nb_path in (Path(course) / course_directories(course)[0] / assignment).glob("*.ipynb"):
        for cell in nbformat.read(nb_path, as_version=4).cells:
            for block in HIDDEN.findall(cell.source):
                lines |= {ln.strip() for ln in block.split("\n") if len(ln.strip()) > 12}
    return lines


def page_text(page_html: str) -> str:
    """The text of an HTML feedback page (tags removed, entities decoded), as a learner reads it."""
    return html.unescape(re.sub(r"<[^>]+>", "", page_html))


def leaked_lines(page_html: str, secret: set[str]) -> list[str]:
    """The hidden test lines of ``secret`` (``hidden_lines``) that an HTML feedback page shows."""
    text = page_text(page_html)
    return sorted(line for line in secret if line in text)
