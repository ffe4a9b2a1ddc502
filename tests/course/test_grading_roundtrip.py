"""The nbgrader round trip on every notebook, graded through nbgrader's API as an instructor would.

Two submissions per notebook, autograded in one scratch course:

- ``typed``: the student notebook with the solutions typed into its answer cells must score full
  marks on every autograded cell, hidden tests included (nbgrader restores them from the
  gradebook), which also proves that the solution notebook itself passes; a written answer
  (nbgrader's manually graded cell, the capstone's write-up) is left to the instructor, ungraded;
- ``delegating_tampered``: the student notebook as released, with every locked test cell
  replaced by ``pass`` and the answers of ``adversarial_submissions.DELEGATIONS`` typed in (each hands
  the work to code that computes it: a sibling course_lib function, the reference under another name,
  torch's quantizers, the course's custom ops; the capstone's patches the budget and the target), must
  score zero on every cell. Zero needs three invariants at once: nbgrader restores the original tests
  (otherwise ``pass`` would score full marks), no test passes on the stub ``raise NotImplementedError()``
  (no free points), and no test passes on a delegating answer (``grading.no_delegation``,
  ``grading.unchanged``, and the hooks' restoring of course_lib's constants). Each of its test cells must
  fail by a check (an AssertionError: a course check or the test's own assert), not by an unrelated error
  such as a NameError.

Both submissions end at the release's last graded cell: the learner deleted the demos and tables after it, as
any learner may. They grade nothing and cannot change a score; nbval runs them (every cell of every solution
notebook), and CI does not spend minutes running them a second and a third time.

Scores are read from the gradebook, never from exit codes. One test class per notebook, so that
``pytest-xdist --dist loadscope`` spreads notebooks over the cores while each class shares its course.

Determinism: the ``typed`` run's text outputs, every code cell up to the last graded one, must equal those of
nbval's run of the solution notebook (``tests/notebook_outputs.py``; the root conftest.py runs that comparison
after the notebook's nbval cells): what grades a learner is the same in the autograder as in the learner's run.
"""

from __future__ import annotations

import nbformat
import pytest

from adversarial_submissions import DELEGATIONS, set_answer, without_ungraded_tail
from nbgrader_course import Course, assignments, release_path, solution_path, typed_solutions, with_test_cells
from notebook_outputs import cell_text, differences

pytestmark = pytest.mark.slow

AUTOGRADED_TYPED: dict[str, nbformat.NotebookNode] = {}  # assignment -> its autograded ``typed`` notebook
ROOT = str(release_path("00_welcome").parents[2])


def _submission(kind: str, assignment: str) -> nbformat.NotebookNode:
    release = nbformat.read(release_path(assignment), as_version=4)
    if kind == "typed":
        typed = typed_solutions(release, nbformat.read(solution_path(assignment), as_version=4))
        return without_ungraded_tail(typed, assignment)
    if kind == "delegating_tampered":
        nb = with_test_cells(release, "pass")
        for answer_id, source in DELEGATIONS.get(assignment, {}).items():
            set_answer(nb, answer_id, source)
        return without_ungraded_tail(nb, assignment)
    raise ValueError(kind)


def _check_scores(course: Course, kind: str, expect_full: bool) -> None:
    assignment = course.assignment
    course.submit(kind, _submission(kind, assignment))
    scores = course.autograde(kind)
    autograded = nbformat.read(course.root / "autograded" / kind / assignment / f"{course.notebook}.ipynb",
                               as_version=4)
    assert len(scores) >= 3, f"{assignment} has {len(scores)} autograded cells; every notebook needs at least 3"
    written = {c.metadata["nbgrader"]["grade_id"] for c in autograded.cells if _is_written_answer(c)}
    for grade_id, (score, max_score) in scores.items():
        assert max_score > 0, f"{assignment}/{grade_id} is worth no points"
        if expect_full and grade_id in written:  # a written answer: autograde leaves it to the instructor
            assert score is None, f"{kind} submission of {assignment}: written answer {grade_id} was autograded"
        elif expect_full:
            assert score == max_score, f"{kind} submission of {assignment}: {grade_id} scored {score}/{max_score}"
        else:
            assert score == 0, f"{kind} submission of {assignment}: {grade_id} scored {score}/{max_score}, expected 0"
    if kind == "typed":
        AUTOGRADED_TYPED[assignment] = autograded
    else:
        for cell in autograded.cells:
            if _is_test_cell(cell):
                errors = [out.get("ename") for out in cell.outputs if out.get("output_type") == "error"]
                assert errors == ["AssertionError"], (
                    f"{kind} submission of {assignment}: test cell {cell.metadata['nbgrader']['grade_id']} must fail "
                    f"by a check (an AssertionError), not by {errors or 'no error'}; its output:\n"
                    + "\n".join(cell_text(cell.outputs, True, ROOT))[-1500:])


class _RoundTrip:
    assignment: str

    @pytest.fixture(scope="class")
    def course(self, tmp_path_factory):
        return Course(tmp_path_factory.mktemp(self.assignment), self.assignment)

    def test_typed_solutions_score_full_marks(self, course):
        _check_scores(course, "typed", expect_full=True)

    def test_unmodified_delegating_and_tampered_scores_zero(self, course):
        _check_scores(course, "delegating_tampered", expect_full=False)

    def test_outputs_match_the_nbval_run(self, request):
        """Two runs of the solution, the same numbers up to the last graded cell: nbval's and the autograder's
        (timings sanitized)."""
        nbval_run = request.config.course_nbval_outputs.get(self.assignment)
        if nbval_run is None:
            pytest.skip(f"nbval did not run solutions/{self.assignment} in this session (collect solutions/ too)")
        if self.assignment not in AUTOGRADED_TYPED:
            pytest.skip("the typed submission was not autograded in this session")
        typed = AUTOGRADED_TYPED[self.assignment]
        autograded = [(c.source, cell_text(c.outputs, _is_test_cell(c), ROOT)) for c in typed.cells
                      if c.cell_type == "code"]
        solution = nbformat.read(solution_path(self.assignment), as_version=4)
        test_sources = {c.source for c in solution.cells if _is_test_cell(c)}
        nbval = [(source, cell_text(outputs, source in test_sources, ROOT)) for source, outputs in nbval_run]
        # the autograded submission ends at the last graded cell: compare that part
        assert len(autograded) <= len(nbval), f"{self.assignment}: {len(autograded)} autograded code cells, " \
                                              f"nbval ran {len(nbval)}"
        problems = differences(nbval[:len(autograded)], autograded, ("nbval run", "autograder run"))
        assert not problems, (f"{self.assignment}: the two runs of the solution printed different numbers (seed "
                              f"every generator; print timings with a unit, see tests/notebook_outputs.py):\n"
                              + "\n".join(problems[:5]))


def _is_written_answer(cell) -> bool:
    """A manually graded answer (nbgrader: grade and solution): autograde scores it only when left as released (0)."""
    meta = cell.metadata.get("nbgrader", {})
    return bool(meta.get("grade")) and bool(meta.get("solution"))


def _is_test_cell(cell) -> bool:
    """An autograded test cell (its stderr is turned into stdout by the course's autograder hooks)."""
    meta = cell.metadata.get("nbgrader", {})
    return cell.cell_type == "code" and bool(meta.get("grade")) and not meta.get("solution")


for _assignment in assignments():
    _name = "TestRoundTrip_" + _assignment
    globals()[_name] = type(_name, (_RoundTrip,), {"assignment": _assignment})
