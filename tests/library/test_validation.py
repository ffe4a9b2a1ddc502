"""Argument checks: each kind of bad input gets an error that names the argument and the constraint."""

from __future__ import annotations

import pytest
import torch

from course_lib import validation as v


@pytest.mark.parametrize(
    "call, error, message",
    [
        (lambda: v.check_tensor([1.0], "x"), TypeError, "x must be a torch.Tensor, got list"),
        (lambda: v.check_tensor(torch.ones(2, dtype=torch.int8), "w", dtypes=v.FLOAT_DTYPES), TypeError,
         r"w must have dtype in \(float16, bfloat16, float32, float64\), got int8"),
        (lambda: v.check_tensor(torch.ones(2), "w", ndim=2), ValueError, r"w must have 2 dimensions, got shape \(2,\)"),
        (lambda: v.check_tensor(torch.ones(0, 3), "x"), ValueError, r"x must not be empty, got shape \(0, 3\)"),
        (lambda: v.check_tensor(torch.tensor([1.0, float("nan"), float("inf")]), "x"), ValueError,
         "x must be finite, got 1 NaN and 1 Inf values"),
        (lambda: v.check_bits(1), ValueError, r"bits must be in \[2, 16\], got 1"),
        (lambda: v.check_bits(4.0), TypeError, "bits must be an int, got float"),
        (lambda: v.check_bits(True), TypeError, "bits must be an int, got bool"),
        (lambda: v.check_divides(100, 64, size_name="in_features", group_name="group_size"), ValueError,
         "group_size=64 must divide in_features=100"),
        (lambda: v.check_divides(100, 0, size_name="in_features", group_name="group_size"), ValueError,
         r"group_size must be in \[1, inf\], got 0"),
        (lambda: v.check_module([1, 2], "model"), TypeError, "model must be a torch.nn.Module, got list"),
    ],
)
def test_bad_input_is_named(call, error, message):
    with pytest.raises(error, match=message):
        call()


def test_good_input_passes():
    v.check_tensor(torch.ones(2, 3), "x", dtypes=v.FLOAT_DTYPES, ndim=(1, 2))
    v.check_tensor(torch.tensor([float("inf")]), "x", allow_nonfinite=True)
    v.check_tensor(torch.ones(0), "x", allow_empty=True)
    v.check_bits(8)
    v.check_divides(128, 64, size_name="n", group_name="g")
    v.check_same_device(("x", torch.ones(1)), ("s", torch.ones(1)))
    v.check_module(torch.nn.Linear(2, 2))


def test_tensors_on_different_devices_are_named():
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA for a second device")
    with pytest.raises(ValueError, match="x on cpu, scale on cuda:0"):
        v.check_same_device(("x", torch.ones(1)), ("scale", torch.ones(1, device="cuda")))
