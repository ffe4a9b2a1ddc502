"""The determinism comparison (tests/notebook_outputs.py): what it hides and what it must still see."""

from __future__ import annotations

import pytest

from notebook_outputs import cell_text, differences, sanitize


@pytest.mark.parametrize("text, expected", [
    ("reference: 444.2 us, kernel: 51.1 µs", "reference: <time>, kernel: <time>"),
    ("calibration took 3.2 s", "calibration took <time>"),
    ("12 ms per step | 350 tok/s", "<time> per step | <rate>"),
    ("decode, then matmul   12.3 ms  ( 0.18 G weights/s)", "decode, then matmul <time> ( <rate>)"),
    ("fused kernel 2.31x faster, 42% of copy bandwidth", "fused kernel <ratio> faster, <n>% of copy bandwidth"),
    ("<Module at 0x7f3a9c2b1d90>", "<Module at <address>>"),
    ("saved to /tmp/course-xyz/model.pt", "saved to <path>"),
])
def test_timings_addresses_and_paths_are_sanitized(text, expected):
    assert sanitize(text) == expected


@pytest.mark.parametrize("text", [
    "SQNR 37.91 dB at 6 bits",
    "perplexity 23.417 -> 24.102 (int4, group 128)",
    "int8: 4.000 MiB, scale 0.0123",
    "accuracy 91.2% of fp32",
])
def test_measured_quantities_are_kept(text):
    assert sanitize(text) == text, "a number that is not a timing must be compared digit for digit"


def test_a_changed_number_is_a_difference():
    first = [("print(sqnr)", cell_text([{"output_type": "stream", "name": "stdout", "text": "SQNR 37.91 dB\n"}],
                                       graded=False))]
    same = [("print(sqnr)", cell_text([{"output_type": "stream", "name": "stdout", "text": "SQNR 37.91 dB\n"}],
                                      graded=False))]
    other = [("print(sqnr)", cell_text([{"output_type": "stream", "name": "stdout", "text": "SQNR 37.92 dB\n"}],
                                       graded=False))]
    assert differences(first, same) == []
    (problem,) = differences(first, other)
    assert "-SQNR 37.91 dB" in problem and "+SQNR 37.92 dB" in problem


def test_stderr_counts_only_in_test_cells_and_timings_never():
    outputs = [{"output_type": "stream", "name": "stdout", "text": "step 1 took 3 ms\n"},
               {"output_type": "stream", "name": "stderr", "text": "warning: tied weights\n"},
               {"output_type": "execute_result", "data": {"text/plain": "tensor([1., 2.])"}},
               {"output_type": "error", "ename": "AssertionError", "evalue": "x", "traceback": []}]
    assert cell_text(outputs, graded=False) == ["step 1 took <time>", "tensor([1., 2.])", "<error AssertionError>"]
    assert "warning: tied weights" in cell_text(outputs, graded=True)
    assert differences([("a", ["x"])], [("a", ["x"]), ("b", [])]) == ["the runs have 1 and 2 code cells"]


def test_a_timing_table_row_keeps_its_names():
    a = sanitize("bf16      65536 values: bit-identical on 100.0%;  course_lib  12.1 ms, torch cast   0.4 ms")
    b = sanitize("bf16      65536 values: bit-identical on 100.0%;  course_lib   9.8 ms, torch cast   0.3 ms")
    assert a == b == "bf16 65536 values: bit-identical on 100.0%; course_lib <time>, torch cast <time>"


def test_quality_numbers_beside_a_timing_are_kept_and_progress_bars_dropped():
    row = "int8 dynamic (per tensor)      58.6   35.5%        24.8 ms     2.79x      0.9480"
    assert sanitize(row) == "int8 dynamic (per tensor) 58.6 35.5% <time> <ratio> 0.9480"
    assert sanitize("| GPTQ | 3 | 128 | 31.54 | 5.109 | 1.384 s |") == "| GPTQ | 3 | 128 | 31.54 | 5.109 | <time> |"
    assert sanitize("MiniLM variants:  40%|####      | 2/5 [00:01<00:02,  1.5it/s]\nok") == "ok"
    assert sanitize("fp16 e4m3 2 s") == "fp16 e4m3 <time>", "digits inside a name are no timing"
