"""A scratch nbgrader course for tests: the repo's solutions and release, a throw-away gradebook.

Used by the round-trip tests: build submissions from the committed notebooks, autograde them
through nbgrader's API exactly as an instructor would, and read the scores from the gradebook.
"""

from __future__ import annotations

import re
import shutil
import sys
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

from generate_notebooks import scratch_config  # noqa: E402
SOLUTION_MARKERS = re.compile(r"^\s*### (BEGIN|END) SOLUTION\s*$")


def assignments() -> list[str]:
    return sorted(p.name for p in (ROOT / "solutions").iterdir() if p.is_dir() and any(p.glob("*.ipynb")))


def notebook_name(assignment: str) -> str:
    (nb,) = (ROOT / "solutions" / assignment).glob("*.ipynb")
    return nb.stem


def solution_path(assignment: str) -> Path:
    return ROOT / "solutions" / assignment / f"{notebook_name(assignment)}.ipynb"


def release_path(assignment: str) -> Path:
    return ROOT / "notebooks" / assignment / f"{notebook_name(assignment)}.ipynb"


def typed_solutions(release: nbformat.NotebookNode, solution: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """The release notebook with each answer cell's body replaced by the solution, as a learner would type it."""
    answers = {c.metadata["nbgrader"]["grade_id"]: c.source for c in solution.cells
               if c.metadata.get("nbgrader", {}).get("solution")}
    typed = nbformat.from_dict(release)
    for cell in typed.cells:
        meta = cell.metadata.get("nbgrader", {})
        if meta.get("solution"):
            lines = answers[meta["grade_id"]].split("\n")
            cell.source = "\n".join(ln for ln in lines if not SOLUTION_MARKERS.match(ln))
    return typed


def with_test_cells(nb: nbformat.NotebookNode, source: str) -> nbformat.NotebookNode:
    """A copy of ``nb`` whose autograded test cells were all overwritten with ``source``."""
    edited = nbformat.from_dict(nb)
    for cell in edited.cells:
        if cell.metadata.get("nbgrader", {}).get("grade") and cell.cell_type == "code":
            cell.source = source
    return edited


class Course:
    """A scratch course directory with one assignment generated (so the gradebook knows its cells)."""

    def __init__(self, root: Path, assignment: str, timeout: int = 300, memory_limit_mb: int | None = None,
                 graded_cell_timeout: int | None = None):
        from nbgrader.apps import NbGraderAPI

        from course_lib import course_grading

        self.root, self.assignment = root, assignment
        self.notebook = notebook_name(assignment)
        shutil.copytree(ROOT / "solutions" / assignment, root / "source" / assignment)
        config = scratch_config(root, source_directory="source")
        # the course's settings and hooks, as nbgrader_config.py has them
        course_grading.configure(config, memory_limit_mb=memory_limit_mb or 0, timeout=timeout)
        config.GuardedExecute.graded_cell_timeout = graded_cell_timeout
        self.config = config
        self.api = NbGraderAPI(config=config)
        result = self.api.generate_assignment(assignment, force=True, create=True)
        if not result["success"]:
            raise RuntimeError(result["log"])

    def submit(self, student: str, nb: nbformat.NotebookNode) -> None:
        target = self.root / "submitted" / student / self.assignment / f"{self.notebook}.ipynb"
        target.parent.mkdir(parents=True, exist_ok=True)
        nbformat.write(nb, target)

    def autograde(self, student: str) -> dict[str, tuple[float | None, float]]:
        """Autograde one submission; returns {grade_id: (auto_score, max_score)} read from the gradebook."""
        result = self.api.autograde(self.assignment, student, force=True, create=True)
        if not result["success"]:
            raise RuntimeError(f"autograde failed for {student}:\n{result['log']}")
        return self.scores(student)

    def autograde_all(self) -> dict:
        """Autograde every submission in one nbgrader call, as ``nbgrader autograde <assignment>`` does;
        returns nbgrader's result (``success`` is False when any student failed, ``log``)."""
        return self.api.autograde(self.assignment, "*", force=True, create=True)

    def scores(self, student: str) -> dict[str, tuple[float | None, float]]:
        """{grade_id: (auto_score, max_score)} of one student, read from the gradebook."""
        from nbgrader.api import Gradebook

        with Gradebook(self.config.CourseDirectory.db_url) as gb:
            submission = gb.find_submission_notebook(self.notebook, self.assignment, student)
            return {g.name: (g.auto_score, g.max_score) for g in submission.grades if g.auto_score is not None
                    or g.max_score > 0}
