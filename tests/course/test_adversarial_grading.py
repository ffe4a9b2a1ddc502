"""Grading that cannot be fooled or broken: adversarial submissions autograded as an instructor would.

All submissions of notebook 00 (3 exercises, 2 points each) go into ONE scratch course and are graded by
ONE ``autograde`` call over every student (as ``nbgrader autograde 00_welcome`` does), with the course's
hooks (``course_lib.nbgrader_hooks``), a 10 s cell timeout and a kernel memory limit. Every submission ends
at its last graded cell (the demo after it, loading MiniLM, grades nothing). Each submission's
scores are then read from the gradebook. The submissions and what each must score are in
``tests/adversarial_submissions.py``.
"""

from __future__ import annotations

import json

import nbformat
import pytest

from adversarial_submissions import SUBMISSIONS, without_ungraded_tail
from nbgrader_course import Course

pytestmark = pytest.mark.slow

ASSIGNMENT = "00_welcome"
GRADED_CELL_TIMEOUT = 10  # s; a test cell of notebook 00 takes well under 1 s (the infinite loop burns this much)
MEMORY_LIMIT_MB = 3000  # the kernel of notebook 00 maps about 1.3 GB; the memory bomb stops at this limit


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    """The one scratch course, every submission in it, one autograde call."""
    course = Course(tmp_path_factory.mktemp("adversarial"), ASSIGNMENT, memory_limit_mb=MEMORY_LIMIT_MB,
                    graded_cell_timeout=GRADED_CELL_TIMEOUT)
    expected = {}
    for student, build in SUBMISSIONS.items():
        nb, expected[student] = build(ASSIGNMENT)
        course.submit(student, without_ungraded_tail(nb, ASSIGNMENT))  # the attacks are all above the last graded cell
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

    def test_tampering_is_flagged_in_the_autograded_notebook(self, graded):
        course, _, _ = graded
        nb = nbformat.read(course.root / "autograded" / "monkeypatch" / ASSIGNMENT / f"{course.notebook}.ipynb", 4)
        restored = {c.metadata.get("nbgrader", {}).get("grade_id"): c.metadata.get("course_guard", {}).get("restored")
                    for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade")}
        assert {"course_lib.grading.check_function", "builtins.AssertionError", "course_lib.basics.relative_error",
                "course_lib.formats.GB", "course_lib.hqq.DEFAULTS (edited in place)"} <= set(restored["test_relative_error"])
        assert {"name grading", "ZMQInteractiveShell().showtraceback", "custom exception handlers"} <= \
            set(restored["test_sqnr_db"])
        assert {"input_transformers_cleanup", "events.pre_run_cell"} <= set(restored["test_count_parameters"])
        broken = nbformat.read(course.root / "autograded" / "breaks_guard" / ASSIGNMENT / f"{course.notebook}.ipynb", 4)
        (closed,) = [c for c in broken.cells if c.metadata.get("nbgrader", {}).get("grade_id") == "test_count_parameters"]
        assert closed.metadata["course_guard"] == {"restored": None}, "a guard that could not run must be flagged"
        assert [o.ename for o in closed.outputs if o.output_type == "error"] == ["GradingIntegrityError"]
        honest = nbformat.read(course.root / "autograded" / "noisy" / ASSIGNMENT / f"{course.notebook}.ipynb", 4)
        assert not [c for c in honest.cells if "course_guard" in c.metadata], "an honest submission was flagged"


def test_hooks_units():
    """The pieces of the hooks that need no kernel: imports of a dead cell, duplicate ids, hidden tests."""
    from nbgrader.preprocessors import ClearHiddenTests  # noqa: F401  (nbgrader is installed)

    from course_lib import nbgrader_hooks as hooks

    assert hooks._imports_of("import os\nfrom course_lib import basics\nos._exit(1)\n%time x") == \
        "import os\nfrom course_lib import basics"
    assert hooks._imports_of("def (") == ""
    meta = {"nbgrader": {"grade_id": "f", "solution": True, "grade": False, "locked": False}}
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("a", metadata=json.loads(json.dumps(meta))),
                                         nbformat.v4.new_code_cell("b", metadata=json.loads(json.dumps(meta)))])
    nb, _ = hooks.DeduplicateIdsFully().preprocess(nb, {})
    assert "nbgrader" not in nb.cells[0].metadata and nb.cells[1].metadata["nbgrader"]["grade_id"] == "f"
    cell = nbformat.v4.new_code_cell("check()\n### BEGIN HIDDEN TESTS\nsecret()\n### END HIDDEN TESTS")
    cell.outputs = [nbformat.v4.new_output("error", ename="AssertionError", evalue="msg",
                                           traceback=["----> 3 secret()", "AssertionError: msg"])]
    cell, _ = hooks.HideHiddenTests().preprocess_cell(cell, {}, 0)
    assert "secret" not in cell.source and "secret" not in "".join(cell.outputs[0].traceback)


def test_grading_executors_send_the_kernel_no_output_widget_messages(tmp_path):
    """nbclient imitates a front end's ipywidgets.Output: it sends the widget's outputs back to the kernel on
    the shell channel while the cell runs, which on a loaded machine hung nbgrader's Validate for good. The
    course's executors (autograde's GuardedExecute, and nbgrader's Execute as the Validator uses it) must
    not. Control: plain nbclient does send them, so the kernel sees the outputs and the check can fail."""
    from nbclient import NotebookClient
    from nbgrader.preprocessors import Execute
    from traitlets.config import Config

    from course_lib import course_grading
    from course_lib.nbgrader_hooks import GuardedExecute

    course_grading.configure(Config())
    nb = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_code_cell('import ipywidgets\nfrom IPython.display import display\n'
                                  'out = ipywidgets.Output()\ndisplay(out)\nwith out:\n    print("inside")'),
        nbformat.v4.new_code_cell("print(len(out.outputs))"),  # what reached the kernel's widget model
    ], metadata={"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}})

    def outputs_seen_by_the_kernel(executed) -> str:
        return "".join(o.get("text", "") for o in executed.cells[1].outputs).strip()

    control = NotebookClient(nbformat.from_dict(nb), timeout=120, resources={"metadata": {"path": str(tmp_path)}})
    assert outputs_seen_by_the_kernel(control.execute()) == "1", "plain nbclient no longer sends Output widget state"
    for executor in (Execute, GuardedExecute):
        executed, _ = executor(timeout=120).preprocess(nbformat.from_dict(nb), {"metadata": {"path": str(tmp_path)}})
        assert outputs_seen_by_the_kernel(executed) == "0", f"{executor.__name__} sent Output widget messages"
