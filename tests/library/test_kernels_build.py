"""The CUDA kernels compile for every GPU a learner may have, checked without a GPU.

course_lib.kernels.check_cuda_sources runs nvcc on every kernel file (pure CUDA, no torch header) with one
-gencode per architecture, sm_75 (Colab's T4) to sm_90 (H100): an instruction newer than a target
(``ptxas: Feature '.m16n8k16' requires .target sm_80``) fails here as it would fail a learner's build.
bindings.cpp, the torch side, is architecture-independent host code: it is compiled once for syntax with
torch's headers. Skipped, with the reason, where nvcc (or the CUDA headers) are missing.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from course_lib import kernels as K


def test_every_kernel_file_compiles_for_every_supported_architecture():
    if K.build.nvcc_path() is None:
        pytest.skip("nvcc is not installed here: the architecture check needs the CUDA toolkit (CI has it)")
    failed = K.check_cuda_sources(K.SUPPORTED_CUDA_ARCHS)
    assert set(failed) == set(K.build.CUDA_KERNEL_SOURCES)
    errors = {name: out for name, out in failed.items() if out}
    assert not errors, "\n\n".join(f"{name}:\n{out[-3000:]}" for name, out in errors.items())


def test_an_instruction_too_new_for_a_target_fails_the_check(tmp_path, monkeypatch):
    """The check can fail: a kernel that uses sm_80's mma.sync unguarded does not build for sm_75."""
    if K.build.nvcc_path() is None:
        pytest.skip("nvcc is not installed here")
    src = tmp_path / "unguarded.cu"
    src.write_text('#include "common.cuh"\n__global__ void k(float* d) {\n'
                   '  unsigned a = 0, b = 0;\n'
                   '  asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, '
                   '{%8,%9}, {%0,%1,%2,%3};\\n" : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]) '
                   ': "r"(a), "r"(a), "r"(a), "r"(a), "r"(b), "r"(b));\n}\n')
    monkeypatch.setattr(K.build, "CUDA_KERNEL_SOURCES", (str(src),))
    failed = K.check_cuda_sources(("75",))
    assert "sm_80" in failed[str(src)], failed


def test_bindings_compile_against_torch_headers(tmp_path):
    """bindings.cpp (host code, torch headers) compiles: a CPU-only torch lacks one generated CUDA header
    (c10/cuda/impl/cuda_cmake_macros.h), which is supplied here as a GPU build would have it."""
    from torch.utils import cpp_extension

    nvcc = Path(K.build.nvcc_path() or "/nonexistent")
    homes = [os.environ.get("CUDA_HOME"), cpp_extension.CUDA_HOME, nvcc.resolve().parents[1], "/usr/local/cuda"]
    found = [Path(h) / "include" for h in homes if h and (Path(h) / "include" / "cuda_runtime_api.h").is_file()]
    if not found:
        pytest.skip("the CUDA toolkit's headers are not installed here")
    cuda_include = found[0]
    shim = tmp_path / "c10" / "cuda" / "impl"
    shim.mkdir(parents=True)
    (shim / "cuda_cmake_macros.h").write_text("#pragma once\n#define C10_CUDA_BUILD_SHARED_LIBS\n")
    includes = [f"-I{p}" for p in (*cpp_extension.include_paths(), tmp_path, cuda_include, K.CSRC)]
    cmd = ["c++", "-std=c++20", "-fsyntax-only", *includes, str(K.CSRC / "bindings.cpp")]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]


def test_every_kernel_source_ships_in_the_package():
    """A pip install (Colab installs the course from git) must carry every file the builds read."""
    import fnmatch
    import tomllib

    root = Path(__file__).resolve().parents[2]
    globs = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["course_lib"]
    package = root / "course_lib"
    for path in sorted(K.CSRC.iterdir()):
        relative = path.relative_to(package).as_posix()
        assert any(fnmatch.fnmatch(relative, g) for g in globs), f"{relative} is not in course_lib's package-data"
