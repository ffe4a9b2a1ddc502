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
    with pytest.raises(AssertionError, match=r"relative_error calls course_lib\.basics\.relative_error, which computes.*"
                                             r"write it yourself"):
        grading.check_function(relative_error, basics.relative_error, cases=cases)
    grading.check_function(relative_error, basics.relative_error, cases=cases, handed_over=(basics.relative_error,))


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
        with pytest.raises(AssertionError, match=r"sneaky calls course_lib\.basics\.sqnr_db"):
            grading.check_function(sneaky, reference, cases=cases)


def test_removing_the_call_watch_fails():
    from course_lib import basics

    def unhook(x, x_hat):
        sys.setprofile(None)
        return torch.tensor(0.0)

    with pytest.raises(AssertionError, match="removed the grader's call watch"):
        grading.check_function(unhook, basics.relative_error, cases=[(torch.ones(2), torch.ones(2))])
    assert sys.getprofile() is None


def test_a_sibling_reference_fails_unless_the_exercise_hands_it_over():
    from course_lib import basics

    def sqnr_db(x, x_hat):  # uses another exercise's reference
        err = basics.relative_error(x, x_hat)
        return -20.0 * math.log10(err)

    cases = [(grading.randn(16, seed=1), grading.randn(16, seed=2))]
    with pytest.raises(AssertionError, match=r"sqnr_db calls course_lib\.basics\.relative_error"):
        grading.check_function(sqnr_db, basics.sqnr_db, cases=cases, rtol=1e-9)
    grading.check_function(sqnr_db, basics.sqnr_db, cases=cases, rtol=1e-9, handed_over=(basics.relative_error,))
    assert sys.getprofile() is None  # the watch is removed after each call


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


def test_call_learner_watches_a_direct_learner_call():
    """Tests that call the learner with call_learner (modules compared afterwards, e.g. notebook 08's
    fold_scales) get the same watch as check_function's."""
    from course_lib import awq

    def fold_scales(prev, linears, scales):  # delegates
        return awq.fold_scales(prev, linears, scales)

    def own(prev, linears, scales):
        with torch.no_grad():
            prev.weight.div_(scales)
            for lin in linears:
                lin.weight.mul_(scales)

    args = lambda: (torch.nn.LayerNorm(4), [torch.nn.Linear(4, 2)], torch.full((4,), 2.0))  # noqa: E731
    with pytest.raises(AssertionError, match=r"fold_scales calls course_lib\.awq\.fold_scales"):
        grading.call_learner(fold_scales, *args())
    grading.call_learner(own, *args())
    assert sys.getprofile() is None, "the watch must be removed after the call"


# ----------------------------------------------------------------------------------------------
# delegation: every route to code that computes the answer fails, the learner's own work passes


def _delegation_message(fn, *args, handed_over=()):
    with pytest.raises(AssertionError) as info:
        grading.call_learner(fn, *args, handed_over=handed_over)
    return str(info.value)


def test_sibling_functions_and_classes_of_course_lib_are_caught():
    from course_lib import gptq, llm_int8, nf4

    w = grading.randn(4, 64, seed=0)
    assert "course_lib.nf4.quantize_4bit" in _delegation_message(lambda w: nf4.quantize_4bit(w, 64, "nf4"), w)
    assert "course_lib.llm_int8.int8_vectorwise_quant" in _delegation_message(
        lambda x: llm_int8.int8_vectorwise_quant(x, 0.0)[:2], w)
    assert "course_lib.llm_int8.Int8Linear" in _delegation_message(
        lambda x: llm_int8.Int8Linear(grading.randn(3, 64, seed=1), threshold=6.0)(x), w)
    h = gptq.hessian_from_inputs(grading.randn(100, 64, seed=2))
    message = _delegation_message(lambda w, h: gptq.gptq_quantize_weight(w, h, 4, None, 1), w, h,
                                  handed_over=(gptq.hessian_inverse_cholesky,))
    assert "course_lib.gptq.gptq_quantize_weight" in message and "hands over: course_lib.gptq.hessian_inverse_cholesky" in message


