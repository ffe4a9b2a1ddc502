"""pyproject.toml, environment.yml and binder/ must install the same packages (torch pinned in each)."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~\[; ]", requirement.strip(), maxsplit=1)[0].lower().replace("_", "-")


def _pyproject() -> dict[str, str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = project["dependencies"] + project["optional-dependencies"]["test"]
    return {_name(r): r.replace(" ", "") for r in reqs}


def _conda(path: Path) -> dict[str, str]:
    env = yaml.safe_load(path.read_text())
    pip_section = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    return {_name(r): r.replace(" ", "") for r in pip_section if not r.startswith("-")}


def test_pyproject_requirements_admit_the_pinned_torch():
    torch_req = _pyproject()["torch"]
    assert "<2.14" in torch_req, "pyproject must keep torch below 2.14 so that pip never replaces torch 2.13.0"


def test_environment_yml_lists_the_same_packages():
    conda = _conda(ROOT / "environment.yml")
    assert conda.pop("torch") == "torch==2.13.0"
    project = _pyproject()
    project.pop("torch")
    assert conda == project


def test_binder_installs_the_same_packages_as_environment_yml():
    assert _conda(ROOT / "binder" / "environment.yml") == _conda(ROOT / "environment.yml")
    post_build = (ROOT / "binder" / "postBuild").read_text()
    assert "set -e" in post_build and "pip install --no-deps -e ." in post_build
