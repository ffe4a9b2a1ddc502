"""Notebook 00's references: relative error, SQNR and parameter counts against closed forms."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from course_lib import basics


def test_relative_error_closed_form(device):
    x = torch.tensor([3.0, 4.0], device=device)
    assert basics.relative_error(x, torch.zeros(2, device=device)) == 1.0
    assert basics.relative_error(x, x) == 0.0
    assert basics.relative_error(torch.zeros(2), torch.zeros(2)) == 0.0
    assert basics.relative_error(torch.zeros(2), torch.ones(2)) == math.inf


def test_relative_error_in_fp16_does_not_overflow():
    x = torch.full((100,), 6e4, dtype=torch.float16)
    assert basics.relative_error(x, x * 0.5) == pytest.approx(0.5)


def test_sqnr_closed_form(device):
    assert basics.sqnr_db(torch.tensor([1.0, -1.0], device=device), torch.tensor([1.0, 1.0], device=device)) == \
        pytest.approx(10 * math.log10(0.5))
    assert basics.sqnr_db(torch.ones(3), torch.ones(3)) == math.inf


@settings(max_examples=50, deadline=None)
@given(st.integers(min_value=2, max_value=12))
def test_sqnr_of_uniform_rounding_is_six_db_per_bit(bits):
    from course_lib.widgets.welcome import round_to_bits

    x = torch.rand(100_000, generator=torch.Generator().manual_seed(bits), dtype=torch.float64) * 2 - 1
    # Noise power step^2/12, signal power (2^b step)^2/12: SQNR = 20 log10(2^b) = 6.02 b dB.
    assert basics.sqnr_db(x, round_to_bits(x, bits)) == pytest.approx(20 * math.log10(2**bits), abs=0.1)


@pytest.mark.parametrize("bad, message", [((torch.zeros(3), torch.ones(3)), "x must not be all zero"),
                                          ((torch.ones(3), torch.ones(2)), "x_hat"),
                                          ((torch.ones(0), torch.ones(0)), "x must not be empty"),
                                          ((torch.tensor([float("nan")]), torch.ones(1)), "x must be finite"),
                                          (([1.0], torch.ones(1)), "x must be a torch.Tensor")])
def test_sqnr_rejects_bad_input(bad, message):
    with pytest.raises((ValueError, TypeError), match=message):
        basics.sqnr_db(*bad)


def test_count_parameters_counts_tied_weights_once():
    model = torch.nn.Sequential(torch.nn.Embedding(10, 4), torch.nn.Linear(4, 10, bias=False))
    model[1].weight = model[0].weight
    assert basics.count_parameters(model) == 40
    model[0].requires_grad_(False)
    assert basics.count_parameters(model, trainable_only=True) == 0
    with pytest.raises(TypeError, match="model"):
        basics.count_parameters("not a model")


def test_welcome_widget_updates_its_readout():
    from course_lib.widgets.welcome import rounding_explorer

    box = rounding_explorer()
    before = box.readout.value
    box.slider.value = 8
    assert box.readout.value != before and "SQNR" in box.readout.value
