"""Notebook 13's CUDA exercise, graded on a GPU: the solution passes its test cell, wrong answers fail it.

The test cell is run as nbgrader runs it (hidden tests included), in one namespace with the answer cell, on
the solution notebook's own sources. Without a CUDA GPU, nvcc or ninja (CI), the cell checks only the byte
table and says why; that branch runs here too. ``scripts/gpu_check.sh`` runs the GPU branch on the GPU machine.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

# plain JSON, no nbformat: the GPU machine has none
(SOLUTION,) = (Path(__file__).resolve().parents[2] / "solutions" / "13_lowbit_kernels").glob("*.ipynb")


def _cells() -> dict[str, str]:
    """grade_id -> source of notebook 13's solution cells."""
    cells = json.loads(SOLUTION.read_text())["cells"]
    out = {}
    for cell in cells:
        gid = cell.get("metadata", {}).get("nbgrader", {}).get("grade_id")
        if gid:
            out[gid] = "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]
    return out


def _grade(answer: str, test: str) -> dict:
    """Run the answer cell, then the test cell, in one namespace; return it (raises what the test raises)."""
    namespace: dict = {"__name__": "__main__", "torch": torch}
    exec(compile(answer, "answer", "exec"), namespace)
    exec(compile(test, "test_nf4_gemv_cuda", "exec"), namespace)
    return namespace


def _gpu_build_possible() -> str | None:
    if not torch.cuda.is_available():
        return "no CUDA GPU"
    from torch.utils import cpp_extension

    if cpp_extension.CUDA_HOME is None or shutil.which("ninja") is None:
        return "nvcc or ninja missing"
    return None


def test_without_a_gpu_the_cell_checks_the_table_and_says_why(monkeypatch, capsys):
    from course_lib import grading

    cells = _cells()
    monkeypatch.setattr(grading, "devices", lambda: ["cpu"])
    namespace = _grade(cells["nf4_gemv_cuda"], cells["test_nf4_gemv_cuda"])
    assert "learner_gemv" not in namespace
    assert "is not checked here: no CUDA GPU is visible" in capsys.readouterr().out
    # the table part is still graded on the CPU: a wrong table fails there
    wrong_table = cells["nf4_gemv_cuda"].replace("codebook[v >> 4], codebook[v & 15]", "codebook[v & 15], codebook[v >> 4]")
    assert wrong_table != cells["nf4_gemv_cuda"]
    with pytest.raises(AssertionError):
        _grade(wrong_table, cells["test_nf4_gemv_cuda"])


@pytest.mark.skipif(_gpu_build_possible() is not None, reason=f"needs a CUDA GPU with nvcc and ninja: {_gpu_build_possible()}")
class TestOnTheGPU:
    def test_solution_passes_hidden_tests_included(self):
        cells = _cells()
        namespace = _grade(cells["nf4_gemv_cuda"], cells["test_nf4_gemv_cuda"])
        assert callable(namespace["learner_gemv"])

    @pytest.mark.parametrize("bug, old, new", [
        # the two nibbles of a byte read in the wrong order (the most common slip with this layout)
        ("nibbles swapped", "w[2 * j] = pair.x * scale;\n            w[2 * j + 1] = pair.y * scale;",
         "w[2 * j] = pair.y * scale;\n            w[2 * j + 1] = pair.x * scale;"),
        # one absmax per 32 weights instead of per 64
        ("wrong absmax block", "scales[c / 2]", "scales[c % (K / 64)]"),
        # only the first row of the batch written
        ("batch ignored", "if (lane == 0 && b < B)", "if (lane == 0 && b == 0)"),
    ])
    def test_wrong_kernel_fails(self, bug, old, new):
        cells = _cells()
        answer = cells["nf4_gemv_cuda"]
        assert old in answer, f"the solution no longer contains {old!r}: update this test ({bug})"
        with pytest.raises(AssertionError, match="nf4_gemv \\(CUDA\\)"):
            _grade(answer.replace(old, new), cells["test_nf4_gemv_cuda"])

    def test_compiler_error_is_shown(self):
        cells = _cells()
        answer = cells["nf4_gemv_cuda"].replace("const float scale = scales[c / 2];", "const float scale = scales[c / 2]")
        with pytest.raises(AssertionError, match="did not compile"):
            _grade(answer, cells["test_nf4_gemv_cuda"])

    def test_missing_kernel_says_what_to_do(self):
        cells = _cells()
        answer = cells["nf4_gemv_cuda"].split("# Define NF4_GEMV_CUDA")[0]
        with pytest.raises(AssertionError, match="NF4_GEMV_CUDA is not defined yet"):
            _grade(answer, cells["test_nf4_gemv_cuda"])
