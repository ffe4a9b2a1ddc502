"""Adversarial submissions built from a release notebook: what a careless, unlucky or cheating learner hands in.

Each builder returns ``(notebook, expected)`` where ``expected`` maps every graded cell's grade_id to the
score it must get. Cases that do not interfere share one submission (one exercise gets stderr spam,
another a warning), so that one autograde run of one scratch course covers them all.
The exercise functions are taken from notebook 00 (relative_error, sqnr_db, count_parameters): the
builders only need the grade ids ``<fn>`` (answer) and ``test_<fn>`` (test), which every notebook has.
"""

from __future__ import annotations

import textwrap

import nbformat

from nbgrader_course import release_path, solution_path, typed_solutions


def _meta(cell) -> dict:
    return cell.get("metadata", {}).get("nbgrader", {})


def index_of(nb: nbformat.NotebookNode, grade_id: str) -> int:
    (i,) = [i for i, c in enumerate(nb.cells) if _meta(c).get("grade_id") == grade_id]
    return i


def correct(assignment: str) -> nbformat.NotebookNode:
    """The release notebook with the solutions typed in."""
    release = nbformat.read(release_path(assignment), as_version=4)
    return typed_solutions(release, nbformat.read(solution_path(assignment), as_version=4))


def answer(nb: nbformat.NotebookNode, fn: str) -> str:
    return nb.cells[index_of(nb, fn)].source


def set_answer(nb: nbformat.NotebookNode, fn: str, source: str) -> None:
    nb.cells[index_of(nb, fn)].source = source


def wrapped(nb: nbformat.NotebookNode, fn: str, prelude: str = "", result: str = "result") -> str:
    """The correct answer of ``fn`` renamed, behind a wrapper that runs ``prelude`` and returns ``result``."""
    body = textwrap.indent(textwrap.dedent(prelude).strip() or "pass", "    ")
    return (answer(nb, fn).replace(f"def {fn}(", f"def _{fn}_impl(", 1)
            + f"\n\n\ndef {fn}(*args, **kwargs):\n{body}\n    result = _{fn}_impl(*args, **kwargs)\n"
            f"    return {result}\n")


def wrong(nb: nbformat.NotebookNode, fn: str) -> str:
    """An answer that is off by one on every input (also on zeros)."""
    return wrapped(nb, fn, result="result + 1")


def delete(nb: nbformat.NotebookNode, grade_id: str) -> None:
    del nb.cells[index_of(nb, grade_id)]


def strip_metadata(nb: nbformat.NotebookNode, grade_id: str, source: str | None = None) -> None:
    cell = nb.cells[index_of(nb, grade_id)]
    cell.metadata.pop("nbgrader")
    if source is not None:
        cell.source = source


def code_cell(source: str, like: nbformat.NotebookNode | None = None) -> nbformat.NotebookNode:
    cell = nbformat.v4.new_code_cell(source)
    if like is not None:
        cell.metadata = nbformat.from_dict(dict(like.metadata))
    return cell


def without_ungraded_tail(nb: nbformat.NotebookNode, assignment: str) -> nbformat.NotebookNode:
    """``nb`` without the release's cells after its last graded cell, as a learner may delete them: demos and
    tables that grade nothing, which an autograder would otherwise spend its time running. Only a tail that
    ``nb`` still has unchanged is dropped."""
    release = nbformat.read(release_path(assignment), as_version=4)
    last_graded = max(i for i, c in enumerate(release.cells) if _meta(c).get("grade"))
    tail = [c.source for c in release.cells[last_graded + 1:]]
    if tail and [c.source for c in nb.cells[-len(tail):]] == tail:
        del nb.cells[-len(tail):]
    return nb


def full(nb: nbformat.NotebookNode) -> dict[str, float]:
    return {_meta(c)["grade_id"]: float(_meta(c)["points"]) for c in nb.cells if _meta(c).get("grade")}


# ----------------------------------------------------------------------------------------------
# the submissions (notebook 00: relative_error, sqnr_db, count_parameters, 2 points each)

STDERR = 'import sys, warnings\nprint("debug output", file=sys.stderr)\nwarnings.warn("a learner warning")'
# C code writing to file descriptor 2 (ipykernel forwards it as stderr), not through sys.stderr
FD2 = 'import ctypes, os\nos.write(2, b"raw fd 2\\n")\nctypes.CDLL(None).write(2, b"libc fd 2\\n", 10)'


