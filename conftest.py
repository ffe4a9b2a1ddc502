"""Repository-wide pytest set-up: offline, headless, and notebook cells kept together under xdist."""

from __future__ import annotations

import os
import sys

import pytest

# Offline always; headless plots; nbgrader shells out to `alembic` from this environment's bin/.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")
_bin = os.path.dirname(sys.executable)
if _bin not in os.environ.get("PATH", "").split(os.pathsep):
    os.environ["PATH"] = _bin + os.pathsep + os.environ.get("PATH", "")


def pytest_collection_modifyitems(config, items):
    """Keep each notebook's nbval cells on one xdist worker (they share one kernel), in order."""
    for item in items:
        if item.nodeid.endswith(".ipynb") or ".ipynb::" in item.nodeid:
            item.add_marker(pytest.mark.xdist_group(name=item.nodeid.split("::")[0]))
