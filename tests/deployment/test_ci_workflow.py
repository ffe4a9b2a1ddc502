"""A fork's CI (.github/workflows/course.yml) runs what .ci/run and the README run, with the course's caches."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
import yaml

from course_lib.kernels import build

ROOT = Path(__file__).resolve().parents[2]
WORKFLOW = ROOT / ".github" / "workflows" / "course.yml"


def _ci_run_command() -> list[str]:
    """The command .ci/run hands over to (its `exec` line)."""
    execs = [ln.split(None, 1)[1] for ln in (ROOT / ".ci" / "run").read_text().splitlines() if ln.startswith("exec ")]
    assert len(execs) == 1, ".ci/run must end in one `exec <command>`"
    return shlex.split(execs[0])


def _readme_test_command() -> list[str]:
    lines = [ln.split("#")[0].strip() for ln in (ROOT / "README.md").read_text().splitlines()
             if re.match(r"\./course\.sh test\b", ln)]
    assert lines, "README has no ./course.sh test line"
    return shlex.split(lines[0])


@pytest.fixture(scope="module")
def workflow() -> dict:
    doc = yaml.safe_load(WORKFLOW.read_text())
    doc["on"] = doc.pop(True, doc.get("on"))  # YAML 1.1 reads the key `on` as True
    return doc


def _steps(workflow: dict) -> list[dict]:
    jobs = list(workflow["jobs"].values())
    assert len(jobs) == 1, "one job: the test command"
    return jobs[0]["steps"]


def test_the_workflow_runs_the_command_of_ci_run_and_the_readme(workflow):
    runs = [shlex.split(step["run"]) for step in _steps(workflow) if "run" in step]
    assert runs == [_ci_run_command()], f"the workflow runs {runs}, .ci/run runs {_ci_run_command()}"
    assert _ci_run_command() == _readme_test_command()


def test_the_workflow_runs_on_push_and_pull_request(workflow):
    assert {"push", "pull_request"} <= set(workflow["on"]), workflow["on"]


def test_the_workflow_keeps_pips_and_the_kernels_caches(workflow, monkeypatch):
    steps = _steps(workflow)
    python = [s for s in steps if s.get("uses", "").startswith("actions/setup-python@")]
    assert python and python[0]["with"].get("cache") == "pip"
    monkeypatch.delenv("COURSE_KERNELS_CACHE", raising=False)
    kernels = "~/" + str(build.cache_dir().relative_to(Path.home()))
    cached = [s["with"]["path"] for s in steps if s.get("uses", "").startswith("actions/cache@")]
    assert cached == [kernels], f"cache the compiled kernels where course_lib builds them ({kernels}), got {cached}"