def test_third_party_quantizers_are_caught():
    pytest.importorskip("bitsandbytes")
    import bitsandbytes.functional as bnb_f
    import torch.nn.utils.prune as torch_prune

    w = grading.randn(64, seed=0)
    assert "bitsandbytes.functional.quantize_4bit" in _delegation_message(
        lambda w: bnb_f.quantize_4bit(w, blocksize=64, quant_type="nf4"), w)
    assert "torch.fake_quantize_per_tensor_affine" in _delegation_message(
        lambda x: torch.fake_quantize_per_tensor_affine(x, 0.1, 0, -8, 7), w)
    assert "torch.fake_quantize_per_channel_affine" in _delegation_message(
        lambda x: torch.fake_quantize_per_channel_affine(x.reshape(4, 16), torch.ones(4), torch.zeros(4, dtype=torch.int32),
                                                         0, -8, 7), w)
    assert "torch.nn.utils.prune.l1_unstructured" in _delegation_message(
        lambda m: torch_prune.l1_unstructured(m, "weight", 0.5), torch.nn.Linear(4, 4))
    assert "torch.ops.aten.quantize_per_tensor" in _delegation_message(
        lambda x: torch.ops.aten.quantize_per_tensor(x, 0.1, 0, torch.quint8).int_repr(), w)
    hqq_core = pytest.importorskip("hqq.core.quantize")
    assert "hqq.core" in _delegation_message(
        lambda w: hqq_core.Quantizer.quantize(w.reshape(4, 16), nbits=4, group_size=16)[0], w)
    gguf = pytest.importorskip("gguf")
    assert "gguf.quants" in _delegation_message(
        lambda w: torch.from_numpy(gguf.quants.quantize(w.reshape(2, 32).numpy(), gguf.GGMLQuantizationType.Q4_0)), w)


def test_the_course_kernels_custom_ops_are_caught():
    from course_lib import kernels

    x = grading.randn(4, 8, seed=0)
    assert "torch.ops.course_lib.quantize_rows_int8" in _delegation_message(
        lambda x: torch.ops.course_lib.quantize_rows_int8(x), x)
    assert "course_lib.kernels.ops.quantize_rows_int8" in _delegation_message(
        lambda x: kernels.quantize_rows_int8(x, backend="torch"), x)


def test_plumbing_is_allowed_but_cannot_carry_a_reference_in():
    """course_lib's plumbing (training loops, data, models) may be called; a reference passed through it as
    a callback is still a call of the reference."""
    from course_lib import basics, training

    model = torch.nn.Linear(2, 1)
    x = grading.randn(8, 2, seed=0)

    def fit(loss_at):
        return training.train_steps(model, model.parameters(), 2, 1e-3, loss_at, progress=False)

    fit_own = lambda: fit(lambda step: ((model(x) - 1) ** 2).mean())  # noqa: E731
    assert len(grading.call_learner(fit_own)) == 2
    fit_reference = lambda: fit(lambda step: basics.relative_error(model(x), torch.ones(8, 1)))  # noqa: E731
    assert "course_lib.basics.relative_error" in _delegation_message(fit_reference)


def test_a_handed_over_helper_may_call_anything_inside():
    """nf4_codebook, handed over, is allowed with whatever it runs; a module hands over all of its functions."""
    from course_lib import capstone, nf4

    def quantize(w):
        book = nf4.nf4_codebook()
        return (w[:, None] - book).abs().argmin(-1)

    grading.call_learner(quantize, grading.randn(16, seed=0), handed_over=(nf4.nf4_codebook,))
    assert "course_lib.nf4.nf4_codebook" in _delegation_message(quantize, grading.randn(16, seed=0))
    recipe = grading.call_learner(lambda: capstone.bits_recipe({"a": 3}, "hqq", 128), handed_over=(capstone,))
    assert recipe == capstone.bits_recipe({"a": 3}, "hqq", 128)


