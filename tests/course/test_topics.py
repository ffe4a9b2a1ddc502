"""course_lib/topics.py, the registry of the course's topics, matches the repository.

Every ``solutions/`` folder has exactly one entry, in course order; every module, plots module, widget
module and test file an entry names exists; every topic module of course_lib (every file the grader
treats as a reference: ``grading.reference_modules``), plots module and widget module belongs to a topic;
each notebook imports its modules; the README's table lists the registry's notebooks, in order, with the
registry's titles. Adding a topic is one entry plus its files (CONTRIBUTING.md).
"""

from __future__ import annotations

import ast
import dataclasses
import re
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from course_lib import topics
from course_lib.topics import TOPICS

ROOT = Path(__file__).resolve().parents[2]
COURSE_LIB = ROOT / "course_lib"
IDS = [t.assignment for t in TOPICS]
# a row of the README's notebooks table: | 05 | [NF4](notebooks/05_nf4/nf4.ipynb) [![Colab](...)](...) | ...
README_ROW = re.compile(r"^\|\s*(?P<number>\d\d)\s*\|\s*\[(?P<title>[^\]]+)\]\((?P<link>[^)\s]+)\)")


def _module_exists(dotted: str) -> bool:
    path = COURSE_LIB / Path(*dotted.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def _imported(path: Path) -> set[str]:
    """The course_lib modules a notebook imports, dotted relative to course_lib (``from course_lib.plots
    import nf4`` gives ``plots`` and ``plots.nf4``; ``from course_lib.widgets.nf4 import x`` gives
    ``widgets``, ``widgets.nf4`` and ``widgets.nf4.x``)."""
    found: set[str] = set()

    def add(dotted: str) -> None:
        parts = dotted.split(".")
        found.update(".".join(parts[:i]) for i in range(1, len(parts) + 1))

    for cell in nbformat.read(path, as_version=4).cells:
        if cell.cell_type != "code":
            continue
        # IPython magics and shell escapes are not Python
        source = "\n".join("" if line.lstrip().startswith(("%", "!")) else line for line in cell.source.splitlines())
        try:
            tree = ast.parse(source)
        except SyntaxError:
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                if node.module == "course_lib" or node.module.startswith("course_lib."):
                    base = node.module[len("course_lib."):] if node.module != "course_lib" else ""
                    for alias in node.names:
                        add(f"{base}.{alias.name}" if base else alias.name)
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name.startswith("course_lib."):
                        add(alias.name[len("course_lib."):])
    return found


def test_one_entry_per_solution_folder_in_course_order():
    folders = sorted(p.name for p in (ROOT / "solutions").iterdir() if p.is_dir() and not p.name.startswith("."))
    assert [t.assignment for t in TOPICS] == folders, "course_lib/topics.py: one entry per solutions/ folder, in order"
    assert [t.number for t in TOPICS] == [f"{i:02d}" for i in range(len(TOPICS))]


@pytest.mark.parametrize("topic", TOPICS, ids=IDS)
def test_notebook_is_the_only_one_of_its_folder(topic):
    notebooks = sorted(p.name for p in (ROOT / "solutions" / topic.assignment).glob("*.ipynb"))
    assert notebooks == [topic.notebook], f"solutions/{topic.assignment}: {notebooks}, registry: {topic.notebook}"
    assert (ROOT / topic.path).is_file()
    assert (ROOT / "notebooks" / topic.assignment / topic.notebook).is_file(), "regenerate the release"


@pytest.mark.parametrize("topic", TOPICS, ids=IDS)
def test_named_files_exist(topic):
    assert topic.modules, f"{topic.assignment}: no course_lib module"
    named = list(topic.modules) + list(topic.plots) + ([topic.widget] if topic.widget else [])
    missing = [m for m in named if not _module_exists(m)]
    assert not missing, f"{topic.assignment}: no course_lib module {missing}"
    assert all(p.startswith("plots.") for p in topic.plots), topic.plots
    assert topic.widget is None or topic.widget.startswith("widgets."), topic.widget
    assert topic.tests, f"{topic.assignment}: no test file"
    missing = [t for t in topic.tests if not (ROOT / t).is_file()]
    assert not missing, f"{topic.assignment}: no test file {missing}"


@pytest.mark.parametrize("topic", TOPICS, ids=IDS)
def test_notebook_imports_its_modules(topic):
    imported = _imported(ROOT / topic.path)
    named = list(topic.modules) + list(topic.plots) + ([topic.widget] if topic.widget else [])
    missing = [m for m in named if m not in imported]
    assert not missing, f"{topic.path} does not import course_lib.{missing} (course_lib/topics.py names them)"


@pytest.mark.parametrize("topic", TOPICS, ids=IDS)
def test_test_file_named_after_a_module_is_listed(topic):
    for module in topic.modules:
        stem = module.rsplit(".", 1)[-1]
        for found in sorted((ROOT / "tests").glob(f"*/test_{stem}.py")):
            test = found.relative_to(ROOT).as_posix()
            assert test in topic.tests, f"{topic.assignment}: {test} tests {module}; list it in the topic's tests"


def test_tests_are_laid_out_by_what_they_test():
    """tests/library (course_lib's modules), tests/course (grading, notebooks, the registry), tests/deployment
    (hub, browser, Colab, course.sh, CI, environment files); the shared helpers and conftest.py stay in tests/."""
    assert not sorted((ROOT / "tests").glob("test_*.py")), "a test file directly in tests/: put it in a folder"
    assert {p.name for p in (ROOT / "tests").iterdir() if p.is_dir() and not p.name.startswith((".", "__"))} \
        == {"library", "course", "deployment"}
    for topic in TOPICS:
        assert all(t.startswith("tests/library/") or t.startswith("tests/course/") for t in topic.tests), topic.tests


def test_no_module_or_test_file_in_two_topics():
    for field in ("modules", "plots", "tests"):
        names = [n for t in TOPICS for n in getattr(t, field)]
        assert len(names) == len(set(names)), f"{field} named twice: {sorted({n for n in names if names.count(n) > 1})}"
    widgets = [t.widget for t in TOPICS if t.widget]
    assert len(widgets) == len(set(widgets)), widgets


def test_every_topic_module_of_course_lib_belongs_to_a_topic():
    from course_lib import grading

    # the reference files (not plumbing: grading._INFRASTRUCTURE), by top-level module: kernels/ops.py -> kernels
    references = {Path(f).with_suffix("").parts[0] for f in grading.reference_modules()}
    assert references == set(topics.modules()), (
        f"course_lib modules without a topic: {sorted(references - set(topics.modules()))}; "
        f"topic modules the grader does not treat as references: {sorted(set(topics.modules()) - references)}")
    assert "topics.py" not in grading.reference_modules()


@pytest.mark.parametrize("kind", ["plots", "widgets"])
def test_every_plots_and_widget_module_belongs_to_a_topic(kind):
    present = {f"{kind}.{p.stem}" for p in (COURSE_LIB / kind).glob("*.py") if p.name != "__init__.py"}
    named = {m for t in TOPICS for m in (t.plots if kind == "plots" else [t.widget] if t.widget else [])}
    assert present == named, (f"course_lib/{kind}: not in a topic {sorted(present - named)}, "
                              f"missing {sorted(named - present)}")


def test_readme_table_lists_the_registry():
    rows = [m for m in map(README_ROW.match, (ROOT / "README.md").read_text().splitlines()) if m]
    assert [(m["number"], m["title"], m["link"]) for m in rows] == [
        (t.number, t.title, f"notebooks/{t.assignment}/{t.notebook}") for t in TOPICS]


def test_lookups():
    assert topics.by_assignment("05_nf4").modules == ("nf4",)
    assert topics.by_assignment("04_ptq_qat").modules == ("observers", "qat")
    with pytest.raises(KeyError, match="00_welcome"):
        topics.by_assignment("05_NF4")
    assert topics.modules()[0] == "basics" and len(topics.modules()) == len(set(topics.modules()))
    with pytest.raises(dataclasses.FrozenInstanceError):
        TOPICS[0].title = "x"


def test_registry_imports_nothing_heavy():
    code = "import sys, course_lib.topics; print(sorted(m for m in ('torch', 'numpy', 'nbformat') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True).stdout
    assert out.strip() == "[]"


# a row of docs/DESIGN.md's learner's-path table: | 05 | NF4 | `nf4` | `nf4_codebook` (2), `nearest_code` (2), ...
DESIGN_ROW = re.compile(r"^\|\s*(?P<number>\d\d)\s*\|[^|]*\|(?P<modules>[^|]*)\|(?P<graded>[^|]*)\|\s*$")


def _graded_cells(topic) -> list[tuple[str, float]]:
    """(function, points) of each autograded test cell of the solution notebook, in order."""
    cells = nbformat.read(ROOT / topic.path, as_version=4).cells
    meta = [c.metadata.get("nbgrader", {}) for c in cells]
    return [(m["grade_id"].removeprefix("test_"), m["points"]) for m in meta if m.get("grade") and not m.get("solution")]


def test_design_doc_table_lists_every_graded_function_and_module():
    """docs/DESIGN.md's table of the learner's path: each notebook's reference modules and graded functions with
    their points, as the registry and the solution notebooks have them (a new exercise or module updates it)."""
    rows = {m["number"]: m for m in map(DESIGN_ROW.match, (ROOT / "docs/DESIGN.md").read_text().splitlines()) if m}
    assert sorted(rows) == [t.number for t in TOPICS], "docs/DESIGN.md: one table row per notebook"
    for topic in TOPICS:
        row = rows[topic.number]
        graded = [(name, float(points)) for name, points in re.findall(r"`(\w+)` \((\d+(?:\.\d+)?)\)", row["graded"])]
        assert graded == [(n, float(p)) for n, p in _graded_cells(topic)], f"docs/DESIGN.md, row {topic.number}"
        modules = re.findall(r"`([\w.]+)`", row["modules"])
        assert set(modules) == set(topic.modules), f"docs/DESIGN.md, row {topic.number}: modules {modules}"


# random draws in a plots or widget module: synthetic data is drawn in course_lib/data.py only
_RANDOM_DRAW = re.compile(r"\b(?:torch\.(?:randn|rand|randint|normal|multinomial)\b|Generator\(|np\.random\.|random\.)")


@pytest.mark.parametrize("kind", ["plots", "widgets"])
def test_synthetic_data_is_drawn_in_course_lib_data_only(kind):
    """A widget or plot that needs data calls course_lib.data (one generator per kind of data, seeded and
    fingerprinted in tests/library/test_data.py), so no data generator is written twice."""
    drawing = [f"{path.relative_to(ROOT)}:{number}: {line.strip()}"
               for path in sorted((COURSE_LIB / kind).glob("*.py"))
               for number, line in enumerate(path.read_text().splitlines(), 1)
               if _RANDOM_DRAW.search(line.split("#")[0])]
    assert not drawing, "draw synthetic data with a function of course_lib/data.py:\n" + "\n".join(drawing)
