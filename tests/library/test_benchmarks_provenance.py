"""benchmarks/provenance.py: the commit line of every results file."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _provenance():
    spec = importlib.util.spec_from_file_location("provenance_under_test", ROOT / "benchmarks" / "provenance.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_git_commit_names_the_checkout_unless_a_commit_is_given(monkeypatch):
    provenance = _provenance()
    monkeypatch.delenv("COURSE_COMMIT", raising=False)
    found = provenance.git_commit()
    assert re.fullmatch(r"[0-9a-f]{7,40}( \+changes)?|unknown", found), found
    # a copy of the tree with a stale .git (the GPU machine's) is told its commit
    monkeypatch.setenv("COURSE_COMMIT", "e9ccc9b")
    assert provenance.git_commit() == "e9ccc9b"
    assert provenance.machine_line("cpu").endswith("code of commit e9ccc9b")
