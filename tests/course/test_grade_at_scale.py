"""Parallel grading groups (course_lib.course_grading.grade, used by benchmarks/grade_at_scale.py and
scripts/grade_assignment.py --jobs): the benchmark's course, the course copies' config, merging gradebooks.
"""

from __future__ import annotations

import importlib.util
import sys

import pytest

from nbgrader_course import ROOT

from course_lib import course_grading

# Loaded by path: benchmarks/ on sys.path would make benchmarks/kernels.py shadow the `kernels` package that
# transformers looks for, and break every later transformers import in this worker (ImportError:
# CUDAProperties).
_spec = importlib.util.spec_from_file_location("grade_at_scale", ROOT / "benchmarks" / "grade_at_scale.py")
grade_at_scale = importlib.util.module_from_spec(_spec)
sys.modules["grade_at_scale"] = grade_at_scale
_spec.loader.exec_module(grade_at_scale)


@pytest.mark.slow
def test_the_benchmarks_course_grades_in_parallel_groups(tmp_path):
    """The benchmark's course (one correct, one unmodified submission) graded in two groups at once: each gets
    its score and its autograded notebook, and the group copies are removed. That parallel groups give the
    sequential gradebook is tested once, through scripts/grade_assignment.py (tests/course/test_grade_assignment.py)."""
    kinds = grade_at_scale.make_course(tmp_path / "par", "00_welcome", 2)
    assert sorted(kinds.values()) == ["correct", "unmodified"], kinds
    grade_at_scale.grade(tmp_path / "par", "00_welcome", jobs=2, workdir=tmp_path)
    scores = course_grading.scores(tmp_path / "par", "00_welcome")
    assert scores == {s: (6.0 if k == "correct" else 0.0) for s, k in kinds.items()}, (scores, kinds)
    for student in kinds:
        assert (tmp_path / "par" / "autograded" / student / "00_welcome" / "welcome.ipynb").exists()
    assert not list(tmp_path.glob("grade-groups-*"))  # the group copies are removed


def test_course_copies_use_the_course_config(tmp_path):
    """write_config: the course's settings and hooks (GuardedExecute, HideHiddenTests), no template of its own."""
    from traitlets.config.loader import PyFileConfigLoader

    from course_lib import nbgrader_hooks

    path = course_grading.write_config(tmp_path, timeout=120)
    config = PyFileConfigLoader(path.name, path=str(tmp_path)).load_config()
    assert nbgrader_hooks.GuardedExecute in config.Autograde.autograde_preprocessors
    assert nbgrader_hooks.HideHiddenTests in config.GenerateFeedback.preprocessors
    assert config.Execute.timeout == 120 and config.OverwriteCells.add_missing_cells is True
    assert config.CourseDirectory.db_url == f"sqlite:///{tmp_path / 'gradebook.db'}"
    repo = PyFileConfigLoader("nbgrader_config.py", path=str(ROOT)).load_config()
    assert repo.Autograde == config.Autograde and repo.GenerateFeedback == config.GenerateFeedback
    assert course_grading.course_directories(ROOT) == ("solutions", "notebooks")
    assert course_grading.course_directories(tmp_path) == ("source", "release")


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
        assert course_grading.merge_gradebook(main, group, "a") == ["s1"]
    assert course_grading.scores(main, "a") == {"s1": 2.0}
    assert course_grading.merge_gradebook(main, group, "a", students=[]) == []
