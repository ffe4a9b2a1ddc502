"""The nbgrader round trip on every notebook, graded through nbgrader's API as an instructor would.

- the solution notebook scores full marks;
- the unmodified student notebook scores zero on every autograded cell (no free points);
- the student notebook with the solutions typed into its answer cells scores full marks;
- a submission whose locked test cells were replaced by `pass` is restored and graded on the
  original tests (so it scores zero, not full marks).
Scores are read from the gradebook, never from exit codes.
"""

from __future__ import annotations

import nbformat
import pytest

from nbgrader_course import Course, assignments, release_path, solution_path, typed_solutions, with_test_cells

pytestmark = pytest.mark.slow


def _submission(kind: str, assignment: str) -> nbformat.NotebookNode:
    solution = nbformat.read(solution_path(assignment), as_version=4)
    release = nbformat.read(release_path(assignment), as_version=4)
    if kind == "solution":
        return solution
    if kind == "unmodified":
        return release
    if kind == "typed":
        return typed_solutions(release, solution)
    if kind == "tampered":
        return with_test_cells(release, "pass")
    raise ValueError(kind)


EXPECT_FULL = {"solution": True, "typed": True, "unmodified": False, "tampered": False}


@pytest.mark.parametrize("kind", list(EXPECT_FULL))
@pytest.mark.parametrize("assignment", assignments())
def test_round_trip(tmp_path, assignment, kind):
    course = Course(tmp_path, assignment)
    course.submit(kind, _submission(kind, assignment))
    scores = course.autograde(kind)
    assert len(scores) >= 3, f"{assignment} has {len(scores)} autograded cells; every notebook needs at least 3"
    for grade_id, (score, max_score) in scores.items():
        assert max_score > 0, f"{assignment}/{grade_id} is worth no points"
        if EXPECT_FULL[kind]:
            assert score == max_score, f"{kind} submission of {assignment}: {grade_id} scored {score}/{max_score}"
        else:
            assert score == 0, f"{kind} submission of {assignment}: {grade_id} scored {score}/{max_score}, expected 0"
