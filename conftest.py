"""Repository-wide pytest set-up: offline and headless, for the tests and the notebooks (nbval) alike.

The README's command runs pytest-xdist with --dist loadscope: each notebook's cells (scope: the
notebook file) share one kernel, so they stay on one worker, in order; each round-trip test class
(one per notebook) also stays on one worker and shares its scratch course."""

from __future__ import annotations

import os
import sys

# Offline always; headless plots; nbgrader shells out to `alembic` from this environment's bin/.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")
# Under pytest-xdist every core already runs a worker: one thread per worker and per notebook kernel it
# starts (kernels inherit this environment) avoids oversubscription, which slows small torch ops tenfold.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ.setdefault("MKL_NUM_THREADS", "1")
_bin = os.path.dirname(sys.executable)
if _bin not in os.environ.get("PATH", "").split(os.pathsep):
    os.environ["PATH"] = _bin + os.pathsep + os.environ.get("PATH", "")