def noisy_but_correct(assignment: str):
    """Case 1: correct work that writes to stderr and warns, at the top of an answer cell and inside the
    function when the test calls it (through check_function, and directly as count_parameters' test does),
    from Python and from C (file descriptor 2)."""
    nb = correct(assignment)
    set_answer(nb, "relative_error", STDERR + "\n\n" + answer(nb, "relative_error"))
    set_answer(nb, "sqnr_db", wrapped(nb, "sqnr_db", 'import warnings\nwarnings.warn("inside sqnr_db")\n' + FD2))
    set_answer(nb, "count_parameters", wrapped(nb, "count_parameters", STDERR + "\n" + FD2))
    return nb, full(nb)


def wrong_and_tests_tampered(assignment: str):
    """Cases 2 and 3: wrong work with its test cell edited to ``pass`` (0: the original test is restored);
    correct work whose test cell was deleted (restored: full marks); work that is wrong in one respect only
    (``trainable_only`` ignored) whose test cell lost its nbgrader metadata and was replaced by ``pass``
    (the original is added back: 0). Plain wrong work under untouched tests is graded by
    tests/course/test_grade_assignment.py."""
    nb = correct(assignment)
    set_answer(nb, "relative_error", wrong(nb, "relative_error"))
    nb.cells[index_of(nb, "test_relative_error")].source = "pass"
    delete(nb, "test_sqnr_db")
    set_answer(nb, "count_parameters", answer(nb, "count_parameters").replace("p.requires_grad or not trainable_only",
                                                                              "True"))
    strip_metadata(nb, "test_count_parameters", source="pass")
    return nb, {"test_relative_error": 0.0, "test_sqnr_db": 2.0, "test_count_parameters": 0.0}


PATCH_GRADING = """
from course_lib import basics
import builtins
grading.check_function = lambda *a, **k: None
grading.check_raises = lambda *a, **k: None
grading.assert_close = lambda *a, **k: None
basics.relative_error = relative_error          # the reference now agrees with me
builtins.AssertionError = type("AssertionError", (Exception,), {})
import course_lib.formats, course_lib.hqq
course_lib.formats.GB = 1                       # a module constant
course_lib.hqq.DEFAULTS["iters"] = 0            # a module-level dict, edited in place
"""

PATCH_DISPLAY = """
import sys, types
_real = grading
grading = types.SimpleNamespace(check_function=lambda *a, **k: None, check_raises=lambda *a, **k: None,
                                randn=_real.randn, call_learner=_real.call_learner)
get_ipython().showtraceback = lambda *a, **k: None
get_ipython()._showtraceback = lambda *a, **k: None
type(get_ipython())._showtraceback = lambda *a, **k: None
get_ipython().set_custom_exc((BaseException,), lambda *a, **k: None)
sys.excepthook = lambda *a, **k: None
"""

PATCH_TRANSFORMERS = """
get_ipython().input_transformers_cleanup.append(
    lambda lines: ["pass\\n"] if any("count_parameters(" in ln for ln in lines) else lines)
get_ipython().events.register("pre_run_cell", lambda *a: setattr(__import__("course_lib.grading").grading,
                                                                  "call_learner", lambda fn, *a, **k: 1600))
"""


def monkeypatching(assignment: str):
    """Case 6: wrong work plus learner code that disables the checker: patched grading helpers, a patched
    reference, a fake ``grading``, a patched builtins.AssertionError, silenced tracebacks and exception
    hooks, an input transformer that empties the test cell, an event callback that re-patches. All 0.
    sqnr_db is wrong only on the hidden tests' fp16 input: its 0 needs the hidden tests to run, with the
    real checker restored."""
    nb = correct(assignment)
    set_answer(nb, "relative_error", wrong(nb, "relative_error") + PATCH_GRADING)
    set_answer(nb, "sqnr_db", wrapped(nb, "sqnr_db", result="result if args[0].dtype != torch.float16 else 0.0")
               + PATCH_DISPLAY)
    set_answer(nb, "count_parameters", wrong(nb, "count_parameters") + PATCH_TRANSFORMERS)
    return nb, {"test_relative_error": 0.0, "test_sqnr_db": 0.0, "test_count_parameters": 0.0}


BREAK_GUARD = """
get_ipython().user_expressions = lambda expressions: {}   # the grader's guard runs as a user expression
"""