def test_a_swallowed_error_or_a_raising_reference_cannot_hide_the_call():
    from course_lib import affine

    def quantize(x, scale, zero_point, qmin, qmax):
        try:
            affine.quantize(x, scale, zero_point, qmin, qmax)  # the reference raises on this bad input
        except ValueError:
            pass
        return x

    bad = (torch.ones(2), torch.tensor(0.0), torch.tensor(0), 0, 255)
    with pytest.raises(AssertionError, match="calls course_lib.affine.quantize"):
        grading.check_raises(quantize, bad, expected=ValueError)

    def validate_with_the_reference(x, scale, zero_point, qmin, qmax):
        return affine.quantize(x, scale, zero_point, qmin, qmax)

    with pytest.raises(AssertionError, match="calls course_lib.affine.quantize"):
        grading.check_raises(validate_with_the_reference, bad, expected=ValueError)


def test_changes_to_course_lib_builtins_and_the_notebook_during_a_call_are_undone_and_fail():
    import builtins

    from course_lib import capstone, hqq

    budget, iters, real_abs = capstone.BUDGET_MB, hqq.DEFAULTS["iters"], builtins.abs
    main = sys.modules["__main__"]
    main.course_test_name = "the test's value"

    def cheat():
        capstone.BUDGET_MB = math.inf                  # a constant the test reads
        hqq.DEFAULTS["iters"] = 1                     # a dict edited in place
        builtins.abs = lambda v: 0                    # a builtin
        main.course_test_name = "the learner's value"  # a notebook name the test reads
        return {"*": ("rtn", 2, 128)}

    try:
        message = _delegation_message(cheat)
        for what in ("course_lib.capstone.BUDGET_MB", "course_lib.hqq.DEFAULTS (edited in place)", "builtins.abs",
                     f"{main.__name__}.course_test_name"):
            assert what in message, message
        assert (capstone.BUDGET_MB, hqq.DEFAULTS["iters"], builtins.abs) == (budget, iters, real_abs)
        assert main.course_test_name == "the test's value"
    finally:
        del main.course_test_name


