"""course_lib.env: the environment report of notebook 00 and the Colab set-up line."""

from __future__ import annotations

import importlib
import sys
import tomllib

import pytest
import torch

from course_lib import env
from nbgrader_course import ROOT


@pytest.mark.parametrize("distribution, module", [("torch", "torch"), ("numpy", "numpy"),
                                                  ("matplotlib", "matplotlib"), ("scikit-learn", "sklearn")])
def test_reported_version_is_the_imported_modules(distribution, module):
    """The report reads versions from the installed metadata; they must be what the import gives."""
    assert distribution in env.REPORTED_PACKAGES
    assert env.package_version(distribution) == importlib.import_module(module).__version__


def test_a_missing_distribution_has_no_version():
    assert env.package_version("no-such-distribution-course-lib") is None


def test_the_report_imports_none_of_the_packages_it_lists(tmp_path):
    """Importing transformers, nbgrader and scikit-learn only to read their versions cost notebook 00 ~7 s."""
    import subprocess

    code = ("import sys\nfrom course_lib.env import environment_report\nr = environment_report()\n"
            "print(sorted(m for m in ('transformers', 'nbgrader', 'sklearn', 'bitsandbytes') if m in sys.modules))\n"
            "print(r['packages']['transformers'] is not None)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path,
                         env={"PYTHONPATH": str(ROOT), "PATH": ""}, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split("\n")[:2] == ["[]", "True"], out.stdout


def test_the_report_describes_this_machine():
    report = env.environment_report()
    assert report["cuda"] == torch.cuda.is_available()
    assert report["torch_cuda"] == torch.version.cuda
    assert report["packages"]["torch"] == torch.__version__
    assert set(report["packages"]) == set(env.REPORTED_PACKAGES)


def test_setup_summary_names_the_source_and_torch():
    line = env.setup_summary("https://example.org/course@main")
    assert line.startswith("course_lib ") and "from https://example.org/course@main on torch " + torch.__version__ in line
    if not torch.cuda.is_available():
        assert line.endswith("no GPU, everything runs on the CPU (Runtime > Change runtime type adds one)")


def test_course_repository_is_pyprojects():
    if env.package_version("course_lib") is None:
        pytest.skip("course_lib is not installed in this environment (./course.sh installs it)")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert env.course_repository() == project["urls"]["Repository"]
