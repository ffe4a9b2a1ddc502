"""INSTRUCTORS.md "Running a workshop on one machine (a local exchange)", end to end, without JupyterHub.

A scratch copy of the course (the repository's own nbgrader_config.py, solutions/ and notebooks/ of 00_welcome)
and an exchange folder (mode 1777) named by COURSE_EXCHANGE; the instructor and two learners run the recipe's
nbgrader commands: generate_assignment (fills gradebook.db), release_assignment; each learner, with the recipe's
~/.jupyter/nbgrader_config.py in their own HOME, fetch_assignment and submit (alice the solutions typed
into the fetched notebook, bob the fetched notebook untouched); collect, autograde, generate_feedback,
release_feedback; each learner fetch_feedback. Scores are read from the gradebook. Every user here is the same
OS account: nbgrader 0.9 names a submission after the OS account (not $USER), so each learner passes
``--student <name>`` to submit and fetch_feedback, as a learner with an account of their own never needs to.

And the repository's nbgrader_config.py on a fresh clone: an exchange that exists, 1777, no Formgrader warning,
the Assignment List's course list without error (loaded as nbgrader's server extensions load it).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import nbformat
import pytest

from nbgrader_course import ROOT, notebook_name, release_path, solution_path, typed_solutions

from course_lib import course_grading

ASSIGNMENT = "00_welcome"
LEARNERS = ("alice", "bob")
# What each learner's ~/.jupyter/nbgrader_config.py holds in the recipe (INSTRUCTORS.md).
LEARNER_CONFIG = """c = get_config()
c.Exchange.root = {exchange!r}
c.CourseDirectory.course_id = "quantization-course"
"""


def _env(**extra: str) -> dict[str, str]:
    """This environment without anything that would point nbgrader elsewhere, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if k != "COURSE_EXCHANGE" and not k.startswith("JUPYTERHUB_")
           and k not in ("JUPYTER_CONFIG_DIR", "JUPYTER_CONFIG_PATH", "JUPYTER_DATA_DIR", "JUPYTER_RUNTIME_DIR")}
    env.update(extra)
    return env


def _nbgrader(*args: str, cwd: Path, env: dict[str, str]) -> str:
    """One nbgrader command as typed (this environment's nbgrader, in ``cwd``); fails the test on an error."""
    rc, out = course_grading.nbgrader(*args, course=cwd, env=env, timeout=600)
    assert rc == 0, f"nbgrader {' '.join(args)} failed ({rc}):\n{out[-4000:]}"
    return out


def _each_learner(step) -> None:
    """``step(learner)`` for every learner at the same time (each learner at their own keyboard)."""
    with ThreadPoolExecutor(len(LEARNERS)) as pool:
        list(pool.map(step, LEARNERS))


def _fresh_clone(path: Path) -> Path:
    """What a fresh clone has that the exchange depends on: the repository's nbgrader_config.py, no exchange/."""
    path.mkdir(parents=True)
    shutil.copy2(ROOT / "nbgrader_config.py", path / "nbgrader_config.py")
    return path


# Loads each course directory's configuration as nbgrader's server extensions do: the Assignment List
# (AssignmentList.load_config: jupyter's config path plus the working directory), whose course list is what
# JupyterLab's Assignments tab shows ("Error fetching courses!" when it fails), and the Formgrader's warning
# (NbGraderAPI.exchange_missing: "The exchange directory at ... does not exist"). One process for all cases:
# argv[1] is a JSON list of [directory, {variable: value, or null to unset}].
PROBE = """
import json, os, sys
from nbgrader.apps import NbGraderAPI
from nbgrader.server_extensions.assignment_list.handlers import AssignmentList
found = []
for directory, variables in json.loads(sys.argv[1]):
    for name, value in variables.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
    os.chdir(directory)
    manager = AssignmentList()
    manager.root_dir = directory
    api = NbGraderAPI(config=manager.load_config())
    found.append({"root": api.exchange_root, "exchange_missing": api.exchange_missing,
                  "courses": manager.list_courses()})
print(json.dumps(found))
"""


def _probe(cases: list[tuple[Path, dict[str, str | None]]], env: dict[str, str]) -> list[dict]:
    run = subprocess.run([sys.executable, "-c", PROBE, json.dumps([[str(d), v] for d, v in cases])],
                         env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-4000:]
    return json.loads(run.stdout.strip().splitlines()[-1])


def _sticky_and_writable(folder: Path) -> None:
    assert folder.is_dir(), folder
    assert stat.S_IMODE(folder.stat().st_mode) == 0o1777, oct(folder.stat().st_mode)
    probe = folder / ".write-test"
    probe.write_text("")
    probe.unlink()