def test_every_delegating_answer_computes_the_answer_when_nothing_watches(monkeypatch):
    """The delegating answers of tests/adversarial_submissions.py score 0 in the round trip; here each one
    gives the reference's result with the watch switched off, so the 0 comes from the watch alone."""
    import contextlib

    from torch import nn

    pytest.importorskip("nbformat")  # adversarial_submissions builds notebooks (the GPU machine has no nbformat)
    import course_lib
    from adversarial_submissions import DELEGATIONS
    from course_lib import (affine, awq, basics, bitnet, capstone, distill, formats, gguf_formats, gptq, granularity, hqq,
                            kernels, kv_cache, llm_int8, nf4, observers, prune, qat, smoothquant)

    monkeypatch.setattr(grading, "no_delegation", lambda *a, **k: contextlib.nullcontext())
    gen = torch.Generator().manual_seed(12)
    w, x = grading.randn(16, 128, seed=0, scale=0.02), grading.randn(8, 16, seed=1)
    x_out = x.clone()
    x_out[:, 3] *= 20
    W, H = grading.randn(8, 32, seed=2), gptq.hessian_from_inputs(grading.randn(100, 32, seed=3))
    packed, absmax = nf4.quantize_nf4(w)
    cases = {  # answer: (reference, arguments)
        "relative_error": (basics.relative_error, (x, x + 0.01)),
        "sqnr_db": (basics.sqnr_db, (x, x + 0.01)),
        "count_parameters": (basics.count_parameters, (nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2)),)),
        "int_range": (formats.int_range, (8, True)),
        "mxfp4_quantize": (formats.mxfp4_quantize, (grading.randn(4, 80, seed=13, scale=0.05),)),
        "quantize": (affine.quantize, (grading.randn(16, seed=4), torch.tensor(0.05), torch.tensor(3), -8, 7)),
        "fake_quantize_per_group": (granularity.fake_quantize_per_group, (grading.randn(4, 32, seed=5), 4, 16)),
        "q4_0_quantize": (gguf_formats.q4_0_quantize, (grading.randn(4, 64, seed=10),)),
        "q8_0_quantize": (gguf_formats.q8_0_quantize, (grading.randn(4, 64, seed=14),)),
        "q8_0_dequantize": (gguf_formats.q8_0_dequantize, (gguf_formats.q8_0_quantize(grading.randn(4, 64, seed=15)),)),
        "q4_k_dequantize": (gguf_formats.q4_k_dequantize, (gguf_formats.q4_k_quantize(grading.randn(2, 256, seed=16)),)),
        "q4_0_dequantize": (gguf_formats.q4_0_dequantize, (gguf_formats.q4_0_quantize(grading.randn(4, 64, seed=20)),)),
        "q4_k_quantize": (gguf_formats.q4_k_quantize, (grading.randn(2, 512, seed=21),)),
        "smoothing_factors": (smoothquant.smoothing_factors, (grading.randn(32, seed=17).abs() + 0.1,
                                                              grading.randn(8, 32, seed=18), 0.5)),
        "fake_quantize_ste": (qat.fake_quantize_ste, (grading.randn(64, seed=6), torch.tensor(0.05),
                                                      torch.tensor(3, dtype=torch.int32), 0, 15)),
        "lsq_fake_quantize": (qat.lsq_fake_quantize, (grading.randn(64, seed=13), torch.tensor(0.3), -8, 7)),
        "quantize_nf4": (nf4.quantize_nf4, (w,)),
        "dequantize_nf4": (nf4.dequantize_nf4, (packed, absmax, tuple(w.shape))),
        "vectorwise_quant": (llm_int8.vectorwise_quant, (x,)),
        "outlier_columns": (llm_int8.outlier_columns, (x_out, 6.0)),
        "llm_int8_matmul": (llm_int8.llm_int8_matmul, (x_out, grading.randn(4, 16, seed=7), 6.0)),
        "gptq_quantize_weight_unblocked": (gptq.gptq_quantize_weight_unblocked, (W, H, 4)),
        "gptq_quantize_weight": (gptq.gptq_quantize_weight, (W, H, 3, 8, 5)),
        "hqq_quantize_weight": (hqq.hqq_quantize_weight, (w, 4)),
        "absmean_ternary": (bitnet.absmean_ternary, (w,)),
        "tq2_0_quantize": (bitnet.tq2_0_quantize, (grading.randn(3, 512, seed=22, scale=0.05),)),
        "soft_target_loss": (distill.soft_target_loss, (grading.randn(4, 10, seed=8), grading.randn(4, 10, seed=9), 2.0)),
        "magnitude_mask": (prune.magnitude_mask, (w, 0.5)),
        "quantize_rows_int8": (lambda t: kernels.quantize_rows_int8(t, backend="torch"), (x,)),
        "quantized_matmul": (affine.quantized_matmul, (torch.randint(0, 256, (4, 16), generator=gen), 0.02, 128,
                                                       torch.randint(0, 256, (16, 3), generator=gen), 0.05, 120)),
        "quantize_multiplier": (affine.quantize_multiplier, (0.0123,)),
        "requantize": (affine.requantize, (torch.randint(-10**6, 10**6, (5, 7), generator=gen, dtype=torch.int32),
                                           *affine.quantize_multiplier(0.002), torch.tensor(-3, dtype=torch.int32),
                                           -128, 127)),
        "candidate_distributions": (observers.candidate_distributions, (torch.rand(64, generator=gen) * 100, 40, 8)),
        "search_clip": (awq.search_clip, (w, grading.randn(32, 128, seed=11), 3, 64)),
        "sparsegpt_prune": (prune.sparsegpt_prune, (W, H, 0.5, None, 16)),
        "cubic_sparsity": (prune.cubic_sparsity, (7, 0.8, 0.1, 1, 4, 2)),
        "quantize_groups": (kv_cache.quantize_groups, (grading.randn(2, 4, 64, 8, seed=19), 4, 32, 2)),
    }
    names = dict(torch=torch, math=math, nn=nn, course_lib=course_lib, affine=affine, awq=awq, bitnet=bitnet,
                 capstone=capstone, distill=distill, formats=formats, gptq=gptq, granularity=granularity, hqq=hqq,
                 kernels=kernels, llm_int8=llm_int8, nf4=nf4, observers=observers, prune=prune, qat=qat)
    try:  # the op needs the course's C++ kernels on the CPU (the test command builds them first)
        kernels.load_extension("cpp")
    except Exception:
        cases.pop("quantize_rows_int8")
    checked = set()
    for assignment, answers in DELEGATIONS.items():
        for answer_id, source in answers.items():
            if answer_id not in cases:
                continue
            namespace = dict(names)
            exec(compile(source, f"<{assignment}/{answer_id}>", "exec"), namespace)
            reference, args = cases[answer_id]
            expected = reference(*args)
            got = grading.call_learner(namespace[answer_id], *args)
            if isinstance(expected, tuple) and hasattr(expected, "_fields"):
                expected, got = tuple(expected), tuple(got)
            grading.assert_close(got, expected, atol=1e-6, rtol=1e-5, name=f"{assignment}: {answer_id}")
            checked.add(answer_id)
    assert checked == set(cases), f"cases without a delegation: {set(cases) - checked}"
    assert len(checked) >= 15


