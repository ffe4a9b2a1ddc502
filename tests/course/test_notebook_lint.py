"""Static checks of every solution notebook: the grading rules that a run cannot show."""

from __future__ import annotations

import ast
import importlib
import pkgutil
import re
import sys
from pathlib import Path

import nbformat
import pytest

import course_lib

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))
import nbsource  # noqa: E402

SOLUTIONS = sorted((ROOT / "solutions").glob("*/*.ipynb"))
IDS = [p.parent.name for p in SOLUTIONS]


def _meta(cell):
    return cell.metadata.get("nbgrader", {})


def _python(source: str) -> str:
    """Cell source with IPython magics and shell escapes blanked out, so that ast can parse it."""
    return "\n".join("" if ln.lstrip().startswith(("%", "!")) else ln for ln in source.split("\n"))


HIDDEN = re.compile(r"### BEGIN HIDDEN TESTS.*?### END HIDDEN TESTS", re.S)


def _bare_expression(stmt: ast.stmt) -> bool:
    """True for a final statement whose value nbgrader could show: any expression except a call of a
    `grading.<helper>` (those return None, see tests/course/test_grading.py)."""
    if not isinstance(stmt, ast.Expr):
        return False
    call = stmt.value
    return not (isinstance(call, ast.Call) and isinstance(call.func, ast.Attribute)
                and isinstance(call.func.value, ast.Name) and call.func.value.id == "grading")


def _reference_names() -> set[str]:
    names = set()
    for info in pkgutil.walk_packages(course_lib.__path__, "course_lib."):
        names |= set(vars(importlib.import_module(info.name)))  # importing kernels builds nothing
    return names


@pytest.fixture(scope="module")
def reference_names():
    return _reference_names()


# Open exercises whose answer is a value a learner could copy (the capstone's recipe): their reference is in
# tests/library/test_capstone.py, never in course_lib, where any learner could call it.
ANSWER_IS_A_VALUE = {"my_recipe"}


def test_there_are_notebooks():
    assert len(SOLUTIONS) >= 3


@pytest.mark.parametrize("path", SOLUTIONS, ids=IDS)
def test_committed_without_outputs(path):
    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert not cell.outputs and cell.execution_count is None, (
                f"{path.name}: cell {cell.get('id')} has outputs; commit solutions with outputs cleared")


@pytest.mark.parametrize("path", SOLUTIONS, ids=IDS)
def test_text_form_round_trips(path):
    nb = nbformat.read(path, as_version=4)
    again = nbsource.py_to_notebook(nbsource.notebook_to_py(nb))
    assert [(c.cell_type, c.source, c.metadata.get("nbgrader")) for c in again.cells] == \
        [(c.cell_type, c.source, c.metadata.get("nbgrader")) for c in nb.cells]


@pytest.mark.parametrize("path", SOLUTIONS, ids=IDS)
def test_grading_rules(path, reference_names):
    nb = nbformat.read(path, as_version=4)
    ids = [_meta(c)["grade_id"] for c in nb.cells if _meta(c)]
    assert len(ids) == len(set(ids)), f"{path.name}: duplicate grade_id in {ids}"
    tests = [c for c in nb.cells if _meta(c).get("grade") and not _meta(c).get("solution")]
    answers = [c for c in nb.cells if _meta(c).get("solution") and not _meta(c).get("grade")]
    for cell in nb.cells:  # a manually graded answer (grade and solution): a written answer the instructor grades
        if _meta(cell).get("grade") and _meta(cell).get("solution"):
            assert cell.cell_type == "markdown" and _meta(cell).get("points", 0) > 0, \
                f"{path.name}: manually graded cell {_meta(cell)['grade_id']} must be a markdown cell with points"
    assert len(tests) >= 3, f"{path.name} has {len(tests)} graded test cells; at least 3 are required"
    assert nb.cells[0].cell_type == "markdown" and _meta(nb.cells[0]).get("locked"), "the title cell must be locked"
    assert any(_meta(c).get("grade_id") == "setup" for c in nb.cells), "the Colab set-up cell (id=setup) is missing"
    for cell in tests:
        gid = _meta(cell)["grade_id"]
        assert cell.cell_type == "code" and _meta(cell).get("points", 0) > 0, f"{gid} must be a code cell with points"
        assert "### BEGIN HIDDEN TESTS" in cell.source and "### END HIDDEN TESTS" in cell.source, \
            f"{path.name}: test cell {gid} has no hidden tests"
        visible = HIDDEN.sub("", cell.source)  # what the learner's copy holds
        for label, source in (("solution", cell.source), ("student", visible)):
            last = ast.parse(_python(source)).body[-1]
            assert not _bare_expression(last), (
                f"{path.name}: test cell {gid} ({label} version) ends on a bare expression (line {last.lineno}); "
                "nbgrader would read its value as the score: end on an assert or a course_lib.grading call")
    for cell in answers:
        gid = _meta(cell)["grade_id"]
        assert "### BEGIN SOLUTION" in cell.source and "### END SOLUTION" in cell.source, f"{gid} has no solution markers"
        defined = [n.name for n in ast.parse(_python(cell.source)).body
                   if isinstance(n, (ast.FunctionDef, ast.ClassDef))]
        for name in defined:
            assert name in reference_names or name in ANSWER_IS_A_VALUE, \
                f"{path.name}: exercise {name} has no reference of that name in course_lib"
            assert name not in ANSWER_IS_A_VALUE or name not in reference_names, \
                f"{path.name}: course_lib.{name} would hand every learner the answer of {name}"


@pytest.mark.parametrize("path", SOLUTIONS, ids=IDS)
def test_test_cells_read_nothing_the_learner_can_rebind(path):
    """A test cell calls learner functions only through the grading helpers (which watch for delegation
    and for changes to what the test reads) and imports, itself, every notebook-level import it uses."""
    nb = nbformat.read(path, as_version=4)
    learner = set()
    imported = {}  # name -> the cell that imports it, from the notebook's non-answer, non-test cells
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        tree = ast.parse(_python(cell.source))
        meta = _meta(cell)
        if meta.get("solution"):
            learner |= {n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef))}
            continue
        if meta.get("grade"):
            gid = meta["grade_id"]
            own = {a.asname or a.name.split(".")[0] for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))
                   for a in n.names}
            for node in ast.walk(tree):
                if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in learner:
                    raise AssertionError(f"{path.name}: test cell {gid} calls {node.func.id}(...) directly (line "
                                         f"{node.lineno}): call it through grading.call_learner/check_function")
            read = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)}
            missing = sorted((read & set(imported)) - own)
            assert not missing, (f"{path.name}: test cell {gid} reads {missing}, imported in an earlier cell: "
                                 f"import them in the test cell itself (the learner can rebind notebook names)")
        for node in tree.body:
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                imported.update({a.asname or a.name.split(".")[0]: True for a in node.names})
