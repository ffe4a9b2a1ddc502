"""The grading helpers must pass correct work, fail wrong work with a useful message, and stay quiet."""

from __future__ import annotations

import math
import sys
import warnings

import pytest
import torch

from course_lib import grading


def test_check_function_passes_identical_functions(device):
    grading.check_function(lambda x: x * 2, lambda x: x * 2, cases=[grading.randn(3, 4)], on_devices=[device])


def test_check_function_reports_first_wrong_element():
    with pytest.raises(AssertionError) as info:
        grading.check_function(lambda x: x + (x > 1).float(), lambda x: x.clone(),
                               cases=[torch.tensor([0.5, 1.5, 0.0])], on_devices=["cpu"])
    msg = str(info.value)
    assert "1 of 3 elements" in msg and "[1]" in msg and "got 2.5" in msg and "expected 1.5" in msg


@pytest.mark.parametrize(
    "learner, fragment",
    [
        (lambda x: x.double(), "dtype float64, expected float32"),
        (lambda x: x.reshape(-1), "shape (6,), expected (2, 3)"),
        (lambda x: x.tolist(), "should be a torch.Tensor, got list"),
        (lambda x: x * float("nan"), "NaN"),
    ],
)
def test_check_function_names_what_differs(learner, fragment):
    with pytest.raises(AssertionError, match=fragment.replace("(", r"\(").replace(")", r"\)")):
        grading.check_function(learner, lambda x: x.clone(), cases=[grading.randn(2, 3)], on_devices=["cpu"])


def test_not_implemented_gets_a_clear_message():
    def stub(x):
        raise NotImplementedError()

    with pytest.raises(AssertionError, match="not implemented yet"):
        grading.check_function(stub, lambda x: x, cases=[torch.ones(2)])


def test_learner_crash_reports_the_call():
    with pytest.raises(AssertionError, match=r"boom\(.*raised ZeroDivisionError"):
        def boom(x):
            return 1 / 0
        grading.check_function(boom, lambda x: x, cases=[torch.ones(2)])


def test_inputs_are_copied_so_in_place_edits_do_not_leak():
    def learner(x):
        x.mul_(3)  # mutates its input
        return x

    grading.check_function(learner, lambda x: x * 3, cases=[torch.ones(4)])


def test_tolerances_and_numbers():
    grading.assert_close(1.0 + 1e-9, 1.0, atol=1e-8, rtol=0)
    with pytest.raises(AssertionError, match="expected 1.0"):
        grading.assert_close(1.1, 1.0, atol=1e-3, rtol=0)
    with pytest.raises(AssertionError, match="should be a number"):
        grading.assert_close("1.0", 1.0)
    grading.assert_close(math.inf, math.inf)
    with pytest.raises(AssertionError):
        grading.assert_close(math.inf, -math.inf)


def test_structures_are_compared_recursively():
    expected = {"scale": torch.tensor(0.5), "codes": (torch.tensor([1, 2]), 3)}
    grading.assert_equal({"scale": torch.tensor(0.5), "codes": (torch.tensor([1, 2]), 3)}, expected)
    with pytest.raises(AssertionError, match=r"result\['codes'\]\[0\]"):
        grading.assert_equal({"scale": torch.tensor(0.5), "codes": (torch.tensor([1, 5]), 3)}, expected)
    with pytest.raises(AssertionError, match="missing"):
        grading.assert_equal({"scale": torch.tensor(0.5)}, expected)


def test_integers_compare_exactly_beyond_float_precision():
    big = torch.tensor([2**53 + 1], dtype=torch.int64)
    with pytest.raises(AssertionError):
        grading.assert_equal(big, torch.tensor([2**53], dtype=torch.int64))


def test_nan_positions_must_match_and_equal_nans_pass():
    grading.assert_equal(torch.tensor([1.0, float("nan")]), torch.tensor([1.0, float("nan")]))
    with pytest.raises(AssertionError, match="NaN"):
        grading.assert_equal(torch.tensor([float("nan"), 1.0]), torch.tensor([1.0, 1.0]))


def test_infinities_must_match():
    with pytest.raises(AssertionError, match="infinite"):
        grading.assert_equal(torch.tensor([float("inf")]), torch.tensor([float("-inf")]))


def test_check_raises():
    def strict(bits):
        if bits > 8:
            raise ValueError(f"bits must be <= 8, got {bits}")
        return bits

    grading.check_raises(strict, (9,), mentions="bits")
    with pytest.raises(AssertionError, match="returned normally"):
        grading.check_raises(strict, (4,))
    with pytest.raises(AssertionError, match="should mention 'scale'"):
        grading.check_raises(strict, (9,), mentions="scale")
    with pytest.raises(AssertionError, match="expected ValueError or TypeError"):
        grading.check_raises(lambda: [][1])


