"""The locked `setup` cell of every notebook: on Colab it installs the course (from the repository and
branch of the README's Colab badges), ninja and bitsandbytes, and turns on the custom widget manager;
anywhere else it runs nothing and prints nothing. Also: every Colab badge points at a real notebook."""

from __future__ import annotations

import re
import sys
import types
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "solutions").glob("*/*.ipynb")) + sorted((ROOT / "notebooks").glob("*/*.ipynb"))
IDS = [str(p.relative_to(ROOT).parent) for p in NOTEBOOKS]
BADGE = re.compile(r"https://colab\.research\.google\.com/github/(?P<owner>[^/]+)/(?P<repo>[^/]+)/blob/"
                   r"(?P<ref>[^/]+)/(?P<path>[^)\s]+\.ipynb)")
README = (ROOT / "README.md").read_text()


def _readme_badges() -> list[re.Match]:
    return list(BADGE.finditer(README))


def _repo_and_ref() -> tuple[str, str]:
    """The one repository URL and branch that all README badges use."""
    pairs = {(f"https://github.com/{m['owner']}/{m['repo']}", m["ref"]) for m in _readme_badges()}
    assert len(pairs) == 1, f"README's Colab badges name several repositories or branches: {pairs}"
    return pairs.pop()


def _setup_source(path: Path) -> str:
    nb = nbformat.read(path, as_version=4)
    cells = [c for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade_id") == "setup"]
    assert len(cells) == 1, f"{path}: expected one cell with grade_id 'setup'"
    return cells[0].source


class _Shell:
    """A stand-in for get_ipython(): records the line magics instead of running them."""

    def __init__(self):
        self.magics: list[tuple[str, str]] = []

    def run_line_magic(self, name, line):
        self.magics.append((name, line))

    def system(self, cmd):  # a cell that shells out would show up here
        self.magics.append(("system", cmd))


def _run(source: str, shell: _Shell) -> None:
    assert "%" not in "".join(ln.lstrip()[:1] for ln in source.split("\n")), \
        "the setup cell must be plain Python (get_ipython().run_line_magic), so it can be tested"
    exec(compile(source, "<setup cell>", "exec"), {"get_ipython": lambda: shell, "__name__": "__main__"})


@pytest.fixture
def fake_colab(monkeypatch):
    calls = []
    output = types.ModuleType("google.colab.output")
    output.enable_custom_widget_manager = lambda: calls.append("enable_custom_widget_manager")
    colab = types.ModuleType("google.colab")
    colab.output = output
    google = sys.modules.get("google") or types.ModuleType("google")
    monkeypatch.setitem(sys.modules, "google", google)
    monkeypatch.setattr(google, "colab", colab, raising=False)
    monkeypatch.setitem(sys.modules, "google.colab", colab)
    monkeypatch.setitem(sys.modules, "google.colab.output", output)
    return calls


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_setup_cell_on_colab(path, fake_colab):
    repo, ref = _repo_and_ref()
    shell = _Shell()
    _run(_setup_source(path), shell)
    assert shell.magics == [("pip", f'install -q "course_lib @ git+{repo}@{ref}" ninja bitsandbytes')], shell.magics
    assert fake_colab == ["enable_custom_widget_manager"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_setup_cell_elsewhere_does_nothing(path, capsys, monkeypatch):
    monkeypatch.delitem(sys.modules, "google.colab", raising=False)
    shell = _Shell()
    _run(_setup_source(path), shell)
    assert shell.magics == []
    out = capsys.readouterr()
    assert out.out == "" and out.err == ""


def test_setup_cells_are_identical():
    sources = {_setup_source(p) for p in NOTEBOOKS}
    assert len(sources) == 1, "copy the setup cell from notebook 00 (CONTRIBUTING.md)"


def test_every_student_notebook_has_a_readme_badge():
    listed = {m["path"] for m in _readme_badges()}
    students = {str(p.relative_to(ROOT)) for p in (ROOT / "notebooks").glob("*/*.ipynb")}
    assert students <= listed, f"README lacks an Open in Colab badge for {sorted(students - listed)}"
    for path in listed:
        assert re.fullmatch(r"notebooks/\d\d_\w+/\w+\.ipynb", path) and (ROOT / path).is_file(), \
            f"README's Colab badge points at {path}, which is not a notebook in notebooks/"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_title_cell_badge_points_at_this_student_notebook(path):
    title = nbformat.read(path, as_version=4).cells[0].source
    badges = list(BADGE.finditer(title))
    assert badges, f"{path}: the title cell has no Open in Colab badge"
    repo, ref = _repo_and_ref()
    expected = f"notebooks/{path.parent.name}/{path.name}"
    for m in badges:
        assert (f"https://github.com/{m['owner']}/{m['repo']}", m["ref"]) == (repo, ref), m[0]
        assert m["path"] == expected and (ROOT / m["path"]).is_file(), f"{path}: badge points at {m['path']}"