def test_fresh_clone_has_a_working_exchange(tmp_path):
    clone, clone2, clone3 = (_fresh_clone(tmp_path / name) for name in ("clone", "clone2", "clone3"))
    shared = tmp_path / "srv" / "exchange"
    fresh, named, hub = _probe([
        (clone, {"COURSE_EXCHANGE": None, "JUPYTERHUB_USER": None}),
        (clone2, {"COURSE_EXCHANGE": str(shared), "JUPYTERHUB_USER": None}),
        (clone3, {"COURSE_EXCHANGE": None, "JUPYTERHUB_USER": "instructor"}),
    ], _env(HOME=str(tmp_path / "home")))

    assert fresh["root"] == str(clone / "exchange")
    _sticky_and_writable(clone / "exchange")
    assert fresh["exchange_missing"] is False  # the Formgrader shows no exchange warning
    assert fresh["courses"] == {"success": True, "value": []}  # the Assignments tab lists courses (none released)

    # COURSE_EXCHANGE names the folder instead (created 1777 when missing); nothing is made in the clone.
    assert named["root"] == str(shared) and named["exchange_missing"] is False
    _sticky_and_writable(shared)
    assert not (clone2 / "exchange").exists()

    # On JupyterHub the image's configuration names the exchange: the course's does not override it.
    assert hub["root"] != str(clone3 / "exchange") and not (clone3 / "exchange").exists()

    if shutil.which("git") and (ROOT / ".git").exists():  # the clone's exchange/ is never committed
        ignored = subprocess.run(["git", "check-ignore", "-q", "exchange/quantization-course/inbound/x"], cwd=ROOT)
        assert ignored.returncode == 0, "exchange/ is not in .gitignore"


@pytest.mark.slow
def test_local_exchange_workshop_end_to_end(tmp_path):
    notebook = notebook_name(ASSIGNMENT)
    course = tmp_path / "course"
    for part in ("solutions", "notebooks"):
        shutil.copytree(ROOT / part / ASSIGNMENT, course / part / ASSIGNMENT,
                        ignore=shutil.ignore_patterns(".ipynb_checkpoints"))
    shutil.copy2(ROOT / "nbgrader_config.py", course / "nbgrader_config.py")
    exchange = tmp_path / "exchange"
    exchange.mkdir()
    os.chmod(exchange, 0o1777)
    instructor = _env(COURSE_EXCHANGE=str(exchange))

    # Instructor: the assignment into gradebook.db (notebooks/ rewritten as committed), then released.
    _nbgrader("generate_assignment", ASSIGNMENT, "--force", cwd=course, env=instructor)
    released = course / "notebooks" / ASSIGNMENT / f"{notebook}.ipynb"
    assert released.read_bytes() == release_path(ASSIGNMENT).read_bytes()
    _nbgrader("release_assignment", ASSIGNMENT, cwd=course, env=instructor)
    assert (exchange / course_grading.COURSE_ID / "outbound" / ASSIGNMENT / f"{notebook}.ipynb").is_file()

    # Learners: their own HOME (config, nbgrader's cache) and working folder; list, fetch, work, submit.
    work, learner_env = {}, {}
    for learner in LEARNERS:
        home = tmp_path / "learners" / learner
        (home / ".jupyter").mkdir(parents=True)
        (home / ".jupyter" / "nbgrader_config.py").write_text(LEARNER_CONFIG.format(exchange=str(exchange)))
        work[learner] = home / "work"
        work[learner].mkdir()
        learner_env[learner] = _env(HOME=str(home), USER=learner, LOGNAME=learner)
    _each_learner(lambda learner: _nbgrader("fetch_assignment", ASSIGNMENT, cwd=work[learner],
                                            env=learner_env[learner]))
    fetched = {learner: work[learner] / ASSIGNMENT / f"{notebook}.ipynb" for learner in LEARNERS}
    assert fetched["bob"].read_bytes() == release_path(ASSIGNMENT).read_bytes()
    nbformat.write(typed_solutions(nbformat.read(fetched["alice"], as_version=4),
                                   nbformat.read(solution_path(ASSIGNMENT), as_version=4)), fetched["alice"])
    _each_learner(lambda learner: _nbgrader("submit", ASSIGNMENT, "--student", learner, cwd=work[learner],
                                            env=learner_env[learner]))

    # Instructor: collect, autograde, feedback.
    _nbgrader("collect", ASSIGNMENT, cwd=course, env=instructor)
    assert course_grading.submitted(course, ASSIGNMENT) == sorted(LEARNERS)
    _nbgrader("autograde", ASSIGNMENT, cwd=course, env=instructor)
    scores = course_grading.scores(course, ASSIGNMENT)  # nbgrader's Gradebook, course/gradebook.db
    tests = {key: value for key, value in course_grading.grades(course, ASSIGNMENT).items() if value[2] > 0}
    max_score = sum(max_ for (student, _, _), (_, _, max_, _) in tests.items() if student == "alice")
    assert max_score == 6.0, tests
    assert scores == {"alice": max_score, "bob": 0.0}
    for (student, _, cell), (auto, _, max_, _) in tests.items():
        assert auto == (max_ if student == "alice" else 0.0), (student, cell, auto, max_)

    _nbgrader("generate_feedback", ASSIGNMENT, cwd=course, env=instructor)
    _nbgrader("release_feedback", ASSIGNMENT, cwd=course, env=instructor)
    secret = course_grading.hidden_lines(course, ASSIGNMENT)
    assert len(secret) > 10
    _each_learner(lambda learner: _nbgrader("fetch_feedback", ASSIGNMENT, "--student", learner, cwd=work[learner],
                                            env=learner_env[learner]))
    for learner in LEARNERS:
        pages = sorted((work[learner] / ASSIGNMENT / "feedback").glob(f"*/{notebook}.html"))
        assert len(pages) == 1, pages  # their own feedback, in their own folder
        page = pages[0].read_text(encoding="utf-8")
        total = re.search(rf"{notebook} \(Score: ([\d.]+) / ([\d.]+)\)", course_grading.page_text(page))
        assert total and (float(total[1]), float(total[2])) == (scores[learner], max_score), total
        assert not course_grading.leaked_lines(page, secret)  # the course's feedback shows no hidden tests
