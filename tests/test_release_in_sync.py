"""notebooks/ must be exactly what nbgrader generates from solutions/ (no hand edits, no drift)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
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