def test_a_test_cell_in_jupyter_prints_one_line_when_it_passes_and_ends_on_the_message_when_it_fails():
    """Through a real kernel: a passing test cell prints what was checked in one line; a failing one prints
    the course's message first, then a traceback with the learner's own frames and no frame of grading."""
    import re

    import nbformat
    from nbclient import NotebookClient

    cells = [
        "import torch\nfrom course_lib import basics, grading",
        "def relative_error(x, x_hat):\n    if not bool(x.any()):\n        raise ValueError('x must not be all zeros')\n"
        "    return float((x - x_hat).norm() / x.norm())",
        "grading.check_function(relative_error, basics.relative_error, on_devices=['cpu'],\n"
        "                       cases=[(torch.ones(3), torch.zeros(3)), (torch.ones(2), torch.ones(2))], atol=1e-6)\n"
        "grading.check_raises(relative_error, (torch.zeros(2), torch.ones(2)), mentions='x')",
        "def relative_error(x, x_hat):\n    return 1 / 0",
        "grading.check_function(relative_error, basics.relative_error, on_devices=['cpu'],\n"
        "                       cases=[(torch.ones(3), torch.zeros(3)), {'args': (torch.ones(2), torch.ones(2)), 'label': 'x_hat equals x'}])",
        "def relative_error(x, x_hat):  # an L1 norm where the L2 norm belongs\n"
        "    return float((x - x_hat).abs().sum() / x.abs().sum())\n",
        "grading.check_function(relative_error, basics.relative_error, on_devices=['cpu'], atol=1e-6, cases=[\n"
        "    (torch.ones(3), torch.zeros(3)), {'args': (torch.ones(2), torch.tensor([1.0, 3.0])), 'label': 'x_hat = [1, 3]'}])",
    ]
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells])
    NotebookClient(nb, allow_errors=True, timeout=120, kernel_name="python3").execute()
    passing = "".join(o.get("text", "") for o in nb.cells[2].outputs)
    assert passing == "\u2713 3 checks passed (relative_error on cpu)\n", passing
    plain = re.compile(r"\x1b\[[0-9;]*m")
    for index in (4, 6):
        (error,) = [o for o in nb.cells[index].outputs if o.output_type == "error"]
        shown = plain.sub("", "\n".join(error.traceback))
        assert "grading.py" not in shown and "File <course check>:1" in shown, shown
        last = shown.rstrip().splitlines()[-1]
        assert last.startswith("AssertionError: relative_error("), shown
        printed = [o for o in nb.cells[index].outputs if o.output_type == "stream"]
        assert nb.cells[index].outputs[0] is printed[0] and len(printed) == 1, "the message first, no pass line"
        assert printed[0].name == "stdout" and printed[0].text == "\u2717 " + last.removeprefix("AssertionError: ") + "\n"
    crash = plain.sub("", "\n".join(nb.cells[4].outputs[-1].traceback))
    assert "return 1 / 0" in crash and "ZeroDivisionError" in crash  # the learner's own frame is kept
    wrong = plain.sub("", "\n".join(nb.cells[6].outputs[-1].traceback))
    assert "(case 2 of 2, x_hat = [1, 3]): result is 1.0, expected 1.41421" in wrong and "atol=1e-06" in wrong, wrong
