"""Repository-wide pytest set-up: offline and headless, for the tests and the notebooks (nbval) alike.

The README's command runs pytest-xdist with --dist loadscope: each notebook's cells (scope: the
notebook file) share one kernel, so they stay on one worker, in order; each round-trip test class
(one per notebook) also stays on one worker and shares its scratch course. A notebook's nbval cells
and its round-trip class form one scope (see the end of this file), so that the two runs of a
notebook can be compared without a third."""

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



# ----------------------------------------------------------------------------------------------
# Determinism without a third run (tests/notebook_outputs.py): nbval's outputs of each solution notebook
# are kept, both runs of a notebook (its round-trip class and its nbval cells) go to one worker as one
# scope, and the round trip's comparison test is moved after the notebook's last nbval cell.

import re  # noqa: E402

import pytest  # noqa: E402

_NOTEBOOK_OF = (re.compile(r"^solutions/(?P<a>[^/]+)/[^/]+\.ipynb::"),
                re.compile(r"^tests/course/test_grading_roundtrip\.py::TestRoundTrip_(?P<a>[^:]+)::"))
DETERMINISM_TEST = "test_outputs_match_the_nbval_run"


def notebook_scope(nodeid: str) -> str | None:
    """'notebook:<assignment>' for a solution notebook's nbval cells and its round-trip tests, else None."""
    for pattern in _NOTEBOOK_OF:
        match = pattern.match(nodeid)
        if match:
            return "notebook:" + match["a"]
    return None


def pytest_configure(config):
    config.course_nbval_outputs = {}  # assignment -> [(cell source, outputs)] of nbval's run, in order


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item):
    try:
        return (yield)
    finally:
        scope = notebook_scope(item.nodeid)
        if scope and type(item).__name__ == "IPyNbCell" and getattr(item, "test_outputs", None) is not None:
            item.config.course_nbval_outputs.setdefault(scope[len("notebook:"):], []).append(
                (item.cell.source, list(item.test_outputs)))


# The scopes that take longest, longest first (seconds of one worker, measured in clean runs of the test
# command on 2 cores, 2026-12-06): xdist's default order (most tests first) left them for the end, where
# one worker ran them alone for minutes while the other was idle. A scope missing here starts after these.
SLOW_FIRST = (
    "tests/course/test_adversarial_grading.py",  # 8 submissions of notebook 00, crashes and a timeout: ~180 s
    "notebook:07_gptq", "notebook:08_awq", "notebook:11_distillation",  # 3 runs each: ~150-170 s
    "notebook:09_hqq",                    # ~110 s
    "tests/deployment/test_jupyterhub.py",           # ~100 s
    "tests/course/test_grade_assignment.py",     # 4 autogrades of notebook 00: ~90 s
    "notebook:14_capstone", "notebook:10_bitnet", "notebook:04_ptq_qat",  # ~75-80 s
    "tests/deployment/test_local_exchange.py",       # ~75 s
    "tests/library/test_widgets_versions.py",     # ~70 s
    "notebook:12_pruning", "notebook:03_granularity", "notebook:05_nf4", "notebook:06_llm_int8",  # ~60-70 s
    "tests/course/test_reference_sources.py",    # ~55 s
    "tests/deployment/test_browser.py", "tests/library/test_kernels_build.py", "tests/deployment/test_colab_setup.py",
    "tests/course/test_grade_at_scale.py",       # ~40-50 s each
)


def _start_rank(nodeid: str) -> int:
    scope = notebook_scope(nodeid) or nodeid
    return next((i for i, prefix in enumerate(SLOW_FIRST) if scope.startswith(prefix)), len(SLOW_FIRST))


def pytest_collection_modifyitems(config, items):
    items.sort(key=lambda it: _start_rank(it.nodeid))  # stable: each scope keeps its own order
    for item in [it for it in items if it.name == DETERMINISM_TEST]:
        scope = notebook_scope(item.nodeid)
        if any(it.nodeid.startswith("solutions/") and notebook_scope(it.nodeid) == scope for it in items):
            items.remove(item)
            last = max(i for i, it in enumerate(items)
                       if it.nodeid.startswith("solutions/") and notebook_scope(it.nodeid) == scope)
            items.insert(last + 1, item)


@pytest.hookimpl(tryfirst=True, optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    if config.getvalue("dist") != "loadscope":
        return None
    from xdist.scheduler import LoadScopeScheduling

    config.option.loadscopereorder = False  # keep the collection's order: the slow scopes first (SLOW_FIRST)

    class NotebookScopeScheduling(LoadScopeScheduling):
        """loadscope, with a solution notebook's nbval cells and its round-trip class in one scope."""

        def _split_scope(self, nodeid):
            return notebook_scope(nodeid) or super()._split_scope(nodeid)

    return NotebookScopeScheduling(config, log)
