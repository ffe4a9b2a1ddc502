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

