"""The nbgrader round trip on every notebook, graded through nbgrader's API as an instructor would.

Two submissions per notebook, autograded in one scratch course:

- ``typed``: the student notebook with the solutions typed into its answer cells must score full
  marks on every autograded cell, hidden tests included (nbgrader restores them from the
  gradebook), which also proves that the solution notebook itself passes;
- ``unmodified_tampered``: the student notebook as released, with every locked test cell
  replaced by ``pass``, must score zero on every cell. Zero needs both invariants at once:
  nbgrader restores the original tests (otherwise ``pass`` would score full marks) and no
  test passes on the stub ``raise NotImplementedError()`` (no free points).

Scores are read from the gradebook, never from exit codes. One test class per notebook, so that
``pytest-xdist --dist loadscope`` spreads notebooks over the cores while each class shares its course.
"""

from __future__ import annotations

import nbformat
import pytest

from nbgrader_course import Course, assignments, release_path, solution_path, typed_solutions, with_test_cells

pytestmark = pytest.mark.slow


def _submission(kind: str, assignment: str) -> nbformat.NotebookNode:
    release = nbformat.read(release_path(assignment), as_version=4)
    if kind == "typed":
        return typed_solutions(release, nbformat.read(solution_path(assignment), as_version=4))
    if kind == "unmodified_tampered":
        return with_test_cells(release, "pass")
    raise ValueError(kind)


def _check_scores(course: Course, kind: str, expect_full: bool) -> None:
    assignment = course.assignment
    course.submit(kind, _submission(kind, assignment))
    scores = course.autograde(kind)
    assert len(scores) >= 3, f"{assignment} has {len(scores)} autograded cells; every notebook needs at least 3"
    for grade_id, (score, max_score) in scores.items():
        assert max_score > 0, f"{assignment}/{grade_id} is worth no points"
        if expect_full:
            assert score == max_score, f"{kind} submission of {assignment}: {grade_id} scored {score}/{max_score}"
        else:
            assert score == 0, f"{kind} submission of {assignment}: {grade_id} scored {score}/{max_score}, expected 0"


class _RoundTrip:
    assignment: str

    @pytest.fixture(scope="class")
    def course(self, tmp_path_factory):
        return Course(tmp_path_factory.mktemp(self.assignment), self.assignment)

    def test_typed_solutions_score_full_marks(self, course):
        _check_scores(course, "typed", expect_full=True)

    def test_unmodified_and_tampered_scores_zero(self, course):
        _check_scores(course, "unmodified_tampered", expect_full=False)


for _assignment in assignments():
    _name = "TestRoundTrip_" + _assignment
    globals()[_name] = type(_name, (_RoundTrip,), {"assignment": _assignment})
