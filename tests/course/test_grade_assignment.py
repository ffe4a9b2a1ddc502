"""scripts/grade_assignment.py end to end: submissions in, grades.csv and feedback without hidden tests out;
with ``--jobs 2`` (groups in course copies, gradebooks merged) the same gradebook as with ``--jobs 1``."""

from __future__ import annotations

import csv
import sys

import nbformat
import pytest

from adversarial_submissions import correct, set_answer, without_ungraded_tail, wrong
from nbgrader_course import ROOT, Course

sys.path.insert(0, str(ROOT / "scripts"))
import grade_assignment  # noqa: E402

from course_lib import course_grading  # noqa: E402

pytestmark = pytest.mark.slow

ASSIGNMENT = "00_welcome"


def _inbox(path):
    """alice: the solutions (6/6); carol: relative_error off by one under its untouched test (4/6). Both
    deleted the demo after the last graded cell (it loads MiniLM and grades nothing)."""
    good, partly = (without_ungraded_tail(correct(ASSIGNMENT), ASSIGNMENT) for _ in range(2))
    set_answer(partly, "relative_error", wrong(partly, "relative_error"))
    for student, nb in (("alice", good), ("carol", partly)):
        (path / student).mkdir(parents=True)
        nbformat.write(nb, path / student / "welcome.ipynb")
    return path


def _graded(tmp, inbox, jobs):
    """A scratch course (the course's own config: course_grading.write_config) graded by the script."""
    course = Course(tmp / f"course-jobs{jobs}", ASSIGNMENT)
    course_grading.write_config(course.root)
    rc = grade_assignment.main([ASSIGNMENT, "--submissions", str(inbox), "--course-dir", str(course.root),
                                "--timeout-per-student", "900", "--memory-limit", "4000", "--jobs", str(jobs)])
    return course.root, rc


@pytest.fixture(scope="module")
def inbox(tmp_path_factory):
    return _inbox(tmp_path_factory.mktemp("inbox") / "inbox")


@pytest.fixture(scope="module")
def sequential(tmp_path_factory, inbox):
    return _graded(tmp_path_factory.mktemp("sequential"), inbox, jobs=1)


def test_one_command_grades_exports_and_hides_hidden_tests(sequential):
    root, rc = sequential
    assert rc == 0

    rows = {r["student_id"]: r for r in csv.DictReader((root / "grades.csv").open())}
    assert float(rows["alice"]["score"]) == 6.0 and float(rows["alice"]["max_score"]) == 6.0
    assert float(rows["carol"]["score"]) == 4.0

    secret = grade_assignment.hidden_lines(root, ASSIGNMENT)
    assert any("overflow in fp16" in line for line in secret)  # the check below looks for something real
    pages = sorted((root / "feedback").glob(f"*/{ASSIGNMENT}/*.html"))
    assert {p.parts[-3] for p in pages} == {"alice", "carol"}
    for page in pages:
        text = page.read_text(encoding="utf-8")
        assert "relative_error" in course_grading.page_text(text)  # the feedback is there...
        leaked = course_grading.leaked_lines(text, secret)
        assert not leaked, f"{page} shows hidden tests: {leaked[:3]}"  # ...without the hidden tests


def test_jobs_2_gives_the_sequential_gradebook(tmp_path, inbox, sequential):
    root, rc = _graded(tmp_path, inbox, jobs=2)
    assert rc == 0
    assert course_grading.scores(root, ASSIGNMENT) == course_grading.scores(sequential[0], ASSIGNMENT) \
        == {"alice": 6.0, "carol": 4.0}
    assert course_grading.grades(root, ASSIGNMENT) == course_grading.grades(sequential[0], ASSIGNMENT)
    for student in ("alice", "carol"):
        assert (root / "autograded" / student / ASSIGNMENT / "welcome.ipynb").exists()
        assert (root / "feedback" / student / ASSIGNMENT / "welcome.html").exists()
