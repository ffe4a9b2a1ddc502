"""Shared fixtures: one `device` fixture runs a test on the CPU always and on CUDA when present."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(params=["cpu", "cuda"])
def device(request) -> str:
    """The device a test runs on: "cpu", and "cuda" when torch sees a GPU (skipped otherwise)."""
    if request.param == "cuda" and not torch.cuda.is_available():
        pytest.skip("CUDA is not available on this machine (the same test runs on the GPU machine)")
    return request.param



# Property tests: the same examples on every run (a red CI run must be reproducible, and main must not
# turn red by chance) and no per-example deadline (a loaded 2-core machine is slow, not wrong).
try:
    from hypothesis import settings as _hypothesis_settings

    _hypothesis_settings.register_profile("course", derandomize=True, deadline=None, print_blob=True)
    _hypothesis_settings.load_profile("course")
except ImportError:  # hypothesis is a test extra
    pass
