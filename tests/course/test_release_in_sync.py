"""notebooks/ must be exactly what nbgrader generates from solutions/ (no hand edits, no drift)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))

import generate_notebooks  # noqa: E402


def _files(base: Path) -> dict[str, Path]:
    return {str(p.relative_to(base)): p for p in base.rglob("*") if p.is_file() and ".ipynb_checkpoints" not in p.parts}


def test_committed_release_matches_generation(tmp_path):
    generate_notebooks.generate(tmp_path / "release")
    generated, committed = _files(tmp_path / "release"), _files(ROOT / "notebooks")
    assert sorted(generated) == sorted(committed), (
        "notebooks/ and the generated release hold different files; run `python scripts/generate_notebooks.py`")
    for name, path in generated.items():
        if name.endswith(".ipynb"):
            same = json.loads(path.read_text()) == json.loads(committed[name].read_text())
        else:
            same = path.read_bytes() == committed[name].read_bytes()
        assert same, f"notebooks/{name} differs from what generation produces; run `python scripts/generate_notebooks.py`"


def _code_cells(path: Path) -> list[dict]:
    return [c for c in json.loads(path.read_text())["cells"] if c["cell_type"] == "code"]


def _graded_or_answer(cell: dict) -> bool:
    meta = cell.get("metadata", {}).get("nbgrader", {})
    return bool(meta.get("grade") or meta.get("solution"))


def test_release_lets_run_all_go_on_past_unsolved_exercises():
    """Every answer and test cell of a student notebook carries raises-exception (JupyterLab's Run All goes on
    past it); no other cell does, and the solutions (the instructor's source) carry none."""
    from course_lib.nbgrader_hooks import RUN_ON_TAG

    for path in sorted((ROOT / "notebooks").glob("*/*.ipynb")):
        for cell in _code_cells(path):
            tagged = RUN_ON_TAG in cell.get("metadata", {}).get("tags", [])
            assert tagged == _graded_or_answer(cell), (path.name, cell.get("metadata"))
    for path in sorted((ROOT / "solutions").glob("*/*.ipynb")):
        assert not any(RUN_ON_TAG in c.get("metadata", {}).get("tags", []) for c in _code_cells(path)), path.name


def test_run_on_tag_leaves_nbgrader_checksums_alone():
    """The tag cannot make nbgrader see a locked or graded cell as changed (its checksum ignores tags)."""
    import nbformat
    from nbgrader.utils import compute_checksum

    from course_lib.nbgrader_hooks import TagRunOn

    nb = nbformat.read(ROOT / "solutions" / "00_welcome" / "welcome.ipynb", as_version=4)
    cells = [c for c in nb.cells if c.cell_type == "code" and _graded_or_answer(c)]
    before = [compute_checksum(c) for c in cells]
    for i, cell in enumerate(cells):
        TagRunOn().preprocess_cell(cell, {}, i)
    assert all("raises-exception" in c.metadata["tags"] for c in cells)
    assert [compute_checksum(c) for c in cells] == before