def breaking_the_guard(assignment: str):
    """Case 6, fail closed: correct work, then learner code that stops the grader's guard from running
    (IPython's user expressions answer nothing). The tests before it are graded (2, 2); from then on
    every test cell is not run and gets a GradingIntegrityError (0, flagged for review)."""
    nb = correct(assignment)
    set_answer(nb, "count_parameters", answer(nb, "count_parameters") + "\n" + BREAK_GUARD)
    return nb, {"test_relative_error": 2.0, "test_sqnr_db": 2.0, "test_count_parameters": 0.0}


def crash_segfault_then_exit(assignment: str):
    """Case 5: a segfault inside relative_error when the test calls it (0), correct sqnr_db (2: the kernel
    was restarted and the earlier cells replayed), os._exit inside count_parameters (0)."""
    nb = correct(assignment)
    set_answer(nb, "relative_error", wrapped(nb, "relative_error", "import ctypes\nctypes.string_at(0)"))
    set_answer(nb, "count_parameters", wrapped(nb, "count_parameters", "import os\nos._exit(3)"))
    return nb, {"test_relative_error": 0.0, "test_sqnr_db": 2.0, "test_count_parameters": 0.0}


def crash_loop_and_memory(assignment: str):
    """Case 5: an infinite loop inside relative_error (stopped by Execute.timeout: 0), a memory bomb inside
    sqnr_db (stopped by the kernel's memory limit: 0), correct count_parameters (2)."""
    nb = correct(assignment)
    set_answer(nb, "relative_error", wrapped(nb, "relative_error", "while True:\n    pass"))
    set_answer(nb, "sqnr_db", wrapped(nb, "sqnr_db", "hog = []\nwhile True:\n    hog.append(bytearray(50_000_000))"))
    return nb, {"test_relative_error": 0.0, "test_sqnr_db": 0.0, "test_count_parameters": 2.0}


def crash_exit_calls(assignment: str):
    """Case 5: os._exit at the top of relative_error's answer cell (the kernel dies before the function
    exists: 0), sys.exit() inside sqnr_db (SystemExit: 0), correct count_parameters (2)."""
    nb = correct(assignment)
    set_answer(nb, "relative_error", "import os\nos._exit(0)\n\n" + answer(nb, "relative_error"))
    set_answer(nb, "sqnr_db", wrapped(nb, "sqnr_db", "import sys\nsys.exit(0)"))
    return nb, {"test_relative_error": 0.0, "test_sqnr_db": 0.0, "test_count_parameters": 2.0}


def duplicated_cells(assignment: str):
    """Case 4: an answer cell copied (a wrong first copy, the correct second: the later definition runs),
    an answer cell split in two cells with the same grade_id, a copy of a test cell pasted above its
    answer. nbgrader keeps the last cell of each grade_id: full marks, and the batch goes on."""
    nb = correct(assignment)
    i = index_of(nb, "relative_error")
    nb.cells.insert(i, code_cell(wrong(nb, "relative_error"), like=nb.cells[i]))
    j = index_of(nb, "sqnr_db")
    helper = "def _signal(x):\n    return x.double().pow(2).sum().item()\n"
    nb.cells.insert(j, code_cell(helper, like=nb.cells[j]))
    k = index_of(nb, "count_parameters")
    nb.cells.insert(k, code_cell(nb.cells[index_of(nb, "test_count_parameters")].source,
                                 like=nb.cells[index_of(nb, "test_count_parameters")]))
    return nb, full(nb)


SUBMISSIONS = {
    "noisy": noisy_but_correct,
    "tampered_tests": wrong_and_tests_tampered,
    "monkeypatch": monkeypatching,
    "breaks_guard": breaking_the_guard,
    "crash_segv": crash_segfault_then_exit,
    "crash_loop_mem": crash_loop_and_memory,
    "crash_exit": crash_exit_calls,
    "duplicates": duplicated_cells,
}


# ----------------------------------------------------------------------------------------------
# delegation: answers that hand the work to code that computes it (a sibling course_lib function, the
# reference under another name, bitsandbytes-style kernels, torch's quantizers) or that patch what the
# test reads. tests/course/test_grading_roundtrip.py submits them, one submission per notebook, graded by nbgrader
# with the course's hooks: each must score 0; tests/course/test_grading.py checks that each computes the right
# answer when nothing watches (so that 0 comes from the watch, not from a wrong result).

