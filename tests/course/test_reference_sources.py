"""A graded course can ship course_lib's references without their source (the hub image does).

``course_grading.strip_reference_sources`` turns every reference module into bytecode: learners call the
functions, ``help()`` and ``inspect.signature`` still work, ``inspect.getsource`` does not. A copy of
course_lib stripped that way is put first on ``PYTHONPATH`` of nbgrader and its kernels, and one notebook is
released and autograded there with the course's hooks: the honest submission keeps full marks, a delegating
one scores 0, and the kernel really imported the sourceless modules.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap

import nbformat
import pytest

from adversarial_submissions import DELEGATIONS, set_answer, without_ungraded_tail
from nbgrader_course import ROOT, notebook_name, release_path, solution_path, typed_solutions

from course_lib import course_grading, grading

ASSIGNMENT = "05_nf4"  # exercises with a handed-over helper (the codebook) and two delegation routes


@pytest.fixture(scope="module")
def stripped_site(tmp_path_factory):
    site = tmp_path_factory.mktemp("site")
    shutil.copytree(ROOT / "course_lib", site / "course_lib", ignore=shutil.ignore_patterns("__pycache__"))
    stripped = course_grading.strip_reference_sources(site / "course_lib")
    return site, stripped


def _env(site) -> dict:
    return dict(os.environ, PYTHONPATH=os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")]))


def test_every_reference_module_loses_its_source_and_keeps_its_api(stripped_site):
    site, stripped = stripped_site
    assert stripped == grading.reference_modules() and "nf4.py" in stripped and "kernels/ops.py" in stripped
    package = site / "course_lib"
    for relative in stripped:
        assert not (package / relative).exists(), f"{relative} still has its source"
        assert (package / relative).with_suffix(".pyc").is_file()
    for plumbing in ("grading.py", "models.py", "data.py", "nbgrader_hooks.py", "kernels/build.py"):
        assert (package / plumbing).is_file(), f"{plumbing} must keep its source"
    assert not list(package.rglob("__pycache__/nf4.*.pyc"))
    check = textwrap.dedent("""
        import inspect, pydoc
        import course_lib
        from course_lib import capstone, kernels, nf4
        assert course_lib.__file__.startswith(%r), course_lib.__file__
        assert nf4.__file__.endswith("nf4.pyc"), nf4.__file__
        for fn in (nf4.quantize_nf4, capstone.check_recipe, kernels.gemv_nf4):
            try:
                inspect.getsource(fn)
            except (OSError, TypeError):
                pass
            else:
                raise AssertionError(f"the source of {fn.__name__} is readable")
        assert str(inspect.signature(nf4.quantize_nf4)) == "(w: 'torch.Tensor', blocksize: 'int' = 64) -> 'tuple[torch.Tensor, torch.Tensor]'"
        assert nf4.quantize_nf4.__doc__.strip() and nf4.quantize_nf4.__doc__.strip().splitlines()[0] in pydoc.render_doc(nf4.quantize_nf4)
        import torch
        packed, absmax = nf4.quantize_nf4(torch.linspace(-1, 1, 64))
        assert packed.shape == (32,) and absmax.shape == (1,)
        print("ok")
    """) % str(site)
    proc = subprocess.run([sys.executable, "-c", check], env=_env(site), capture_output=True, text=True, timeout=300,
                          cwd=site)
    assert proc.returncode == 0 and proc.stdout.strip().endswith("ok"), proc.stdout + proc.stderr


@pytest.mark.slow
def test_a_notebook_grades_as_usual_without_the_sources(stripped_site, tmp_path):
    site, _ = stripped_site
    env = _env(site)
    course = tmp_path / "course"
    shutil.copytree(ROOT / "solutions" / ASSIGNMENT, course / "source" / ASSIGNMENT)
    course_grading.write_config(course)
    rc, out = course_grading.nbgrader("generate_assignment", ASSIGNMENT, "--force", "--create", course=course, env=env,
                                      timeout=600)
    assert rc == 0, out[-3000:]
    release = nbformat.read(release_path(ASSIGNMENT), as_version=4)
    # both end at the last graded cell (the demos after it grade nothing), then report where nf4 came from
    honest = without_ungraded_tail(typed_solutions(release, nbformat.read(solution_path(ASSIGNMENT), as_version=4)),
                                   ASSIGNMENT)
    honest.cells.append(nbformat.v4.new_code_cell("import course_lib.nf4\nprint(course_lib.nf4.__file__)"))
    delegating = without_ungraded_tail(
        typed_solutions(release, nbformat.read(solution_path(ASSIGNMENT), as_version=4)), ASSIGNMENT)
    for answer_id, source in DELEGATIONS[ASSIGNMENT].items():
        set_answer(delegating, answer_id, source)
    for student, nb in (("honest", honest), ("delegating", delegating)):
        target = course / "submitted" / student / ASSIGNMENT / f"{notebook_name(ASSIGNMENT)}.ipynb"
        target.parent.mkdir(parents=True)
        nbformat.write(nb, target)
    rc, out = course_grading.nbgrader("autograde", ASSIGNMENT, "--force", course=course, env=env, timeout=900)
    assert rc == 0, out[-3000:]
    grades = course_grading.grades(course, ASSIGNMENT)
    by_student: dict[str, dict[str, tuple]] = {}
    for (student, _, grade_id), grade in grades.items():
        by_student.setdefault(student, {})[grade_id] = grade
    points = {gid: g for gid, g in by_student["honest"].items() if g[2]}  # (auto, manual, max, needs manual)
    assert len(points) >= 5 and all(g[0] == g[2] for g in points.values()), by_student["honest"]
    for answer_id in DELEGATIONS[ASSIGNMENT]:
        assert by_student["delegating"][f"test_{answer_id}"][0] == 0, by_student["delegating"]
    graded = nbformat.read(course / "autograded" / "honest" / ASSIGNMENT / f"{notebook_name(ASSIGNMENT)}.ipynb", 4)
    printed = "".join(o.get("text", "") for o in graded.cells[-1].outputs)
    assert printed.strip() == str(site / "course_lib" / "nf4.pyc"), printed
    flagged = [c.metadata["course_guard"] for c in graded.cells if "course_guard" in c.metadata]
    assert not flagged, f"the guard flagged an honest submission: {flagged}"
