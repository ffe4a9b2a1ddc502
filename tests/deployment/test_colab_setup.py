"""The course's repository and the locked `setup` cell of every notebook.

The repository URL and branch are set once, in pyproject.toml; scripts/repository_links.py writes them into
every Colab badge and set-up cell (scripts/generate_notebooks.py runs it). On Colab the set-up cell installs
the course into Colab's own torch, ninja and bitsandbytes, turns on the custom widget manager and prints one
line; anywhere else it runs nothing and prints nothing. Also: every Colab badge points at a real notebook,
and a fork that changes the setting and regenerates carries its URL everywhere."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import types
from pathlib import Path

import nbformat
import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))
import repository_links  # noqa: E402
from course_checkout import checkout, tracked_files  # noqa: E402

NOTEBOOKS = sorted((ROOT / "solutions").glob("*/*.ipynb")) + sorted((ROOT / "notebooks").glob("*/*.ipynb"))
IDS = [str(p.relative_to(ROOT).parent) for p in NOTEBOOKS]
BADGE = repository_links.COLAB_LINK
README = (ROOT / "README.md").read_text()
REPOSITORY, BRANCH = repository_links.settings(ROOT)


def _readme_badges() -> list[re.Match]:
    return list(BADGE.finditer(README))


def _setup_source(path: Path) -> str:
    nb = nbformat.read(path, as_version=4)
    cells = [c for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade_id") == "setup"]
    assert len(cells) == 1, f"{path}: expected one cell with grade_id 'setup'"
    return cells[0].source


def _solution_of(path: Path) -> Path:
    return ROOT / "solutions" / path.parent.name / path.name


def _run(source: str) -> None:
    assert "%" not in "".join(ln.lstrip()[:1] for ln in source.split("\n")), \
        "the setup cell must be plain Python, so it can be tested"
    exec(compile(source, "<setup cell>", "exec"), {"__name__": "__main__"})


@pytest.fixture
def fake_colab(monkeypatch):
    """google.colab that records what the cell asks of it, and a pip that records its command line."""
    calls = {"colab": [], "pip": [], "returncode": 0}
    output = types.ModuleType("google.colab.output")
    output.enable_custom_widget_manager = lambda: calls["colab"].append("enable_custom_widget_manager")
    colab = types.ModuleType("google.colab")
    colab.output = output
    google = sys.modules.get("google") or types.ModuleType("google")
    monkeypatch.setitem(sys.modules, "google", google)
    monkeypatch.setattr(google, "colab", colab, raising=False)
    monkeypatch.setitem(sys.modules, "google.colab", colab)
    monkeypatch.setitem(sys.modules, "google.colab.output", output)

    def run(cmd, **kwargs):
        calls["pip"].append(cmd)
        return subprocess.CompletedProcess(cmd, calls["returncode"], "", "ERROR: No matching distribution found")

    monkeypatch.setattr(subprocess, "run", run)
    return calls


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_setup_cell_on_colab(path, fake_colab, capsys):
    _run(_setup_source(path))
    assert fake_colab["pip"] == [[sys.executable, "-m", "pip", "install", "-q", f"course_lib @ git+{REPOSITORY}@{BRANCH}",
                                  "ninja", "bitsandbytes", f"torch=={torch.__version__}"]], fake_colab["pip"]
    assert fake_colab["colab"] == ["enable_custom_widget_manager"]
    out = capsys.readouterr()
    lines = out.out.splitlines()
    assert len(lines) == 1 and lines[0].startswith("course_lib ") and f"from {REPOSITORY}@{BRANCH} on torch" in lines[0], out
    if not torch.cuda.is_available():
        assert "no GPU" in lines[0]


def test_setup_cell_says_when_pip_fails(fake_colab):
    fake_colab["returncode"] = 1
    with pytest.raises(RuntimeError, match="(?s)pip could not install the course from .*No matching distribution"):
        _run(_setup_source(NOTEBOOKS[0]))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_setup_cell_elsewhere_does_nothing(path, capsys, monkeypatch):
    monkeypatch.delitem(sys.modules, "google.colab", raising=False)
    monkeypatch.setattr(subprocess, "run", lambda *a, **k: pytest.fail("the set-up cell ran a command outside Colab"))
    _run(_setup_source(path))
    out = capsys.readouterr()
    assert out.out == "" and out.err == ""


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_setup_cell_is_written_from_the_settings(path):
    solution = nbformat.read(_solution_of(path), as_version=4)
    expected = repository_links.setup_source(REPOSITORY, BRANCH, repository_links.uses_kernels(solution))
    assert _setup_source(path) == expected, "run python scripts/generate_notebooks.py (it writes the set-up cells)"


def test_only_the_kernel_notebook_builds_kernels_on_colab():
    builders = [p.parent.name for p in sorted((ROOT / "solutions").glob("*/*.ipynb"))
                if repository_links.uses_kernels(nbformat.read(p, as_version=4))]
    assert builders == ["13_lowbit_kernels"], builders


def test_files_agree_with_the_repository_setting():
    stale = repository_links.write(ROOT, check=True)
    assert not stale, f"{[str(p.relative_to(ROOT)) for p in stale]} disagree with pyproject.toml: " \
                      "run python scripts/generate_notebooks.py"


def test_every_student_notebook_has_a_readme_badge():
    listed = {m["path"] for m in _readme_badges()}
    students = {str(p.relative_to(ROOT)) for p in (ROOT / "notebooks").glob("*/*.ipynb")}
    assert students <= listed, f"README lacks an Open in Colab badge for {sorted(students - listed)}"
    for m in _readme_badges():
        assert (m["owner"], m["name"], m["ref"]) == (*REPOSITORY.split("/")[-2:], BRANCH), m[0]
        assert re.fullmatch(r"notebooks/\d\d_\w+/\w+\.ipynb", m["path"]) and (ROOT / m["path"]).is_file(), \
            f"README's Colab badge points at {m['path']}, which is not a notebook in notebooks/"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_title_cell_badge_points_at_this_student_notebook(path):
    title = nbformat.read(path, as_version=4).cells[0].source
    badges = list(BADGE.finditer(title))
    assert badges, f"{path}: the title cell has no Open in Colab badge"
    for m in badges:
        assert m[0] == repository_links.colab_url(REPOSITORY, BRANCH, f"notebooks/{path.parent.name}/{path.name}"), m[0]
        assert (ROOT / m["path"]).is_file(), f"{path}: badge points at {m['path']}"


def test_a_fork_changes_one_setting_and_regenerates(tmp_path):
    """Copy the repository, change the URL and branch in pyproject.toml, regenerate: nothing names the old ones."""
    if not (ROOT / ".git").exists():
        pytest.skip("needs a git checkout (git ls-files lists what a fork holds)")
    files = tracked_files()
    fork = checkout(tmp_path / "fork")
    pyproject = fork / "pyproject.toml"
    text = pyproject.read_text()
    old_branch = f'branch = "{BRANCH}"'
    assert text.count(REPOSITORY) == 1 and text.count(old_branch) == 1, "the setting must be written once"
    new_repository, new_branch = "https://github.com/a-fork/quantization-workshop", "workshop-2027"
    pyproject.write_text(text.replace(REPOSITORY, new_repository).replace(old_branch, f'branch = "{new_branch}"'))
    regenerate = subprocess.run([sys.executable, "scripts/generate_notebooks.py"], cwd=fork, capture_output=True,
                                text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert regenerate.returncode == 0, regenerate.stderr[-3000:]
    old = REPOSITORY.removeprefix("https://github.com/")
    stale = [name for name in files if old in (fork / name).read_text(errors="replace")]
    assert not stale, f"still name {old} after regenerating: {stale}"
    badges = setup_cells = 0
    for path in sorted(fork.glob("solutions/*/*.ipynb")) + sorted(fork.glob("notebooks/*/*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        for m in BADGE.finditer(nb.cells[0].source):
            assert m[0] == repository_links.colab_url(new_repository, new_branch, f"notebooks/{path.parent.name}/{path.name}")
            badges += 1
        setup = [c.source for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade_id") == "setup"]
        assert f'REPO, REF = "{new_repository}", "{new_branch}"' in setup[0], path
        setup_cells += 1
    readme_badges = list(BADGE.finditer((fork / "README.md").read_text()))
    assert readme_badges and all(m["ref"] == new_branch and m["name"] == "quantization-workshop" for m in readme_badges)
    assert badges == setup_cells == len(NOTEBOOKS), (badges, setup_cells)