DELEGATIONS: dict[str, dict[str, str]] = {
    # the reference imported inside the function, bound to another name at import, called inside a try block
    "00_welcome": {
        "relative_error": "def relative_error(x, x_hat):\n"
                          "    from course_lib.basics import relative_error as r\n    return r(x, x_hat)\n",
        "sqnr_db": "from course_lib import basics as _b\n_ref = _b.sqnr_db\n\n\n"
                   "def sqnr_db(x, x_hat):\n    try:\n        return _ref(x, x_hat)\n    except AssertionError:\n"
                   "        return _ref(x, x_hat)\n",
        "count_parameters": "def count_parameters(model, trainable_only=False):\n"
                            "    from course_lib.basics import count_parameters as r\n    return r(model, trainable_only)\n",
    },
    "01_precision_formats": {
        "int_range": "def int_range(bits, signed=True):\n"
                     "    from course_lib.formats import int_range as given\n    return given(bits, signed)\n",
        # the general MX quantizer, a sibling, with E2M1 elements
        "mxfp4_quantize": "def mxfp4_quantize(x, block_size=32):\n"
                          "    from course_lib.formats import mx_quantize as sibling\n"
                          "    return sibling(x, 'fp4_e2m1', block_size)\n",
    },
    "02_affine_quantization": {
        "quantize": "from course_lib import affine as _a\n_quantize = _a.quantize\n\n\n"
                    "def quantize(x, scale, zero_point, qmin, qmax):\n"
                    "    return _quantize(x, scale, zero_point, qmin, qmax)\n",
        # the reference looked up by name, behind the handed-over int32_matmul's module
        "quantized_matmul": "import course_lib.affine\n\n\ndef quantized_matmul(qa, sa, za, qb, sb, zb):\n"
                            "    return getattr(course_lib.affine, 'quantized_matmul')(qa, sa, za, qb, sb, zb)\n",
        # the reference found in the module's namespace; requantize as a sibling's special case: integer_linear
        # of the accumulators as an (N, 1) input times a 1x1 weight of 1, no bias
        "quantize_multiplier": "def quantize_multiplier(multiplier):\n"
                               "    return vars(affine)['quantize_multiplier'](multiplier)\n",
        "requantize": "def requantize(acc, m0, n, zero_point, qmin, qmax):\n"
                      "    one = torch.ones(1, 1, dtype=torch.int32, device=acc.device)\n"
                      "    out = affine.integer_linear(acc.reshape(-1, 1), 0, one, 0, None, m0, n, zero_point, qmin, qmax)\n"
                      "    return out.reshape(acc.shape)\n",
    },
    "03_granularity": {
        "fake_quantize_per_group": "def fake_quantize_per_group(x, bits, group_size, symmetric=False):\n"
                                   "    return granularity.fake_quantize(x, bits, 'group', group_size, symmetric)\n",
        # the reference class inherited whole; the reference walk
        "QuantLinear": "class QuantLinear(granularity.QuantLinear):\n    pass\n",
        "replace_linears": "def replace_linears(model, factory, skip=()):\n"
                           "    return granularity.replace_linears(model, factory, skip)\n",
        # llama.cpp's own Python package computes the bytes
        "q4_0_quantize": "import gguf\n\n\ndef q4_0_quantize(x):\n"
                         "    data = gguf.quants.quantize(x.detach().cpu().float().numpy(), gguf.GGMLQuantizationType.Q4_0)\n"
                         "    return torch.from_numpy(data).to(x.device)\n",
        # the formats by name; llama.cpp's decoder; the decoder behind a GGUF file's values()
        "q8_0_quantize": "from course_lib import gguf_formats\n\n\ndef q8_0_quantize(x):\n"
                         "    return gguf_formats.quantize_blocks(x, 'Q8_0')\n",
        "q8_0_dequantize": "import gguf\n\n\ndef q8_0_dequantize(blocks):\n"
                           "    values = gguf.quants.dequantize(blocks.cpu().numpy(), gguf.GGMLQuantizationType.Q8_0)\n"
                           "    return torch.from_numpy(values).to(blocks.device)\n",
        "q4_k_dequantize": "from course_lib.gguf_formats import GGUFTensors\n\n\ndef q4_k_dequantize(blocks):\n"
                           "    return GGUFTensors({'w': 'Q4_K'}, {'w': blocks.cpu()}, {}).values()['w'].to(blocks.device)\n",
        # the decoders by name; the reference quantizer under another name
        "q4_0_dequantize": "from course_lib import gguf_formats\n\n\ndef q4_0_dequantize(blocks):\n"
                           "    return gguf_formats.dequantize_blocks(blocks, 'Q4_0')\n",
        "q4_k_quantize": "from course_lib.gguf_formats import q4_k_quantize as _q4_k\n\n\ndef q4_k_quantize(x):\n"
                         "    return _q4_k(x)\n",
    },
    "04_ptq_qat": {
        # the reference's NumPy core, private, called with the histogram converted
        "candidate_distributions": "def candidate_distributions(hist, i, num_levels):\n"
                                   "    from course_lib import observers as _o\n"
                                   "    p, q = _o._candidate_pq(hist.double().cpu().numpy(), i, num_levels)\n"
                                   "    return torch.from_numpy(p).to(hist.device), torch.from_numpy(q).to(hist.device)\n",
        # the reference, imported under another name
        "quantize_model": "def quantize_model(model, bits, observer='min-max', X_calib=None, weight_observer=None):\n"
                          "    from course_lib.qat import quantize_model as _prepared\n"
                          "    return _prepared(model, bits, observer, X_calib, weight_observer)\n",
        "fake_quantize_ste": "def fake_quantize_ste(x, scale, zero_point, qmin, qmax):\n"
                             "    return torch.fake_quantize_per_tensor_affine(x, scale, zero_point, qmin, qmax)\n",
        # PyTorch's own LSQ (learnable scale and zero point), with the zero point held at 0
        "lsq_fake_quantize": "def lsq_fake_quantize(x, step, qmin, qmax, grad_scale=None):\n"
                             "    g = grad_scale if grad_scale is not None else (x.numel() / step.numel() * qmax) ** -0.5\n"
                             "    return torch._fake_quantize_learnable_per_tensor_affine(\n"
                             "        x, step.reshape(1), torch.zeros(1, device=x.device), qmin, qmax, g)\n",
    },
    "05_nf4": {
        # bitsandbytes' quantize_4bit gives the same bytes (notebook 05 shows it)
        "quantize_nf4": "import bitsandbytes.functional as bnb_f\n\n\ndef quantize_nf4(w, blocksize=64):\n"
                        "    packed, state = bnb_f.quantize_4bit(w.reshape(-1), blocksize=blocksize, quant_type='nf4')\n"
                        "    return packed.reshape(-1), state.absmax\n",
        "dequantize_nf4": "def dequantize_nf4(packed, absmax, shape, blocksize=64):\n"
                          "    return nf4.dequantize_4bit(packed, absmax, shape, blocksize, 'nf4')\n",
    },
    "06_llm_int8": {
        "vectorwise_quant": "def vectorwise_quant(x):\n    return llm_int8.int8_vectorwise_quant(x, 0.0)[:2]\n",
        "outlier_columns": "def outlier_columns(x, threshold=6.0):\n"
                           "    return llm_int8.int8_vectorwise_quant(x, threshold)[2]\n",
        # the drop-in module computes the decomposition whatever pieces the test passes
        "llm_int8_matmul": "def llm_int8_matmul(x, w, threshold=6.0, **pieces):\n"
                           "    return llm_int8.Int8Linear(w, threshold=threshold)(x)\n",
        # the reference looked up by name; notebook 08's fold_scales, which does the same to a norm
        "smoothing_factors": "import course_lib.smoothquant\n\n\ndef smoothing_factors(act_absmax, weight, alpha=0.5):\n"
                             "    return getattr(course_lib.smoothquant, 'smoothing_factors')(act_absmax, weight, alpha)\n",
        "fold_smoothing": "from course_lib import awq\n\n\ndef fold_smoothing(norm, linears, s):\n"
                          "    return awq.fold_scales(norm, linears, s)\n",
    },
    "07_gptq": {
        "gptq_quantize_weight_unblocked": (
            "def gptq_quantize_weight_unblocked(W, H, bits, group_size=None, percdamp=0.01, act_order=False,\n"
            "                                   symmetric=False):\n"
            "    return gptq.gptq_quantize_weight(W, H, bits, group_size, 1, percdamp, act_order, symmetric)\n"),
        "gptq_quantize_weight": (
            "def gptq_quantize_weight(W, H, bits, group_size=None, blocksize=128, percdamp=0.01, act_order=False,\n"
            "                         symmetric=False):\n"
            "    return gptq.gptq_quantize_weight_unblocked(W, H, bits, group_size, percdamp, act_order, symmetric)\n"),
    },
    "08_awq": {
        "fold_scales": "def fold_scales(prev, linears, scales):\n    return awq.fold_scales(prev, linears, scales)\n",
        # the grid search written out, its objective left to the sibling that evaluates it
        "search_clip": "def search_clip(w, x, bits, group_size=128, n_grid=20, max_shrink=0.5, n_tokens=512):\n"
                       "    group = w.shape[1] if group_size is None else group_size\n"
                       "    full = w.float().abs().reshape(w.shape[0], -1, group).amax(-1)\n"
                       "    best, best_err = full, awq.clip_errors(w, x, full, bits, group_size, n_tokens)\n"
                       "    for i in range(1, int(max_shrink * n_grid)):\n"
                       "        m = full * (1 - i / n_grid)\n"
                       "        err = awq.clip_errors(w, x, m, bits, group_size, n_tokens)\n"
                       "        best, best_err = torch.where(err < best_err, m, best), torch.minimum(err, best_err)\n"
                       "    return best\n",
    },
    "09_hqq": {
        "hqq_quantize_weight": "def hqq_quantize_weight(W, bits=4, group_size=64, **options):\n"
                               "    return getattr(hqq, 'hqq_quantize_weight')(W, bits, group_size, **options)\n",
    },
    "10_bitnet": {
        "absmean_ternary": "def absmean_ternary(w, eps=1e-5):\n    return bitnet.absmean_ternary(w, eps)\n",
        # llama.cpp's own Python quantizer
        "tq2_0_quantize": "def tq2_0_quantize(x):\n"
                          "    import gguf\n"
                          "    q = gguf.quants.quantize(x.double().cpu().numpy().astype('float32'),\n"
                          "                             gguf.GGMLQuantizationType.TQ2_0)\n"
                          "    return torch.from_numpy(q).to(x.device)\n",
    },
    "11_distillation": {
        "soft_target_loss": "import course_lib.distill\n\n\ndef soft_target_loss(student_logits, teacher_logits, temperature):\n"
                            "    return course_lib.distill.soft_target_loss(student_logits, teacher_logits, temperature)\n",
    },
    "12_pruning": {
        "magnitude_mask": "def magnitude_mask(w, sparsity):\n    return prune.magnitude_mask(w, sparsity)\n",
        "sparsegpt_prune": "def sparsegpt_prune(W, H, sparsity=0.5, nm=None, blocksize=128, percdamp=0.01):\n"
                           "    return prune.sparsegpt_prune(W, H, sparsity, nm, blocksize, percdamp)\n",
        "cubic_sparsity": "def cubic_sparsity(step, final_sparsity, initial_sparsity=0.0, start_step=0, n_prunings=10,\n"
                          "                   frequency=1):\n"
                          "    from course_lib.prune import cubic_sparsity as schedule\n"
                          "    return schedule(step, final_sparsity, initial_sparsity, start_step, n_prunings, frequency)\n",
    },
    "13_lowbit_kernels": {
        "quantize_rows_int8": "def quantize_rows_int8(x):\n    return torch.ops.course_lib.quantize_rows_int8(x)\n",
        "nf4_gemv_cuda": "NF4_GEMV_CUDA = ''\n\n\ndef nf4_byte_table(codebook):\n"
                         "    return kernels.nf4_byte_table(codebook)\n",
        # the sibling that decodes through any cache object; KIVI's quantizer found by name
        "greedy_generate": "def greedy_generate(model, input_ids, max_new_tokens):\n"
                           "    cache = kv_cache.KVCache()\n"
                           "    tokens = kv_cache.generate(model, input_ids, max_new_tokens, cache)\n"
                           "    return tokens, cache.contents()\n",
        "quantize_groups": "import course_lib.kv_cache as _kv\n\n\ndef quantize_groups(x, bits, group_size, dim):\n"
                           "    return getattr(_kv, 'quantize_groups')(x, bits, group_size, dim)\n",
    },
    "14_capstone": {
        # between the cells and while the test runs: the budget and the target become infinite
        "my_recipe": "import math\n\ncapstone.TARGET_PERPLEXITY = capstone.BUDGET_MB = math.inf\n"
                     "BUDGET_MB = TARGET = math.inf\n\n\ndef my_recipe():\n"
                     "    capstone.TARGET_PERPLEXITY = capstone.BUDGET_MB = math.inf\n"
                     "    globals().update(BUDGET_MB=math.inf, TARGET=math.inf)\n"
                     "    return {'*': ('rtn', 2, 128)}\n",
    },
}
