"""benchmarks/provenance.py: the commit line of every results file (imported as the benchmark scripts import it)."""

from __future__ import annotations

import re

from benchmarks import provenance


def test_git_commit_names_the_checkout_unless_a_commit_is_given(monkeypatch):
    monkeypatch.delenv("COURSE_COMMIT", raising=False)
    found = provenance.git_commit()
    assert re.fullmatch(r"[0-9a-f]{7,40}( \+changes)?|unknown", found), found
    # a copy of the tree with a stale .git (the GPU machine's) is told its commit
    monkeypatch.setenv("COURSE_COMMIT", "e9ccc9b")
    assert provenance.git_commit() == "e9ccc9b"
    assert provenance.machine_line("cpu").endswith("code of commit e9ccc9b")
