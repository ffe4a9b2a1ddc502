"""benchmarks/grade_at_scale.py: grading in parallel groups and merging gives the sequential gradebook.

Four submissions of 00_welcome (two typed-correct, two unmodified), autograded once by one sequential
`nbgrader autograde` and once in two course copies at the same time merged into the main gradebook:
every student's score and every grade cell's score must agree, and the merged course must have each
student's autograded notebook (what generate_feedback reads).
"""

from __future__ import annotations

import sys

import pytest

from nbgrader_course import ROOT

sys.path.insert(0, str(ROOT / "benchmarks"))

import grade_at_scale  # noqa: E402


def _grades(course):
    from nbgrader.api import Gradebook

    with Gradebook(f"sqlite:///{course}/gradebook.db") as gb:
        return {(s.student.id, g.name): (g.auto_score, g.max_score, g.needs_manual_grade)
                for s in gb.assignment_submissions("00_welcome") for nb in s.notebooks for g in nb.grades}


@pytest.mark.slow
def test_parallel_groups_give_the_sequential_scores(tmp_path):
    kinds = grade_at_scale.make_course(tmp_path / "seq", "00_welcome", 4)
    grade_at_scale.make_course(tmp_path / "par", "00_welcome", 4)
    grade_at_scale.grade_sequential(tmp_path / "seq", "00_welcome")
    grade_at_scale.grade_parallel(tmp_path / "par", "00_welcome", jobs=2, workdir=tmp_path)

    sequential = grade_at_scale.scores(tmp_path / "seq", "00_welcome")
    parallel = grade_at_scale.scores(tmp_path / "par", "00_welcome")
    assert parallel == sequential
    assert {s for s, k in kinds.items() if k == "correct"} == {s for s, v in sequential.items() if v == 6.0}
    assert {s for s, k in kinds.items() if k == "unmodified"} == {s for s, v in sequential.items() if v == 0.0}
    assert _grades(tmp_path / "par") == _grades(tmp_path / "seq")
    for student in kinds:
        assert (tmp_path / "par" / "autograded" / student / "00_welcome" / "welcome.ipynb").exists()


def test_merge_replaces_a_regraded_submission(tmp_path):
    """Merging the same group twice (a re-grade) leaves one submission per student, not two."""
    from nbgrader.api import Gradebook

    main, group = tmp_path / "main", tmp_path / "group"
    for course in (main, group):
        (course / "autograded" / "s1" / "a").mkdir(parents=True)
        with Gradebook(f"sqlite:///{course}/gradebook.db") as gb:
            gb.add_assignment("a")
            gb.add_notebook("nb", "a")
            gb.add_grade_cell("t", "nb", "a", max_score=2, cell_type="code")
    with Gradebook(f"sqlite:///{group}/gradebook.db") as gb:
        gb.add_student("s1")
        gb.add_submission("a", "s1")
        gb.find_grade("t", "nb", "a", "s1").auto_score = 2.0
        gb.db.commit()
    for _ in range(2):
        assert grade_at_scale.merge_gradebook(main, group, "a") == ["s1"]
    assert grade_at_scale.scores(main, "a") == {"s1": 2.0}
