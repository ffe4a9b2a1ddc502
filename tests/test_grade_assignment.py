"""scripts/grade_assignment.py end to end: two submissions in, grades.csv and feedback without hidden tests out."""

from __future__ import annotations

import csv
import html
import re
import sys

import nbformat
import pytest

from adversarial_submissions import correct, set_answer, wrong
from nbgrader_course import ROOT, Course

sys.path.insert(0, str(ROOT / "scripts"))
import grade_assignment  # noqa: E402

pytestmark = pytest.mark.slow

ASSIGNMENT = "00_welcome"

CONFIG = """c = get_config()
c.CourseDirectory.root = {root!r}
c.CourseDirectory.source_directory = "source"
c.CourseDirectory.release_directory = "release"
c.CourseDirectory.db_url = {db!r}
c.Exchange.root = {exchange!r}
c.OverwriteCells.add_missing_cells = True
c.Execute.timeout = 600
from course_lib import nbgrader_hooks
nbgrader_hooks.configure(c)
"""


def test_one_command_grades_exports_and_hides_hidden_tests(tmp_path):
    course = Course(tmp_path / "course", ASSIGNMENT)
    root = course.root
    (root / "nbgrader_config.py").write_text(CONFIG.format(root=str(root), db=f"sqlite:///{root / 'gradebook.db'}",
                                                            exchange=str(root / "exchange")))
    inbox = tmp_path / "inbox"
    good = correct(ASSIGNMENT)
    bad = correct(ASSIGNMENT)
    for fn in ("relative_error", "sqnr_db", "count_parameters"):
        set_answer(bad, fn, wrong(bad, fn))
    for student, nb in (("alice", good), ("bob", bad)):
        (inbox / student).mkdir(parents=True)
        nbformat.write(nb, inbox / student / f"{course.notebook}.ipynb")

    rc = grade_assignment.main([ASSIGNMENT, "--submissions", str(inbox), "--course-dir", str(root),
                                "--timeout-per-student", "900", "--memory-limit", "4000"])
    assert rc == 0

    rows = {r["student_id"]: r for r in csv.DictReader((root / "grades.csv").open())}
    assert float(rows["alice"]["score"]) == 6.0 and float(rows["alice"]["max_score"]) == 6.0
    assert float(rows["bob"]["score"]) == 0.0

    secret = grade_assignment.hidden_lines(root, ASSIGNMENT)
    assert any("overflow in fp16" in line for line in secret)  # the check below looks for something real
    pages = sorted((root / "feedback").glob(f"*/{ASSIGNMENT}/*.html"))
    assert {p.parts[-3] for p in pages} == {"alice", "bob"}
    for page in pages:
        text = html.unescape(re.sub(r"<[^>]+>", "", page.read_text(encoding="utf-8")))
        assert "relative_error" in text  # the feedback is there...
        leaked = [line for line in secret if line in text]
        assert not leaked, f"{page} shows hidden tests: {leaked[:3]}"  # ...without the hidden tests