def test_passing_checks_write_nothing_to_stderr(capfd):
    def noisy(x):
        warnings.warn("deprecated thing")
        print("debug", file=sys.stderr)
        return x + 1

    grading.check_function(noisy, lambda x: x + 1, cases=[torch.zeros(3)])
    captured = capfd.readouterr()
    assert captured.err == ""


def test_helpers_return_none_so_a_cell_cannot_end_on_a_score():
    assert grading.check_function(lambda x: x, lambda x: x, cases=[torch.ones(1)]) is None
    assert grading.assert_close(1.0, 1.0) is None


def test_empty_cases_are_rejected():
    with pytest.raises(ValueError, match="cases"):
        grading.check_function(lambda x: x, lambda x: x, cases=[])


def test_results_must_stay_on_the_input_device():
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA to move a result off the input's device")
    with pytest.raises(AssertionError, match="keep results on the input's device"):
        grading.check_function(lambda x: x.cpu(), lambda x: x.clone(), cases=[torch.ones(2)], on_devices=["cuda"])


def test_devices_lists_cpu_first():
    assert grading.devices()[0] == "cpu"
    assert ("cuda" in grading.devices()) == torch.cuda.is_available()


def test_calling_the_reference_from_the_answer_fails_with_a_message():
    from course_lib import basics

    def relative_error(x, x_hat):
        from course_lib.basics import relative_error as r
        return r(x, x_hat)

    cases = [(grading.randn(8, seed=1), grading.randn(8, seed=2))]
    with pytest.raises(AssertionError, match=r"calls the course_lib reference course_lib\.basics\.relative_error.*yourself"):
        grading.check_function(relative_error, basics.relative_error, cases=cases)
    grading.check_function(relative_error, basics.relative_error, cases=cases, allow_reference_call=True)


def test_a_caught_or_wrapped_reference_call_is_still_detected():
    import functools

    from course_lib import basics

    @functools.wraps(basics.sqnr_db)
    def wrapped_reference(x, x_hat):
        return basics.sqnr_db(x, x_hat)

    def sneaky(x, x_hat):
        try:
            return functools.partial(basics.sqnr_db, x)(x_hat)
        except AssertionError:
            return 0.0

    cases = [(grading.randn(8, seed=1), grading.randn(8, seed=2))]
    for reference in (basics.sqnr_db, wrapped_reference, functools.partial(basics.sqnr_db)):
        with pytest.raises(AssertionError, match="calls the course_lib reference"):
            grading.check_function(sneaky, reference, cases=cases)


def test_removing_the_call_watch_fails():
    from course_lib import basics

    def unhook(x, x_hat):
        sys.setprofile(None)
        return torch.tensor(0.0)

    with pytest.raises(AssertionError, match="removed the grader's call watch"):
        grading.check_function(unhook, basics.relative_error, cases=[(torch.ones(2), torch.ones(2))])
    assert sys.getprofile() is None


def test_own_code_and_other_references_are_allowed():
    from course_lib import basics

    def sqnr_db(x, x_hat):  # uses another exercise's reference: allowed
        err = basics.relative_error(x, x_hat)
        return -20.0 * math.log10(err)

    grading.check_function(sqnr_db, basics.sqnr_db, cases=[(grading.randn(16, seed=1), grading.randn(16, seed=2))],
                           rtol=1e-9)
    previous = sys.getprofile()
    assert previous is None  # the watch is removed after each call


def test_a_shared_local_wrapper_is_not_delegation():
    """Notebook 04 wraps learner and reference in the same local helper: their shared code is no call of the reference."""
    from course_lib import basics

    def wrap(fn):
        def run(x, x_hat):
            return fn(x, x_hat)
        return run

    def relative_error(x, x_hat):
        return (x - x_hat).norm() / x.norm()

    grading.check_function(wrap(relative_error), wrap(basics.relative_error), cases=[(torch.ones(3), torch.zeros(3))],
                           atol=1e-6)


def test_forbid_reference_around_a_direct_learner_call():
    """For tests that call the learner with call_learner (modules compared afterwards, e.g. notebook 08's
    fold_scales): the same watch as check_function's."""
    from course_lib import awq

    def fold_scales(prev, linears, scales):  # delegates
        return awq.fold_scales(prev, linears, scales)

    def own(prev, linears, scales):
        with torch.no_grad():
            prev.weight.div_(scales)
            for lin in linears:
                lin.weight.mul_(scales)

    args = lambda: (torch.nn.LayerNorm(4), [torch.nn.Linear(4, 2)], torch.full((4,), 2.0))  # noqa: E731
    with pytest.raises(AssertionError, match=r"fold_scales calls the course_lib reference course_lib\.awq\.fold_scales"):
        with grading.forbid_reference(awq.fold_scales, "fold_scales"):
            grading.call_learner(fold_scales, *args())
    with grading.forbid_reference(awq.fold_scales, "fold_scales"):
        grading.call_learner(own, *args())
    assert sys.getprofile() is None, "the watch must be removed after the block"
