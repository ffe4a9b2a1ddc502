"""Grading that cannot be fooled or broken: adversarial submissions autograded as an instructor would.

All submissions of notebook 00 (3 exercises, 2 points each) go into ONE scratch course and are graded by
ONE ``autograde`` call over every student (as ``nbgrader autograde 00_welcome`` does), with the course's
hooks (``course_lib.nbgrader_hooks``), a 20 s cell timeout and a kernel memory limit. Each submission's
scores are then read from the gradebook. The submissions and what each must score are in
``tests/adversarial_submissions.py``.
"""

from __future__ import annotations

import pytest

from adversarial_submissions import SUBMISSIONS
from nbgrader_course import Course

pytestmark = pytest.mark.slow

ASSIGNMENT = "00_welcome"
GRADED_CELL_TIMEOUT = 20  # s; a test cell of notebook 00 takes well under 1 s
MEMORY_LIMIT_MB = 3000  # the kernel of notebook 00 maps about 1.3 GB; the memory bomb stops at this limit


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    """The one scratch course, every submission in it, one autograde call."""
    course = Course(tmp_path_factory.mktemp("adversarial"), ASSIGNMENT, memory_limit_mb=MEMORY_LIMIT_MB,
                    graded_cell_timeout=GRADED_CELL_TIMEOUT)  # the infinite loop costs this much
    expected = {}
    for student, build in SUBMISSIONS.items():
        nb, expected[student] = build(ASSIGNMENT)
        course.submit(student, nb)
    return course, course.autograde_all(), expected


class TestAdversarialGrading:
    @pytest.mark.parametrize("student", list(SUBMISSIONS))
    def test_scores(self, graded, student):
        course, result, expected = graded
        scores = course.scores(student)
        got = {gid: score for gid, (score, _) in scores.items()}
        assert got == expected[student], f"{student}: scores {got}, expected {expected[student]}\n{result['log'][-4000:]}"

    def test_the_batch_graded_every_student(self, graded):
        course, result, expected = graded
        assert result["success"], result["log"][-4000:]
        for student in expected:
            assert (course.root / "autograded" / student / ASSIGNMENT).is_dir(), f"{student} was not autograded"
