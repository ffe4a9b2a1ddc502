"""Bad input, table-driven: every public function of the quantization modules rejects it with a named error.

Each row is ``(function, kind, overrides, expected exception, message regex)``: the function is called with
its good arguments (``GOOD``, checked to work by ``test_good_arguments_work``) where ``overrides`` replace
some of them; the error must be of the expected type and its message must match the regex, which by default
is the name of the (first) overridden argument: the message names what to fix.

``test_every_public_function_has_a_row`` enumerates each module's ``__all__`` and fails when a function has
neither a row nor an entry, with its reason, in ``EXEMPT``.
"""

from __future__ import annotations

import importlib
import inspect
import os
import re
import tempfile

import pytest
import torch

from course_lib import (affine, awq, bitnet, distill, evaluate, formats, gptq, granularity, hqq, kernels, llm_int8,
                        gguf_formats, kv_cache, nf4, observers, prune, qat, smoothquant, topics)

#: Topic modules (course_lib/topics.py) that this table does not cover yet, with the reason. The table began
#: with the quantizers; these hold measurements, recipes and model plumbing, and their own test files check
#: some of their bad input. Give their functions rows (or EXEMPT entries) here, then remove them from this set.
NOT_YET_COVERED = {
    "basics": "notebook 00's measurements (relative_error, sqnr_db, count_parameters): tests/library/test_basics.py",
    "lm_quant": "whole-model plumbing shared by 07-12: tests/library/test_lm_quant.py",
    "capstone": "recipes over whole models: tests/library/test_capstone.py",
}

MODULES = tuple(importlib.import_module(f"course_lib.{m}") for m in topics.modules() if m not in NOT_YET_COVERED)

def _name(fn) -> str:
    module = fn.__module__
    if module.startswith("course_lib.kernels."):  # a package: build.py and ops.py are re-exported by kernels
        module = "course_lib.kernels"
    return f"{module.rsplit('.', 1)[-1]}.{fn.__name__}"


NAN = float("nan")
INF = float("inf")


def _w(*shape, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g).to(dtype)


def _nan(*shape):
    x = _w(*shape)
    x.view(-1)[0] = NAN
    return x


def _inf(*shape):
    x = _w(*shape)
    x.view(-1)[-1] = INF
    return x


def _t(v, dtype=torch.float32):
    return torch.tensor(v, dtype=dtype)


W = _w(8, 16)                     # a weight: 8 output rows, 16 input columns
X = _w(4, 16, seed=1)             # activations: 4 tokens, 16 features
S0, Z0 = _t(0.05), _t(0, torch.int32)
Q8 = torch.randint(-127, 128, (4, 16), dtype=torch.int8, generator=torch.Generator().manual_seed(2))
CODES4 = torch.randint(0, 16, (32,), dtype=torch.uint8, generator=torch.Generator().manual_seed(3))
PACKED_NF4, ABSMAX_NF4 = nf4.quantize_4bit(W, 64)
TERN = torch.randint(-1, 2, (8, 16), generator=torch.Generator().manual_seed(4)).to(torch.int8)
PACKED_TERN = bitnet.pack_ternary(TERN)
TQ2_BYTES = bitnet.tq2_0_quantize(_w(2, 256))
H = gptq.hessian_from_inputs(X)
G_SCALE, G_ZERO = granularity.weight_scale_zero_point(W, 4, 8)
G_Q = granularity.quantize_weight(W, G_SCALE, G_ZERO, 4, 8)
HQ_W = hqq.group_weight(W, 8)
HQ_INV, HQ_Z = hqq.init_scale_zero(HQ_W, 4)
HQ_Q = hqq.quantize_codes(HQ_W, HQ_INV, HQ_Z, 4)
LOGITS_S, LOGITS_T = _w(4, 10, seed=5), _w(4, 10, seed=6)
LABELS = torch.tensor([0, 1, 2, 3])
ACT = _w(16, seed=7).abs() + 0.1
INT4_PACKED, INT4_SCALE, INT4_ZERO = kernels.pack_int4(W, 8)
ROWQ, ROWABS = kernels.quantize_rows_int8(X, backend="torch")
QABS, ABS2, ABS_OFFSET = nf4.double_quantize_absmax(_w(512).abs(), 256)
G_IDX = torch.arange(16) // 8
NONCONTIG = _w(16, 8).t()         # an [8, 16] view whose rows are not contiguous
MLP = torch.nn.Sequential(torch.nn.Linear(16, 8), torch.nn.ReLU(), torch.nn.Linear(8, 4))
MX_ELEMENTS, MX_EXP = formats.mx_quantize(X, "fp4_e2m1", 8)
NV_ELEMENTS, NV_SCALES, NV_TENSOR_SCALE = formats.nvfp4_quantize(X)
KV = _w(1, 2, 8, 16, seed=8)      # a KV cache tensor: batch 1, 2 heads, 8 tokens, 16 channels
KV_CODES, KV_SCALE, KV_MIN = kv_cache.quantize_groups(KV, 4, 4, -2)
_GGUF_DIR = tempfile.TemporaryDirectory()  # the GGUF files of gguf_formats' rows, removed with this module
GGUF_FILE, GGUF_OUT = (os.path.join(_GGUF_DIR.name, f) for f in ("mlp.gguf", "out.gguf"))
gguf_formats.export_gguf(MLP, GGUF_FILE, {})

# Good arguments of each function (keyword names = the parameters' names).
GOOD = {
    formats.get_format: dict(fmt="fp16"),
    formats.round_to_format: dict(x=X, fmt="fp8_e4m3"),
    formats.decompose: dict(x=X, fmt="fp16"),
    formats.compose: dict(sign=_t([0], torch.int64), exponent=_t([15], torch.int64), mantissa=_t([0], torch.int64),
                           fmt="fp16"),
    formats.encode: dict(x=X, fmt="fp16"),
    formats.decode: dict(bits=_t([0x3C00], torch.int64), fmt="fp16"),
    formats.ulp: dict(x=X, fmt="fp16"),
    formats.format_range: dict(fmt="fp16"),
    formats.representable_values: dict(fmt="fp8_e4m3"),
    formats.probe_values: dict(fmt="fp16", n=100),
    formats.bit_string: dict(value=1.0, fmt="fp16"),
    formats.int_range: dict(bits=8),
    formats.model_memory_bytes: dict(num_params=100, bits_per_param=8),
    formats.memory_table: dict(num_params=100),
    formats.max_tokens_per_second: dict(model_bytes=1e9, bandwidth_bytes_per_s=1e11),
    formats.torch_round: dict(x=X, fmt="fp16"),
    formats.torch_encode: dict(x=X, fmt="fp16"),
    formats.torch_overflow_mode: dict(fmt="fp8_e4m3"),
    formats.cast_agreement: dict(x=X, fmt="fp16"),
    formats.mx_quantize: dict(x=X, element_format="fp4_e2m1", block_size=8),
    formats.mx_dequantize: dict(elements=MX_ELEMENTS, shared_exp=MX_EXP, block_size=8),
    formats.mxfp4_quantize: dict(x=X, block_size=8),
    formats.nvfp4_quantize: dict(x=X),
    formats.nvfp4_dequantize: dict(elements=NV_ELEMENTS, block_scales=NV_SCALES, tensor_scale=NV_TENSOR_SCALE),
    formats.block_fake_quantize: dict(x=X, fmt="nvfp4"),
    formats.block_format_bits: dict(fmt="mxfp4", numel=1000),
    affine.qrange: dict(bits=8, signed=True),
    affine.compute_scale_zero_point: dict(x_min=_t(-1.0), x_max=_t(1.0), qmin=-128, qmax=127),
    affine.quantize: dict(x=X, scale=S0, zero_point=Z0, qmin=-128, qmax=127),
    affine.dequantize: dict(q=Q8, scale=S0, zero_point=Z0),
    affine.fake_quantize: dict(x=X, scale=S0, zero_point=Z0, qmin=-128, qmax=127),
    affine.representable_range: dict(scale=S0, zero_point=Z0, qmin=-128, qmax=127),
    affine.int32_matmul: dict(a=Q8.to(torch.int32), b=Q8.t().to(torch.int32)),
    affine.int32_max_inner_dim: dict(max_abs_a=127, max_abs_b=127),
    affine.quantized_matmul: dict(qa=Q8.to(torch.int32), sa=S0, za=Z0, qb=Q8.t().to(torch.int32), sb=S0, zb=Z0),
    affine.quantize_multiplier: dict(multiplier=0.0123),
    affine.requantize: dict(acc=Q8.to(torch.int32) @ Q8.t().to(torch.int32), m0=2**30, n=8, zero_point=Z0, qmin=-128,
                            qmax=127),
    affine.quantize_bias: dict(bias=_w(8), scale_x=S0, scale_w=_t(0.01)),
    affine.integer_linear: dict(qx=Q8, zx=Z0, qw=Q8, zw=Z0, qbias=torch.arange(4, dtype=torch.int32), m0=2**30, n=8,
                                zy=Z0, qmin=-128, qmax=127),
    granularity.weight_scale_zero_point: dict(w=W, bits=4, group_size=8),
    granularity.quantize_weight: dict(w=W, scale=G_SCALE, zero=G_ZERO, bits=4, group_size=8),
    granularity.dequantize_weight: dict(q=G_Q, scale=G_SCALE, zero=G_ZERO, group_size=8),
    granularity.fake_quantize_weight: dict(w=W, bits=4, group_size=8),
    granularity.scale_zero_point: dict(x=W, bits=4, dim=1),
    granularity.quantize_dequantize: dict(x=W, scale=_w(8, 1).abs() + 0.01, zero=torch.zeros(8, 1, dtype=torch.int32),
                                     bits=4),
    granularity.fake_quantize_per_group: dict(x=W, bits=4, group_size=8),
    granularity.quantized_linear: dict(x=X, w=W, bits=8),
    granularity.fake_quantize: dict(x=W, bits=4, granularity="group", group_size=8),
    granularity.effective_bits: dict(shape=(8, 16), bits=4, granularity="group", group_size=8),
    granularity.linear_weights: dict(model=MLP),
    granularity.quantized_linears: dict(model=MLP, bits=8),
    granularity.replace_linears: dict(model=MLP, factory=lambda linear: linear, skip=("0",)),  # MLP stays as it is
    gguf_formats.block_layout: dict(fmt="Q4_K"),
    gguf_formats.bits_per_weight: dict(fmt="Q8_0"),
    gguf_formats.mixture_bits_per_weight: dict(weights_per_format={"Q4_K": 3, "Q6_K": 1}),
    gguf_formats.q8_0_quantize: dict(x=_w(4, 64)),
    gguf_formats.q8_0_dequantize: dict(blocks=gguf_formats.q8_0_quantize(_w(4, 64))),
    gguf_formats.q4_0_quantize: dict(x=_w(4, 64)),
    gguf_formats.q4_0_dequantize: dict(blocks=gguf_formats.q4_0_quantize(_w(4, 64))),
    gguf_formats.q4_k_quantize: dict(x=_w(2, 256)),
    gguf_formats.q4_k_dequantize: dict(blocks=gguf_formats.q4_k_quantize(_w(2, 256))),
    gguf_formats.q6_k_quantize: dict(x=_w(2, 256)),
    gguf_formats.q6_k_dequantize: dict(blocks=gguf_formats.q6_k_quantize(_w(2, 256))),
    gguf_formats.quantize_blocks: dict(x=_w(2, 256), fmt="Q4_K"),
    gguf_formats.dequantize_blocks: dict(blocks=gguf_formats.q8_0_quantize(_w(4, 64)), fmt="Q8_0"),
    gguf_formats.export_gguf: dict(model=MLP, path=GGUF_OUT, tensor_types={"0.weight": "F16"}),
    gguf_formats.read_gguf: dict(path=GGUF_FILE),
    observers.percentile_range: dict(x=X, percentile=99.0),
    observers.mse_range: dict(x=X, bits=8, num_candidates=10),
    observers.entropy_range: dict(x=X, bits=8, num_bins=256),
    observers.kl_divergence: dict(p=_t([0.5, 0.5]), q=_t([0.25, 0.75])),
    observers.candidate_distributions: dict(hist=_t([3.0, 0.0, 2.0, 5.0, 1.0, 4.0]), i=4, num_levels=2),
    observers.make_observer: dict(name="min-max", bits=8),
    qat.fake_quantize_ste: dict(x=X, scale=S0, zero_point=Z0, qmin=-128, qmax=127),
    qat.lsq_fake_quantize: dict(x=X, step=S0, qmin=-128, qmax=127),
    nf4.nf4_codebook: dict(),
    nf4.fp4_codebook: dict(),
    nf4.codebook: dict(quant_type="nf4"),
    nf4.dynamic_map: dict(),
    nf4.nearest_code: dict(x=X.clamp(-1, 1), codebook=nf4.nf4_codebook()),
    nf4.pack_4bit: dict(codes=CODES4),
    nf4.unpack_4bit: dict(packed=nf4.pack_4bit(CODES4), n=32),
    nf4.blockwise_absmax: dict(w=W, blocksize=64),
    nf4.quantize_4bit: dict(w=W, blocksize=64),
    nf4.dequantize_4bit: dict(packed=PACKED_NF4, absmax=ABSMAX_NF4, shape=(8, 16), blocksize=64),
    nf4.quantize_nf4: dict(w=W, blocksize=64),
    nf4.dequantize_nf4: dict(packed=PACKED_NF4, absmax=ABSMAX_NF4, shape=(8, 16), blocksize=64),
    nf4.quantize_fp4: dict(w=W, blocksize=64),
    nf4.dequantize_fp4: dict(packed=PACKED_NF4, absmax=ABSMAX_NF4, shape=(8, 16), blocksize=64),
    nf4.double_quantize_absmax: dict(absmax=_w(512).abs(), blocksize=256),
    nf4.dequantize_absmax: dict(qabsmax=QABS, absmax2=ABS2, offset=ABS_OFFSET, blocksize=256),
    nf4.bits_per_parameter: dict(blocksize=64),
    nf4.fake_quantize_4bit: dict(w=W, scheme="nf4", blocksize=64),
    nf4.count_parameters: dict(model=MLP),
    llm_int8.vectorwise_quant: dict(x=X),
    llm_int8.vectorwise_dequant: dict(codes=Q8, row_stats=_w(4).abs() + 0.1),
    llm_int8.int8_matmul_dequant: dict(codes_x=Q8, row_stats=_w(4).abs() + 0.1, codes_w=Q8[:2].clone(),
                                       col_stats=_w(2).abs() + 0.1),
    llm_int8.outlier_columns: dict(x=X, threshold=1.0),
    llm_int8.int8_vectorwise_quant: dict(x=X, threshold=1.0),
    llm_int8.llm_int8_matmul: dict(x=X, w=W, threshold=1.0),
    llm_int8.absmax_int8_matmul: dict(x=X, w=W),
    smoothquant.smoothing_factors: dict(act_absmax=ACT, weight=W, alpha=0.5),
    gptq.accumulate_hessian: dict(H=torch.zeros(16, 16), n_seen=0, x=X),
    gptq.hessian_from_inputs: dict(x=X),
    gptq.hessian_inverse_cholesky: dict(H=H),
    gptq.gptq_quantize_weight_unblocked: dict(W=W, H=H, bits=4, group_size=8),
    gptq.gptq_quantize_weight: dict(W=W, H=H, bits=4, group_size=8, blocksize=8),
    gptq.gptq_scale_zero_point: dict(w=W, bits=3, symmetric=True),
    gptq.layer_output_error: dict(W=W, Q=W.clone(), x=X),
    gptq.dequantize_gptq: dict(codes=G_Q, scale=G_SCALE, zero=G_ZERO, g_idx=G_IDX),
    awq.activation_scales: dict(x=X),
    awq.awq_scales: dict(act_scale=ACT, ratio=0.5),
    awq.scaled_fake_quantize: dict(w=W, scales=ACT, bits=4, group_size=8),
    awq.search_clip: dict(w=W, x=X, bits=4, group_size=8, n_grid=4),
    awq.clip_errors: dict(w=W, x=X, max_val=torch.ones(8, 2), bits=4, group_size=8),
    awq.apply_clip: dict(w=W, max_val=torch.ones(8, 2), group_size=8),
    awq.salient_channels: dict(act_scale=ACT, fraction=0.1),
    hqq.shrink_lp: dict(x=X, beta=10.0),
    hqq.group_weight: dict(W=W, group_size=8),
    hqq.init_scale_zero: dict(W=HQ_W, bits=4),
    hqq.quantize_codes: dict(W=HQ_W, inv_scale=HQ_INV, zero=HQ_Z, bits=4),
    hqq.dequantize_codes: dict(q=HQ_Q, inv_scale=HQ_INV, zero=HQ_Z),
    hqq.optimize_zero_point: dict(W=HQ_W, inv_scale=HQ_INV, zero=HQ_Z, bits=4, iters=2),
    hqq.hqq_quantize: dict(W=W, bits=4, group_size=8, iters=2),
    hqq.hqq_quantize_weight: dict(W=W, bits=4, group_size=8, iters=2),
    hqq.package_quantize_weight: dict(W=W, bits=4, group_size=8),
    bitnet.absmean_ternary: dict(w=W),
    bitnet.absmax_int8: dict(x=X),
    bitnet.fake_quant_weight: dict(w=W),
    bitnet.fake_quant_activation: dict(x=X),
    bitnet.ste: dict(x=X, x_quant=X.round()),
    bitnet.rms_norm: dict(x=X, weight=torch.ones(16)),
    bitnet.bitlinear_forward: dict(x=X, weight=W),
    bitnet.pack_ternary: dict(w_ternary=TERN),
    bitnet.unpack_ternary: dict(packed=PACKED_TERN, in_features=16),
    bitnet.ternary_matmul: dict(x=X, packed=PACKED_TERN, scale=0.5),
    bitnet.tq2_0_quantize: dict(x=_w(2, 256)),
    bitnet.tq2_0_dequantize: dict(blocks=TQ2_BYTES),
    prune.check_sparsity: dict(sparsity=0.5),
    prune.sparsity_of: dict(x=W),
    prune.magnitude_mask: dict(w=W, sparsity=0.5),
    prune.global_magnitude_masks: dict(weights=[W, X], sparsity=0.5),
    prune.nm_mask: dict(w=W, n=2, m=4),
    prune.wanda_scores: dict(w=W, act_norm=ACT),
    prune.wanda_mask: dict(w=W, act_norm=ACT, sparsity=0.5),
    prune.sparsegpt_prune: dict(W=W, H=H, sparsity=0.5, blocksize=8),
    prune.channel_scores: dict(fc1=MLP[0], fc2=MLP[2]),
    prune.sparse_bits_per_weight: dict(sparsity=0.5, value_bits=16),
    prune.cubic_sparsity: dict(step=3, final_sparsity=0.8, initial_sparsity=0.1, start_step=1, n_prunings=4, frequency=2),
    prune.gradual_targets: dict(final=0.5, stages=4),
    distill.soft_target_loss: dict(student_logits=LOGITS_S, teacher_logits=LOGITS_T, temperature=2.0),
    distill.distillation_loss: dict(student_logits=LOGITS_S, teacher_logits=LOGITS_T, labels=LABELS,
                                    temperature=2.0, alpha=0.5),
    distill.feature_distillation_loss: dict(student_hidden=X, teacher_hidden=X + 0.1),
    distill.soft_targets: dict(logits=LOGITS_T, temperature=2.0),
    distill.soft_target_grad_norm: dict(student_logits=LOGITS_S, teacher_logits=LOGITS_T, temperature=2.0),
    distill.mean_std: dict(values=[1.0, 2.0]),
    distill.make_mlp: dict(widths=(8,)),
    kernels.quantize_rows_int8: dict(x=X, backend="torch"),
    kernels.dequantize_rows_int8: dict(q=ROWQ, absmax=ROWABS),
    kernels.dequantize_nf4: dict(packed=PACKED_NF4, absmax=ABSMAX_NF4, shape=(8, 16), blocksize=64, backend="torch"),
    kernels.pack_int4: dict(w=W, group_size=8),
    kernels.dequantize_int4: dict(packed=INT4_PACKED, scale=INT4_SCALE, zero=INT4_ZERO, group_size=8,
                                  backend="torch"),
    kernels.gemv_nf4: dict(x=X[:1], packed=PACKED_NF4, absmax=ABSMAX_NF4, out_features=8, blocksize=64,
                           backend="torch"),
    kernels.gemv_int4: dict(x=X[:1], packed=INT4_PACKED, scale=INT4_SCALE, zero=INT4_ZERO, group_size=8,
                            backend="torch"),
    kernels.gemv_ternary: dict(x=X[:1], packed=PACKED_TERN, scale=0.5, backend="torch"),
    kernels.gemv_bytes: dict(n=8, k=16),
    kernels.nf4_byte_table: dict(codebook=torch.linspace(-1, 1, 16)),
    kv_cache.quantize_groups: dict(x=KV, bits=4, group_size=4, dim=-2),
    kv_cache.dequantize_groups: dict(codes=KV_CODES, scale=KV_SCALE, minimum=KV_MIN, group_size=4, dim=-2),
}

# (function, kind, overrides, exception, regex or None = the first overridden argument's name)
ROWS = [
    # formats
    (formats.get_format, "value", dict(fmt="fp7"), ValueError, "fmt"),
    (formats.get_format, "type", dict(fmt=3.5), TypeError, "fmt"),
    (formats.round_to_format, "type", dict(x=[1.0]), TypeError, None),
    (formats.round_to_format, "dtype", dict(x=torch.ones(2, dtype=torch.int32)), TypeError, None),
    (formats.round_to_format, "nan", dict(x=_nan(3), fmt="fp4_e2m1"), ValueError, None),
    (formats.round_to_format, "empty", dict(x=torch.zeros(0)), ValueError, None),
    (formats.decompose, "dtype", dict(x=torch.ones(2, dtype=torch.int64)), TypeError, None),
    (formats.compose, "range", dict(sign=_t([2], torch.int64)), ValueError, None),
    (formats.compose, "range", dict(mantissa=_t([2048], torch.int64)), ValueError, None),
    (formats.compose, "range", dict(exponent=_t([-1], torch.int64)), ValueError, None),
    (formats.compose, "dtype", dict(sign=_t([0.0])), TypeError, None),
    (formats.encode, "type", dict(x=(1.0,)), TypeError, None),
    (formats.encode, "value", dict(fmt="nope"), ValueError, "fmt"),
    (formats.decode, "dtype", dict(bits=_t([1.0])), TypeError, None),
    (formats.ulp, "type", dict(x=1.0), TypeError, None),
    (formats.format_range, "value", dict(fmt="bf17"), ValueError, None),
    (formats.representable_values, "value", dict(fmt="nope"), ValueError, "fmt"),
    (formats.probe_values, "range", dict(n=-1), ValueError, None),
    (formats.probe_values, "type", dict(n=2.5), TypeError, None),
    (formats.bit_string, "type", dict(value="1"), TypeError, None),
    (formats.int_range, "range", dict(bits=0), ValueError, None),
    (formats.int_range, "type", dict(bits=8.0), TypeError, None),
    (formats.model_memory_bytes, "range", dict(num_params=-5), ValueError, None),
    (formats.model_memory_bytes, "range", dict(bits_per_param=0), ValueError, None),
    (formats.memory_table, "range", dict(num_params=-1), ValueError, None),
    (formats.max_tokens_per_second, "range", dict(bandwidth_bytes_per_s=0), ValueError, None),
    (formats.max_tokens_per_second, "range", dict(model_bytes=-1), ValueError, None),
    (formats.torch_round, "type", dict(x=[1.0]), TypeError, None),
    (formats.torch_encode, "dtype", dict(x=torch.ones(2, dtype=torch.int8)), TypeError, None),
    (formats.torch_overflow_mode, "value", dict(fmt="nope"), ValueError, "fmt"),
    (formats.cast_agreement, "empty", dict(x=torch.zeros(0)), ValueError, None),
    (formats.mx_quantize, "dtype", dict(x=Q8), TypeError, None),
    (formats.mx_quantize, "nan", dict(x=_nan(4, 16)), ValueError, None),
    (formats.mx_quantize, "inf", dict(x=_inf(4, 16)), ValueError, None),
    (formats.mx_quantize, "ndim", dict(x=_t(1.0)), ValueError, None),
    (formats.mx_quantize, "group", dict(block_size=0), ValueError, None),
    (formats.mx_quantize, "value", dict(element_format="fp16"), ValueError, None),
    (formats.mx_quantize, "range", dict(x=_t([2.0**200], torch.float64)), ValueError, None),
    (formats.mx_dequantize, "dtype", dict(shared_exp=MX_EXP.float()), TypeError, None),
    (formats.mx_dequantize, "shape", dict(shared_exp=MX_EXP[:, :1]), ValueError, None),
    (formats.mx_dequantize, "range", dict(shared_exp=MX_EXP - 200), ValueError, None),
    (formats.mx_dequantize, "group", dict(block_size=5), ValueError, "shared_exp"),
    (formats.mxfp4_quantize, "type", dict(x=[1.0, 2.0]), TypeError, None),
    (formats.mxfp4_quantize, "empty", dict(x=torch.zeros(4, 0)), ValueError, None),
    (formats.mxfp4_quantize, "group", dict(block_size=-1), ValueError, None),
    (formats.nvfp4_quantize, "nan", dict(x=_nan(4, 16)), ValueError, None),
    (formats.nvfp4_quantize, "dtype", dict(x=Q8), TypeError, None),
    (formats.nvfp4_dequantize, "shape", dict(block_scales=NV_SCALES[:2]), ValueError, None),
    (formats.nvfp4_dequantize, "range", dict(block_scales=-NV_SCALES), ValueError, None),
    (formats.nvfp4_dequantize, "range", dict(tensor_scale=_t(0.0)), ValueError, None),
    (formats.nvfp4_dequantize, "shape", dict(tensor_scale=_t([1.0, 2.0])), ValueError, None),
    (formats.nvfp4_dequantize, "inf", dict(tensor_scale=_t(INF)), ValueError, None),
    (formats.block_fake_quantize, "value", dict(fmt="mxfp5"), ValueError, None),
    (formats.block_fake_quantize, "type", dict(fmt=4), TypeError, None),
    (formats.block_fake_quantize, "nan", dict(x=_nan(4, 16)), ValueError, None),
    (formats.block_format_bits, "range", dict(numel=0), ValueError, None),
    (formats.block_format_bits, "value", dict(fmt="int4"), ValueError, None),
    # affine
    (affine.qrange, "range", dict(bits=1), ValueError, None),
    (affine.qrange, "range", dict(bits=17), ValueError, None),
    (affine.qrange, "type", dict(bits="8"), TypeError, None),
    (affine.compute_scale_zero_point, "range", dict(x_min=_t(1.0), x_max=_t(-1.0)), ValueError, "x_max"),
    (affine.compute_scale_zero_point, "nan", dict(x_min=_t(NAN)), ValueError, None),
    (affine.compute_scale_zero_point, "inf", dict(x_max=_t(INF)), ValueError, None),
    (affine.compute_scale_zero_point, "range", dict(qmin=5, qmax=5), ValueError, "qmin"),
    (affine.quantize, "dtype", dict(x=_t([1, 2], torch.int64)), TypeError, None),
    (affine.quantize, "nan", dict(x=_nan(4)), ValueError, None),
    (affine.quantize, "inf", dict(x=_inf(4)), ValueError, None),
    (affine.quantize, "empty", dict(x=torch.zeros(0)), ValueError, None),
    (affine.quantize, "range", dict(scale=_t(0.0)), ValueError, None),
    (affine.quantize, "range", dict(scale=_t(-0.5)), ValueError, None),
    (affine.quantize, "type", dict(x=[1.0]), TypeError, None),
    (affine.dequantize, "dtype", dict(q=_t([1.0, 2.0])), TypeError, None),
    (affine.dequantize, "range", dict(scale=_t(0.0)), ValueError, None),
    (affine.fake_quantize, "nan", dict(x=_nan(4)), ValueError, None),
    (affine.fake_quantize, "range", dict(qmin=10, qmax=3), ValueError, "qmin"),
    (affine.representable_range, "range", dict(scale=_t(-1.0)), ValueError, None),
    (affine.int32_matmul, "dtype", dict(a=_w(4, 16)), TypeError, None),
    (affine.int32_matmul, "shape", dict(b=Q8.to(torch.int32)), ValueError, "b|inner|shape"),
    (affine.int32_matmul, "ndim", dict(a=Q8.to(torch.int32)[0]), ValueError, None),
    (affine.int32_max_inner_dim, "range", dict(max_abs_a=0), ValueError, None),
    (affine.int32_max_inner_dim, "type", dict(max_abs_b=1.5), TypeError, None),
    (affine.quantized_matmul, "dtype", dict(qa=_w(4, 16)), TypeError, None),
    (affine.quantized_matmul, "range", dict(sb=_t(0.0)), ValueError, None),
    (affine.quantize_multiplier, "range", dict(multiplier=0.0), ValueError, None),
    (affine.quantize_multiplier, "nan", dict(multiplier=NAN), ValueError, None),
    (affine.quantize_multiplier, "inf", dict(multiplier=INF), ValueError, None),
    (affine.quantize_multiplier, "type", dict(multiplier="0.5"), TypeError, None),
    (affine.requantize, "dtype", dict(acc=_w(4, 4)), TypeError, None),
    (affine.requantize, "empty", dict(acc=torch.zeros(0, dtype=torch.int32)), ValueError, None),
    (affine.requantize, "range", dict(m0=2**31), ValueError, None),
    (affine.requantize, "range", dict(n=40), ValueError, r"\bn\b"),
    (affine.requantize, "type", dict(n=8.0), TypeError, r"\bn\b"),
    (affine.requantize, "range", dict(zero_point=_t(200, torch.int32)), ValueError, None),
    (affine.quantize_bias, "nan", dict(bias=_nan(8)), ValueError, None),
    (affine.quantize_bias, "dtype", dict(bias=_t([1, 2], torch.int64)), TypeError, None),
    (affine.quantize_bias, "range", dict(scale_w=_t(0.0)), ValueError, None),
    (affine.quantize_bias, "range", dict(bias=_t([1e7])), ValueError, "int32"),
    (affine.integer_linear, "dtype", dict(qx=_w(4, 16)), TypeError, None),
    (affine.integer_linear, "shape", dict(qw=Q8[:, :8]), ValueError, None),
    (affine.integer_linear, "ndim", dict(qx=Q8[0]), ValueError, None),
    (affine.integer_linear, "shape", dict(qbias=torch.zeros(3, dtype=torch.int32)), ValueError, None),
    (affine.integer_linear, "range", dict(m0=5), ValueError, None),
    # granularity
    (granularity.weight_scale_zero_point, "bits", dict(bits=1), ValueError, None),
    (granularity.weight_scale_zero_point, "group", dict(group_size=5), ValueError, None),
    (granularity.weight_scale_zero_point, "group", dict(group_size=0), ValueError, None),
    (granularity.weight_scale_zero_point, "ndim", dict(w=_w(16)), ValueError, None),
    (granularity.weight_scale_zero_point, "nan", dict(w=_nan(8, 16)), ValueError, None),
    (granularity.weight_scale_zero_point, "empty", dict(w=torch.zeros(0, 16)), ValueError, None),
    (granularity.quantize_weight, "shape", dict(scale=G_SCALE[:4]), ValueError, "scale"),
    (granularity.quantize_weight, "dtype", dict(w=W.to(torch.int32)), TypeError, None),
    (granularity.quantize_weight, "bits", dict(bits=17), ValueError, None),
    (granularity.dequantize_weight, "dtype", dict(q=W), TypeError, None),
    (granularity.dequantize_weight, "shape", dict(zero=G_ZERO[:, :1]), ValueError, "zero"),
    (granularity.fake_quantize_weight, "group", dict(group_size=3), ValueError, None),
    (granularity.fake_quantize_weight, "inf", dict(w=_inf(8, 16)), ValueError, None),
    (granularity.scale_zero_point, "bits", dict(bits=9), ValueError, None),
    (granularity.scale_zero_point, "range", dict(dim=2), ValueError, None),
    (granularity.scale_zero_point, "dtype", dict(x=torch.ones(3, 4, dtype=torch.int32)), TypeError, None),
    (granularity.scale_zero_point, "empty", dict(x=torch.zeros(0, 4)), ValueError, None),
    (granularity.quantize_dequantize, "nan", dict(x=_nan(8, 16)), ValueError, None),
    (granularity.quantize_dequantize, "range", dict(scale=torch.zeros(8, 1)), ValueError, None),
    (granularity.quantize_dequantize, "bits", dict(bits=0), ValueError, None),
    (granularity.fake_quantize_per_group, "group", dict(group_size=24), ValueError, None),
    (granularity.fake_quantize_per_group, "group", dict(group_size=-16), ValueError, None),
    (granularity.fake_quantize_per_group, "bits", dict(bits=9), ValueError, None),
    (granularity.quantized_linear, "shape", dict(w=_w(12, 32)), ValueError, "w"),
    (granularity.quantized_linear, "bits", dict(bits=9), ValueError, None),
    (granularity.quantized_linear, "nan", dict(x=_nan(4, 16)), ValueError, None),
    (granularity.fake_quantize, "value", dict(granularity="row"), ValueError, None),
    (granularity.fake_quantize, "group", dict(group_size=7), ValueError, None),
    (granularity.effective_bits, "group", dict(group_size=100), ValueError, None),
    (granularity.effective_bits, "bits", dict(bits=0), ValueError, None),
    (granularity.effective_bits, "value", dict(granularity="per-channel"), ValueError, None),
    (granularity.linear_weights, "type", dict(model=[1, 2]), TypeError, None),
    (granularity.quantized_linears, "type", dict(model="mlp"), TypeError, None),
    (granularity.quantized_linears, "bits", dict(bits=1), ValueError, None),
    (granularity.replace_linears, "value", dict(skip=("1",)), ValueError, None),
    (granularity.replace_linears, "type", dict(factory=3), TypeError, None),
    (granularity.replace_linears, "type", dict(skip="0"), TypeError, None),
    # observers
    (gguf_formats.block_layout, "range", dict(fmt="Q4_K_M"), ValueError, "fmt"),
    (gguf_formats.bits_per_weight, "type", dict(fmt=4), TypeError, "fmt"),
    (gguf_formats.mixture_bits_per_weight, "range", dict(weights_per_format={"Q4_K": -1}), ValueError, None),
    (gguf_formats.mixture_bits_per_weight, "empty", dict(weights_per_format={}), ValueError, None),
    (gguf_formats.q8_0_quantize, "group", dict(x=_w(4, 48)), ValueError, "x.*multiple of the Q8_0 block size 32"),
    (gguf_formats.q8_0_quantize, "nan", dict(x=_nan(4, 64)), ValueError, None),
    (gguf_formats.q8_0_dequantize, "dtype", dict(blocks=_w(4, 68)), TypeError, None),
    (gguf_formats.q4_0_quantize, "dtype", dict(x=torch.ones(4, 64, dtype=torch.int32)), TypeError, None),
    (gguf_formats.q4_0_quantize, "inf", dict(x=_inf(4, 64)), ValueError, None),
    (gguf_formats.q4_0_dequantize, "shape", dict(blocks=torch.zeros(4, 20, dtype=torch.uint8)), ValueError, None),
    (gguf_formats.q4_k_quantize, "group", dict(x=_w(2, 128)), ValueError, "x.*multiple of the Q4_K block size 256"),
    (gguf_formats.q4_k_quantize, "empty", dict(x=torch.zeros(0, 256)), ValueError, None),
    (gguf_formats.q4_k_dequantize, "shape", dict(blocks=torch.zeros(2, 140, dtype=torch.uint8)), ValueError, None),
    (gguf_formats.q6_k_quantize, "ndim", dict(x=torch.tensor(1.0)), ValueError, None),
    (gguf_formats.q6_k_dequantize, "type", dict(blocks=[0] * 210), TypeError, None),
    (gguf_formats.quantize_blocks, "value", dict(fmt="Q5_K"), ValueError, None),
    (gguf_formats.quantize_blocks, "nan", dict(x=_nan(2, 256)), ValueError, None),
    (gguf_formats.dequantize_blocks, "type", dict(fmt=8), TypeError, None),
    (gguf_formats.dequantize_blocks, "shape", dict(blocks=torch.zeros(2, 35, dtype=torch.uint8)), ValueError, None),
    (gguf_formats.export_gguf, "group", dict(tensor_types={"0.weight": "Q8_0"}), ValueError, None),  # rows of 16
    (gguf_formats.export_gguf, "value", dict(tensor_types={"9.weight": "F16"}), ValueError, None),
    (gguf_formats.export_gguf, "type", dict(tensor_types=["0.weight"]), TypeError, None),
    (gguf_formats.export_gguf, "type", dict(path=3.5), TypeError, None),
    (gguf_formats.read_gguf, "type", dict(path=None), TypeError, None),
    (gguf_formats.read_gguf, "value", dict(path=__file__), ValueError, None),  # a file, not a GGUF file
    (observers.percentile_range, "range", dict(percentile=101.0), ValueError, None),
    (observers.percentile_range, "nan", dict(x=_nan(4, 16)), ValueError, None),
    (observers.percentile_range, "empty", dict(x=torch.zeros(0)), ValueError, None),
    (observers.mse_range, "bits", dict(bits=1), ValueError, None),
    (observers.mse_range, "range", dict(num_candidates=0), ValueError, None),
    (observers.mse_range, "dtype", dict(x=Q8), TypeError, None),
    (observers.entropy_range, "range", dict(num_bins=0), ValueError, None),
    (observers.entropy_range, "inf", dict(x=_inf(4, 16)), ValueError, None),
    (observers.kl_divergence, "shape", dict(q=_t([0.2, 0.3, 0.5])), ValueError, "q|shape"),
    (observers.kl_divergence, "type", dict(p=[0.5, 0.5]), TypeError, None),
    (observers.candidate_distributions, "value", dict(hist=_t([3.0, -1.0, 2.0, 5.0])), ValueError, None),
    (observers.candidate_distributions, "inf", dict(hist=_t([3.0, INF, 2.0, 5.0])), ValueError, None),
    (observers.candidate_distributions, "range", dict(i=7), ValueError, None),
    (observers.candidate_distributions, "range", dict(num_levels=0), ValueError, None),
    (observers.candidate_distributions, "type", dict(i=4.0), TypeError, None),
    (observers.make_observer, "value", dict(name="median"), ValueError, None),
    (observers.make_observer, "bits", dict(bits=40), ValueError, None),
    # qat
    (qat.fake_quantize_ste, "nan", dict(x=_nan(4)), ValueError, None),
    (qat.fake_quantize_ste, "range", dict(scale=_t(0.0)), ValueError, None),
    (qat.fake_quantize_ste, "dtype", dict(x=Q8), TypeError, None),
    (qat.lsq_fake_quantize, "range", dict(step=_t(0.0)), ValueError, None),
    (qat.lsq_fake_quantize, "nan", dict(step=_t(NAN)), ValueError, None),
    (qat.lsq_fake_quantize, "type", dict(step=0.05), TypeError, None),
    (qat.lsq_fake_quantize, "shape", dict(step=_t([0.05, 0.05, 0.05])), ValueError, None),
    (qat.lsq_fake_quantize, "dtype", dict(x=Q8), TypeError, None),
    (qat.lsq_fake_quantize, "range", dict(qmin=1), ValueError, None),
    (qat.lsq_fake_quantize, "range", dict(grad_scale=-1.0), ValueError, None),
    # nf4
    (nf4.nf4_codebook, "range", dict(offset=1.5), ValueError, None),
    (nf4.codebook, "value", dict(quant_type="int4"), ValueError, None),
    (nf4.fp4_codebook, "device", dict(device="tpu:9"), (ValueError, RuntimeError), "device|tpu"),
    (nf4.dynamic_map, "device", dict(device=42.5), (ValueError, TypeError, RuntimeError), "device"),
    (nf4.nearest_code, "dtype", dict(x=Q8), TypeError, None),
    (nf4.nearest_code, "ndim", dict(codebook=torch.ones(4, 4)), ValueError, None),
    (nf4.nearest_code, "nan", dict(x=_nan(4, 16)), ValueError, None),
    (nf4.pack_4bit, "range", dict(codes=_t([16, 0], torch.uint8)), ValueError, None),
    (nf4.pack_4bit, "dtype", dict(codes=_t([1.0, 2.0])), TypeError, None),
    (nf4.unpack_4bit, "range", dict(n=65), ValueError, None),
    (nf4.unpack_4bit, "dtype", dict(packed=_t([1.0])), TypeError, None),
    (nf4.blockwise_absmax, "group", dict(blocksize=0), ValueError, None),
    (nf4.blockwise_absmax, "nan", dict(w=_nan(8, 16)), ValueError, None),
    (nf4.quantize_4bit, "value", dict(quant_type="int4"), ValueError, None),
    (nf4.quantize_4bit, "inf", dict(w=_inf(8, 16)), ValueError, None),
    (nf4.quantize_4bit, "empty", dict(w=torch.zeros(0)), ValueError, None),
    (nf4.quantize_4bit, "dtype", dict(w=Q8), TypeError, None),
    (nf4.dequantize_4bit, "shape", dict(shape=(8, 32)), ValueError, "shape|packed"),
    (nf4.dequantize_4bit, "dtype", dict(packed=PACKED_NF4.float()), TypeError, None),
    (nf4.dequantize_4bit, "nan", dict(absmax=torch.full_like(ABSMAX_NF4, NAN)), ValueError, None),
    (nf4.quantize_nf4, "group", dict(blocksize=-64), ValueError, None),
    (nf4.dequantize_nf4, "shape", dict(absmax=ABSMAX_NF4.repeat(3)), ValueError, "absmax"),
    (nf4.quantize_fp4, "nan", dict(w=_nan(8, 16)), ValueError, None),
    (nf4.dequantize_fp4, "dtype", dict(absmax=ABSMAX_NF4.to(torch.int32)), TypeError, None),
    (nf4.double_quantize_absmax, "group", dict(blocksize=0), ValueError, None),
    (nf4.double_quantize_absmax, "nan", dict(absmax=_nan(512)), ValueError, None),
    (nf4.dequantize_absmax, "dtype", dict(qabsmax=QABS.float()), TypeError, None),
    (nf4.dequantize_absmax, "shape", dict(absmax2=ABS2.repeat(2)), ValueError, None),
    (nf4.dequantize_absmax, "nan", dict(offset=NAN), ValueError, "offset"),
    (nf4.bits_per_parameter, "group", dict(blocksize=0), ValueError, None),
    (nf4.fake_quantize_4bit, "value", dict(scheme="int3"), ValueError, None),
    (nf4.fake_quantize_4bit, "nan", dict(w=_nan(8, 16)), ValueError, None),
    (nf4.count_parameters, "type", dict(model=[1, 2, 3]), TypeError, None),
    # llm_int8
    (llm_int8.vectorwise_quant, "nan", dict(x=_nan(4, 16)), ValueError, None),
    (llm_int8.vectorwise_quant, "dtype", dict(x=Q8), TypeError, None),
    (llm_int8.vectorwise_quant, "empty", dict(x=torch.zeros(0, 16)), ValueError, None),
    (llm_int8.vectorwise_dequant, "dtype", dict(codes=_w(4, 16)), TypeError, None),
    (llm_int8.vectorwise_dequant, "shape", dict(row_stats=torch.ones(3)), ValueError, "row_stats"),
    (llm_int8.int8_matmul_dequant, "shape", dict(col_stats=torch.ones(5)), ValueError, "col_stats"),
    (llm_int8.int8_matmul_dequant, "dtype", dict(codes_w=_w(2, 16)), TypeError, None),
    (llm_int8.outlier_columns, "range", dict(threshold=-1.0), ValueError, None),
    (llm_int8.outlier_columns, "nan", dict(x=_nan(4, 16)), ValueError, None),
    (llm_int8.int8_vectorwise_quant, "range", dict(threshold=-1.0), ValueError, None),
    (llm_int8.int8_vectorwise_quant, "inf", dict(x=_inf(4, 16)), ValueError, None),
    (llm_int8.llm_int8_matmul, "shape", dict(w=_w(8, 15)), ValueError, "w"),
    (llm_int8.llm_int8_matmul, "nan", dict(x=_nan(4, 16)), ValueError, None),
    (llm_int8.absmax_int8_matmul, "value", dict(granularity="group"), ValueError, None),
    (llm_int8.absmax_int8_matmul, "shape", dict(w=_w(8, 15)), ValueError, "w"),
    # smoothquant
    (smoothquant.smoothing_factors, "range", dict(alpha=1.5), ValueError, None),
    (smoothquant.smoothing_factors, "type", dict(alpha="0.5"), TypeError, None),
    (smoothquant.smoothing_factors, "shape", dict(act_absmax=ACT[:15]), ValueError, None),
    (smoothquant.smoothing_factors, "range", dict(act_absmax=-ACT), ValueError, None),
    (smoothquant.smoothing_factors, "nan", dict(weight=_nan(8, 16)), ValueError, None),
    # gptq
    (gptq.accumulate_hessian, "shape", dict(H=torch.zeros(8, 8)), ValueError, "H"),
    (gptq.accumulate_hessian, "range", dict(n_seen=-1), ValueError, None),
    (gptq.accumulate_hessian, "nan", dict(x=_nan(4, 16)), ValueError, None),
    (gptq.hessian_from_inputs, "empty", dict(x=torch.zeros(0, 16)), ValueError, None),
    (gptq.hessian_from_inputs, "dtype", dict(x=Q8), TypeError, None),
    (gptq.hessian_inverse_cholesky, "shape", dict(H=torch.ones(4, 5)), ValueError, None),
    (gptq.hessian_inverse_cholesky, "range", dict(percdamp=-0.1), ValueError, None),
    (gptq.hessian_inverse_cholesky, "nan", dict(H=torch.full((4, 4), NAN)), ValueError, None),
    (gptq.gptq_quantize_weight_unblocked, "bits", dict(bits=1), ValueError, None),
    (gptq.gptq_quantize_weight_unblocked, "group", dict(group_size=5), ValueError, None),
    (gptq.gptq_quantize_weight_unblocked, "shape", dict(H=torch.eye(8)), ValueError, "H"),
    (gptq.gptq_quantize_weight, "group", dict(blocksize=0), ValueError, None),
    (gptq.gptq_scale_zero_point, "bits", dict(bits=1), ValueError, "bits"),
    (gptq.gptq_scale_zero_point, "ndim", dict(w=torch.ones(8)), ValueError, "w"),
    (gptq.gptq_scale_zero_point, "dtype", dict(w=Q8), TypeError, "w"),
    (gptq.gptq_quantize_weight, "nan", dict(W=_nan(8, 16)), ValueError, None),
    (gptq.gptq_quantize_weight, "bits", dict(bits=17), ValueError, None),
    (gptq.layer_output_error, "shape", dict(Q=_w(8, 15)), ValueError, "Q"),
    (gptq.layer_output_error, "shape", dict(x=_w(4, 15)), ValueError, "x"),
    (gptq.dequantize_gptq, "dtype", dict(codes=G_Q.float()), TypeError, None),
    (gptq.dequantize_gptq, "shape", dict(g_idx=G_IDX[:8]), ValueError, "g_idx"),
    (gptq.dequantize_gptq, "range", dict(g_idx=G_IDX + 5), ValueError, "g_idx"),
    # awq
    (awq.activation_scales, "nan", dict(x=_nan(4, 16)), ValueError, None),
    (awq.activation_scales, "empty", dict(x=torch.zeros(0, 16)), ValueError, None),
    (awq.awq_scales, "range", dict(ratio=1.5), ValueError, None),
    (awq.awq_scales, "ndim", dict(act_scale=torch.ones(2, 2)), ValueError, None),
    (awq.scaled_fake_quantize, "shape", dict(scales=torch.ones(15)), ValueError, "scales"),
    (awq.scaled_fake_quantize, "group", dict(group_size=5), ValueError, None),
    (awq.scaled_fake_quantize, "bits", dict(bits=1), ValueError, None),
    (awq.search_clip, "shape", dict(x=_w(4, 15)), ValueError, "x"),
    (awq.search_clip, "range", dict(n_grid=0), ValueError, None),
    (awq.clip_errors, "shape", dict(max_val=torch.ones(8, 3)), ValueError, "max_val"),
    (awq.clip_errors, "range", dict(max_val=-torch.ones(8, 2)), ValueError, "max_val"),
    (awq.apply_clip, "shape", dict(max_val=torch.ones(8, 3)), ValueError, "max_val"),
    (awq.apply_clip, "group", dict(group_size=6), ValueError, None),
    (awq.salient_channels, "range", dict(fraction=1.5), ValueError, None),
    (awq.salient_channels, "dtype", dict(act_scale=torch.ones(16, dtype=torch.int32)), TypeError, None),
    # hqq
    (hqq.shrink_lp, "range", dict(beta=0.0), ValueError, None),
    (hqq.shrink_lp, "nan", dict(x=_nan(4, 16)), ValueError, None),
    (hqq.group_weight, "group", dict(group_size=5), ValueError, None),
    (hqq.group_weight, "ndim", dict(W=_w(16)), ValueError, None),
    (hqq.init_scale_zero, "bits", dict(bits=0), ValueError, None),
    (hqq.init_scale_zero, "inf", dict(W=_inf(16, 8)), ValueError, None),
    (hqq.quantize_codes, "shape", dict(zero=torch.zeros(3, 1)), ValueError, "zero"),
    (hqq.quantize_codes, "bits", dict(bits=9), ValueError, None),
    (hqq.dequantize_codes, "type", dict(q=HQ_Q.tolist()), TypeError, None),
    (hqq.dequantize_codes, "shape", dict(inv_scale=torch.ones(3, 1)), ValueError, "inv_scale"),
    (hqq.optimize_zero_point, "range", dict(iters=-1), ValueError, None),
    (hqq.optimize_zero_point, "nan", dict(W=_nan(16, 8)), ValueError, None),
    (hqq.hqq_quantize, "group", dict(group_size=5), ValueError, None),
    (hqq.hqq_quantize, "bits", dict(bits=9), ValueError, None),
    (hqq.hqq_quantize_weight, "nan", dict(W=_nan(8, 16)), ValueError, None),
    (hqq.hqq_quantize_weight, "type", dict(W=W.tolist()), TypeError, None),
    (hqq.package_quantize_weight, "nan", dict(W=_nan(8, 16)), ValueError, None),
    (hqq.package_quantize_weight, "group", dict(group_size=5), ValueError, None),
    # bitnet
    (bitnet.absmean_ternary, "nan", dict(w=_nan(8, 16)), ValueError, None),
    (bitnet.absmean_ternary, "range", dict(eps=0.0), ValueError, None),
    (bitnet.absmean_ternary, "dtype", dict(w=Q8), TypeError, None),
    (bitnet.absmax_int8, "inf", dict(x=_inf(4, 16)), ValueError, None),
    (bitnet.absmax_int8, "empty", dict(x=torch.zeros(0, 16)), ValueError, None),
    (bitnet.fake_quant_weight, "type", dict(w=[1.0]), TypeError, None),
    (bitnet.fake_quant_activation, "nan", dict(x=_nan(4, 16)), ValueError, None),
    (bitnet.ste, "shape", dict(x_quant=_w(4, 15)), ValueError, "x_quant"),
    (bitnet.rms_norm, "shape", dict(weight=torch.ones(15)), ValueError, "weight"),
    (bitnet.rms_norm, "range", dict(eps=-1.0), ValueError, None),
    (bitnet.bitlinear_forward, "shape", dict(weight=_w(8, 15)), ValueError, "weight"),
    (bitnet.bitlinear_forward, "nan", dict(x=_nan(4, 16)), ValueError, None),
    (bitnet.pack_ternary, "range", dict(w_ternary=TERN * 2), ValueError, None),
    (bitnet.pack_ternary, "ndim", dict(w_ternary=TERN[0]), ValueError, None),
    (bitnet.unpack_ternary, "range", dict(in_features=64), ValueError, None),
    (bitnet.unpack_ternary, "dtype", dict(packed=PACKED_TERN.float()), TypeError, None),
    (bitnet.ternary_matmul, "shape", dict(x=_w(4, 15)), ValueError, "x"),
    (bitnet.ternary_matmul, "range", dict(scale=-1.0), ValueError, None),
    (bitnet.tq2_0_quantize, "shape", dict(x=_w(2, 100)), ValueError, None),
    (bitnet.tq2_0_quantize, "nan", dict(x=_nan(2, 256)), ValueError, None),
    (bitnet.tq2_0_dequantize, "shape", dict(blocks=TQ2_BYTES[:, :65]), ValueError, None),
    (bitnet.tq2_0_dequantize, "dtype", dict(blocks=TQ2_BYTES.float()), TypeError, None),
    # prune
    (prune.check_sparsity, "range", dict(sparsity=1.5), ValueError, None),
    (prune.check_sparsity, "type", dict(sparsity="half"), TypeError, None),
    (prune.sparsity_of, "type", dict(x=[0.0, 1.0]), TypeError, None),
    (prune.magnitude_mask, "range", dict(sparsity=-0.1), ValueError, None),
    (prune.magnitude_mask, "nan", dict(w=_nan(8, 16)), ValueError, None),
    (prune.global_magnitude_masks, "type", dict(weights=[W, "x"]), TypeError, "weights"),
    (prune.global_magnitude_masks, "range", dict(sparsity=2.0), ValueError, None),
    (prune.nm_mask, "group", dict(m=5), ValueError, "m"),
    (prune.nm_mask, "range", dict(n=5), ValueError, None),
    (prune.wanda_scores, "shape", dict(act_norm=torch.ones(15)), ValueError, "act_norm"),
    (prune.wanda_mask, "range", dict(sparsity=1.5), ValueError, None),
    (prune.wanda_mask, "nan", dict(act_norm=_nan(16)), ValueError, None),
    (prune.sparsegpt_prune, "range", dict(sparsity=1.5), ValueError, None),
    (prune.sparsegpt_prune, "shape", dict(H=torch.eye(8)), ValueError, "H"),
    (prune.sparsegpt_prune, "nan", dict(W=_nan(8, 16)), ValueError, None),
    (prune.sparsegpt_prune, "group", dict(nm=(2, 3)), ValueError, "nm"),
    (prune.sparsegpt_prune, "type", dict(nm=[2, 4]), TypeError, "nm"),
    (prune.sparsegpt_prune, "range", dict(blocksize=0), ValueError, None),
    (prune.channel_scores, "type", dict(fc1="fc1"), TypeError, None),
    (prune.channel_scores, "shape", dict(fc2=torch.nn.Linear(7, 4)), ValueError, "fc2"),
    (prune.sparse_bits_per_weight, "range", dict(sparsity=1.5), ValueError, None),
    (prune.sparse_bits_per_weight, "value", dict(fmt="csr9"), ValueError, None),
    (prune.cubic_sparsity, "range", dict(final_sparsity=1.0), ValueError, None),
    (prune.cubic_sparsity, "range", dict(initial_sparsity=0.9), ValueError, None),
    (prune.cubic_sparsity, "range", dict(step=-1), ValueError, None),
    (prune.cubic_sparsity, "type", dict(step=2.5), TypeError, None),
    (prune.cubic_sparsity, "range", dict(n_prunings=0), ValueError, None),
    (prune.cubic_sparsity, "range", dict(frequency=0), ValueError, None),
    (prune.gradual_targets, "range", dict(stages=0), ValueError, None),
    (prune.gradual_targets, "type", dict(final=[2, 4]), TypeError, None),
    # distill
    (distill.soft_target_loss, "range", dict(temperature=0.0), ValueError, None),
    (distill.soft_target_loss, "shape", dict(teacher_logits=_w(4, 9)), ValueError, "teacher_logits"),
    (distill.soft_target_loss, "nan", dict(student_logits=_nan(4, 10)), ValueError, None),
    (distill.distillation_loss, "range", dict(alpha=1.5), ValueError, None),
    (distill.distillation_loss, "dtype", dict(labels=LABELS.float()), TypeError, None),
    (distill.distillation_loss, "shape", dict(labels=torch.tensor([0, 1])), ValueError, "labels"),
    (distill.feature_distillation_loss, "shape", dict(teacher_hidden=_w(4, 15)), ValueError, "teacher|projection"),
    (distill.feature_distillation_loss, "type", dict(student_hidden=[1.0]), TypeError, None),
    (distill.soft_targets, "range", dict(temperature=-1.0), ValueError, None),
    (distill.soft_targets, "inf", dict(logits=_inf(4, 10)), ValueError, None),
    (distill.soft_target_grad_norm, "range", dict(temperature=0.0), ValueError, None),
    (distill.mean_std, "empty", dict(values=[]), ValueError, None),
    (distill.make_mlp, "range", dict(widths=(0,)), ValueError, None),
    # kernels
    (kernels.quantize_rows_int8, "value", dict(backend="fortran"), ValueError, None),
    (kernels.quantize_rows_int8, "nan", dict(x=_nan(4, 16)), ValueError, None),
    (kernels.quantize_rows_int8, "dtype", dict(x=Q8), TypeError, None),
    (kernels.dequantize_rows_int8, "shape", dict(absmax=torch.ones(3)), ValueError, "absmax"),
    (kernels.dequantize_rows_int8, "dtype", dict(q=ROWQ.float()), TypeError, None),
    (kernels.dequantize_nf4, "shape", dict(shape=(8, 32)), ValueError, "shape|packed"),
    (kernels.dequantize_nf4, "dtype", dict(dtype=torch.int8), (TypeError, ValueError), None),
    (kernels.pack_int4, "group", dict(group_size=5), ValueError, None),
    (kernels.pack_int4, "nan", dict(w=_nan(8, 16)), ValueError, None),
    (kernels.dequantize_int4, "group", dict(group_size=0), ValueError, None),
    (kernels.dequantize_int4, "dtype", dict(packed=INT4_PACKED.float()), TypeError, None),
    (kernels.gemv_nf4, "shape", dict(x=X[:1, :15]), ValueError, "packed|x"),
    (kernels.gemv_nf4, "range", dict(out_features=0), ValueError, None),
    (kernels.gemv_int4, "shape", dict(x=X[:1, :15]), ValueError, "x"),
    (kernels.gemv_int4, "nan", dict(x=_nan(1, 16)), ValueError, None),
    (kernels.gemv_ternary, "shape", dict(x=X[:1, :15]), ValueError, "x"),
    (kernels.gemv_ternary, "type", dict(x=[1.0] * 16), TypeError, None),
    (kernels.gemv_bytes, "range", dict(n=0), ValueError, None),
    (kernels.gemv_bytes, "group", dict(group_size=0), ValueError, None),
    (kernels.nf4_byte_table, "shape", dict(codebook=torch.zeros(8)), ValueError, None),
    (kernels.nf4_byte_table, "type", dict(codebook=[0.0] * 16), TypeError, None),
    # kv_cache (its model-level functions: MODEL_ROWS; its caches: tests/library/test_kv_cache.py)
    (kv_cache.quantize_groups, "group", dict(group_size=3), ValueError, None),
    (kv_cache.quantize_groups, "bits", dict(bits=9), ValueError, None),
    (kv_cache.quantize_groups, "range", dict(dim=4), ValueError, None),
    (kv_cache.quantize_groups, "nan", dict(x=_nan(1, 2, 8, 16)), ValueError, None),
    (kv_cache.quantize_groups, "dtype", dict(x=Q8), TypeError, None),
    (kv_cache.quantize_groups, "empty", dict(x=torch.zeros(0, 8)), ValueError, None),
    (kv_cache.dequantize_groups, "shape", dict(scale=KV_SCALE[:, :, :1]), ValueError, None),
    (kv_cache.dequantize_groups, "dtype", dict(codes=KV_CODES.float()), TypeError, None),
]

# Model-level functions: the model (or block, layer) argument is not an nn.Module. The other arguments are
# valid where a check of theirs could come first. (function, call, regex naming the argument)
BAD = [1, 2]
Y4 = torch.tensor([0, 1, 2, 3])
IDS = torch.randint(0, 10, (2, 8))
MODEL_ROWS = [
    (qat.train_classifier, lambda: qat.train_classifier(BAD, X, Y4, epochs=1), "model"),
    (qat.quantize_model, lambda: qat.quantize_model(BAD, 8), "model"),
    (qat.calibrate, lambda: qat.calibrate(BAD, X), "model"),
    (qat.qat_finetune, lambda: qat.qat_finetune(BAD, X, Y4, epochs=1), "qmodel"),
    (evaluate.granularity_sweep, lambda: evaluate.granularity_sweep(BAD, None, ["a"], [(8, "channel", None)]),
     "model"),
    (granularity.replace_linears, lambda: granularity.replace_linears(BAD, lambda linear: linear), "model"),
    (granularity.QuantLinear.from_float, lambda: granularity.QuantLinear.from_float(BAD), "linear"),
    (nf4.quantize_linears_nf4, lambda: nf4.quantize_linears_nf4(BAD), "model"),
    (nf4.fake_quantize_linears, lambda: nf4.fake_quantize_linears(BAD), "model"),
    (nf4.bnb_linear4bit_model, lambda: nf4.bnb_linear4bit_model(BAD), "model"),
    (nf4.add_lora, lambda: nf4.add_lora(BAD), "model"),
    (llm_int8.quantize_model_int8, lambda: llm_int8.quantize_model_int8(BAD), "model"),
    (llm_int8.int8_layers, lambda: llm_int8.int8_layers(BAD), "model"),
    (llm_int8.inject_outlier_features, lambda: llm_int8.inject_outlier_features(BAD, [0], 10.0), "model"),
    (llm_int8.linear_inputs, lambda: llm_int8.linear_inputs(BAD, IDS, ["fc"]), "model"),
    (smoothquant.fold_smoothing, lambda: smoothquant.fold_smoothing(MLP[0], [MLP[2]], ACT[:8]), "norm"),
    (smoothquant.activation_absmax, lambda: smoothquant.activation_absmax(BAD, IDS), "model"),
    (smoothquant.smoothing_groups, lambda: smoothquant.smoothing_groups(BAD), "model"),
    (smoothquant.smooth_model, lambda: smoothquant.smooth_model(BAD, {}), "model"),
    (gptq.sequential_groups, lambda: gptq.sequential_groups(BAD, []), "block"),
    (gptq.quantize_model_gptq, lambda: gptq.quantize_model_gptq(BAD, None, 4), "model"),
    (awq.search_scale, lambda: awq.search_scale(BAD, [MLP[0]], X, 4, 8), "module"),
    (awq.fold_scales, lambda: awq.fold_scales(BAD, [MLP[0]], ACT), "prev"),
    (awq.block_linear_inputs, lambda: awq.block_linear_inputs(BAD, X), "block"),
    (awq.scale_groups, lambda: awq.scale_groups(BAD), "block"),
    (awq.collect_activation_scales, lambda: awq.collect_activation_scales(BAD, IDS), "model"),
    (awq.quantize_model_keep_channels, lambda: awq.quantize_model_keep_channels(BAD, 4, 8, {}), "model"),
    (awq.quantize_model_awq, lambda: awq.quantize_model_awq(BAD, None, 4), "model"),
    (hqq.quantize_model_hqq, lambda: hqq.quantize_model_hqq(BAD), "model"),
    (bitnet.pack_model, lambda: bitnet.pack_model(BAD), "model"),
    (bitnet.set_quantization, lambda: bitnet.set_quantization(BAD, True, True), "model"),
    (bitnet.bitlinear_layers, lambda: bitnet.bitlinear_layers(BAD), "model"),
    (bitnet.train_classifier, lambda: bitnet.train_classifier(BAD, X, Y4, steps=1), "model"),
    (bitnet.train_lm, lambda: bitnet.train_lm(BAD, torch.randint(0, 10, (200,)), steps=1), "model"),
    (bitnet.to_bitlinear, lambda: bitnet.to_bitlinear(BAD), "model"),
    (bitnet.ternary_finetune, lambda: bitnet.ternary_finetune(BAD, IDS, 1), "model"),
    (prune.prune_channels, lambda: prune.prune_channels(BAD, MLP[2], 0.5), "fc1"),
    (prune.apply_masks, lambda: prune.apply_masks(BAD, {}), "layers"),
    (prune.input_norms, lambda: prune.input_norms(BAD, X), "block"),
    (prune.prune_model, lambda: prune.prune_model(BAD), "model"),
    (prune.sensitivity_scan, lambda: prune.sensitivity_scan(BAD, lambda m: 0.0, [0.5]), "model"),
    (prune.train_classifier, lambda: prune.train_classifier(BAD, X, Y4, epochs=1), "model"),
    (prune.distill_with_masks, lambda: prune.distill_with_masks(BAD, None, IDS, {"fc": W > 0}), "model"),
    (prune.prune_and_distill, lambda: prune.prune_and_distill(BAD, None, IDS, [0.5]), "model"),
    (distill.set_weight_bits, lambda: distill.set_weight_bits(BAD, 8), "model"),
    (distill.mlp_hidden_and_logits, lambda: distill.mlp_hidden_and_logits(BAD, X), "model"),
    (distill.train_classifier, lambda: distill.train_classifier(BAD, X, Y4, steps=1), "model"),
    (distill.student_vs_distilled, lambda: distill.student_vs_distilled(BAD, X, Y4, X, Y4), "teacher"),
    (distill.train_lm, lambda: distill.train_lm(BAD, torch.randint(0, 10, (4, 9))), "model"),
    (kernels.replace_linears_nf4, lambda: kernels.replace_linears_nf4(BAD), "model"),
    (gguf_formats.export_gguf, lambda: gguf_formats.export_gguf(BAD, GGUF_OUT, {}), "model"),
    (kv_cache.embed_tokens, lambda: kv_cache.embed_tokens(BAD, IDS), "model"),
    (kv_cache.block_qkv, lambda: kv_cache.block_qkv(BAD, 0, _w(2, 8, 16), torch.arange(8)), "model"),
    (kv_cache.block_output, lambda: kv_cache.block_output(BAD, 0, _w(2, 8, 16), _w(2, 4, 8, 4)), "model"),
    (kv_cache.lm_logits, lambda: kv_cache.lm_logits(BAD, _w(2, 8, 16)), "model"),
    (kv_cache.greedy_generate, lambda: kv_cache.greedy_generate(BAD, IDS, 4), "model"),
    (kv_cache.generate, lambda: kv_cache.generate(BAD, IDS, 4), "model"),
    (kv_cache.decode_logits, lambda: kv_cache.decode_logits(BAD, IDS), "model"),
    (kv_cache.compare_decoding, lambda: kv_cache.compare_decoding(BAD, IDS, {"fp16": kv_cache.KVCache}, 4), "model"),
    (kv_cache.greedy_match, lambda: kv_cache.greedy_match(BAD, IDS, {"fp16": kv_cache.KVCache}, 4), "model"),
]


@pytest.mark.parametrize("fn, call, regex", MODEL_ROWS, ids=[_name(r[0]) for r in MODEL_ROWS])
def test_model_level_functions_name_a_bad_model(fn, call, regex):
    with pytest.raises(TypeError) as info:
        call()
    assert re.search(rf"\b{regex}\b", str(info.value)), f"{_name(fn)}: message {str(info.value)!r} does not name {regex!r}"


# Non-contiguous views: each function either gives the same result as on .contiguous() or raises (a named
# error). (function, argument to replace by a non-contiguous view of the same values)
NONCONTIGUOUS = [
    (formats.round_to_format, "x"), (affine.quantize, "x"), (affine.requantize, "acc"), (affine.integer_linear, "qw"),
    (granularity.weight_scale_zero_point, "w"),
    (granularity.fake_quantize_weight, "w"), (granularity.fake_quantize_per_group, "x"),
    (granularity.quantized_linear, "w"), (nf4.quantize_4bit, "w"), (nf4.blockwise_absmax, "w"),
    (nf4.fake_quantize_4bit, "w"), (llm_int8.vectorwise_quant, "x"), (llm_int8.llm_int8_matmul, "w"),
    (gptq.gptq_quantize_weight, "W"), (awq.scaled_fake_quantize, "w"), (hqq.hqq_quantize_weight, "W"),
    (hqq.group_weight, "W"), (bitnet.absmean_ternary, "w"), (bitnet.bitlinear_forward, "weight"),
    (prune.magnitude_mask, "w"), (prune.nm_mask, "w"), (kernels.pack_int4, "w"),
    (kernels.quantize_rows_int8, "x"), (gguf_formats.q4_0_quantize, "x"), (gguf_formats.q4_k_quantize, "x"),
]

# Functions with no row, and why: "no tensor" ones take no tensor input at all (a constant table, an
# environment probe, a model built from sizes); the others need what this machine may lack.
EXEMPT = {
    # no tensor
    "hqq.package_available": "no tensor: an import probe",
    "bitnet.bits_per_weight": "no tensor: a constant table",
    "kernels.backend_status": "no tensor: an environment probe",
    "kernels.load_extension": "no tensor: builds/loads a compiled extension",
    "kernels.build_c_kernel": "no tensor: compiles C source",
    "kernels.cache_dir": "no argument: a path from the environment",
    "kernels.check_cuda_sources": "no tensor: compiles the CUDA sources (tests/library/test_kernels_build.py)",
    "kernels.cuda_arch": "no argument: a GPU probe (tests/library/test_kernels.py)",
    "bitnet.make_digits_mlp": "no tensor: builds a model from sizes",
    "bitnet.make_tiny_lm": "no tensor: builds a model from sizes",
    "distill.make_student_lm": "no tensor: builds a model from sizes",
    # not run here
    "kernels.call_rows_int8_c": "needs a C library compiled by build_c_kernel (tests/library/test_kernels.py)",
    "gptq.gptqmodel_quantize_weight": "the gptqmodel package, side by side (not installed on every machine)",
    "gptq.paper_table": "no tensor: a hub model and the hub's texts (tests/library/test_gptq.py runs local copies)",
}


def _call(fn, overrides):
    out = fn(**{**GOOD[fn], **overrides})
    if hasattr(out, "__enter__"):  # a context manager (granularity.quantized_linears) checks on entry
        with out as value:
            return value
    return out


@pytest.mark.parametrize("fn", list(GOOD), ids=_name)
def test_good_arguments_work(fn):
    """The base of every row is a valid call: a row fails because of its override, not the rest."""
    if fn is hqq.package_quantize_weight and not hqq.package_available():
        pytest.skip("the hqq package is not installed (it is in CI)")
    _call(fn, {})


@pytest.mark.parametrize("fn, kind, overrides, error, regex", ROWS,
                         ids=[f"{_name(r[0])}-{r[1]}-{next(iter(r[2]), '')}" for r in ROWS])
def test_bad_input_is_rejected_with_a_named_error(fn, kind, overrides, error, regex):
    assert fn in GOOD, f"{_name(fn)} has a row but no GOOD arguments"
    regex = regex or re.escape(next(iter(overrides)))
    with pytest.raises(error) as info:
        _call(fn, overrides)
    assert re.search(regex, str(info.value)), f"{_name(fn)} ({kind}): message {str(info.value)!r} does not match {regex!r}"


@pytest.mark.parametrize("fn, arg", NONCONTIGUOUS, ids=[f"{_name(f)}-{a}" for f, a in NONCONTIGUOUS])
def test_noncontiguous_views_give_the_contiguous_result(fn, arg):
    good = GOOD[fn][arg]
    view = good.t().contiguous().t()  # same values, transposed strides
    assert not view.is_contiguous() and torch.equal(view, good)
    expected = _call(fn, {arg: good})
    got = _call(fn, {arg: view})
    for e, g in zip(expected if isinstance(expected, tuple) else (expected,),
                    got if isinstance(got, tuple) else (got,), strict=True):
        if isinstance(e, torch.Tensor):  # codes exactly; floats up to the summation order of a matmul
            tol = dict(rtol=0, atol=0) if not e.is_floating_point() else dict(rtol=1e-6, atol=1e-6)
            torch.testing.assert_close(g, e, **tol)


# A 0-dim scale (affine.quantize's, bitnet.ternary_matmul's) may sit on another device: torch treats a
# 0-dim tensor like a Python number, and the result is right (test_zero_dim_scales_may_sit_on_another_device).
ZERO_DIM_SCALE_ROWS = [(affine.quantize, dict(scale=S0)), (affine.dequantize, dict(scale=S0)),
                       (bitnet.ternary_matmul, dict(scale=_t(0.5)))]
DEVICE_ROWS = [
    (granularity.quantize_weight, dict(scale=G_SCALE)), (granularity.dequantize_weight, dict(scale=G_SCALE)),
    (nf4.dequantize_4bit, dict(absmax=ABSMAX_NF4)), (llm_int8.vectorwise_dequant, dict(row_stats=_w(4).abs())),
    (hqq.quantize_codes, dict(inv_scale=HQ_INV)), (hqq.dequantize_codes, dict(inv_scale=HQ_INV)),
    (kernels.dequantize_rows_int8, dict(absmax=ROWABS)),
    (qat.lsq_fake_quantize, dict(step=_w(4, 1).abs() + 0.01)),
    (formats.mx_dequantize, dict(shared_exp=MX_EXP)), (formats.nvfp4_dequantize, dict(block_scales=NV_SCALES)),
]


@pytest.mark.parametrize("fn, moved", DEVICE_ROWS, ids=[_name(r[0]) for r in DEVICE_ROWS])
def test_scales_on_another_device_are_named(fn, moved):
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA for a second device")
    overrides = {k: v.cuda() for k, v in moved.items()}
    with pytest.raises((ValueError, RuntimeError), match="device"):
        _call(fn, overrides)


@pytest.mark.parametrize("fn, moved", ZERO_DIM_SCALE_ROWS, ids=[_name(r[0]) for r in ZERO_DIM_SCALE_ROWS])
def test_zero_dim_scales_may_sit_on_another_device(fn, moved):
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA for a second device")
    expected = _call(fn, {})
    got = _call(fn, {k: v.cuda() for k, v in moved.items()})
    torch.testing.assert_close(got.cpu(), expected, rtol=0, atol=0)


def test_the_table_covers_enough_kinds():
    kinds = {r[1] for r in ROWS}
    assert len(kinds) >= 8, kinds
    assert {"type", "dtype", "shape", "ndim", "bits", "group", "nan", "inf", "empty", "range"} <= kinds


def test_every_public_function_has_a_row():
    covered = {_name(r[0]) for r in ROWS} | {_name(r[0]) for r in MODEL_ROWS}
    missing = []
    for mod in MODULES:
        short = mod.__name__.rsplit(".", 1)[-1]
        names = getattr(mod, "__all__", None) or [n for n, o in vars(mod).items()
                                                   if inspect.isfunction(o) and o.__module__ == mod.__name__]
        for n in names:
            obj = getattr(mod, n)
            if not inspect.isfunction(obj) or n.startswith("_"):
                continue
            key = f"{short}.{n}"
            if key not in covered and key not in EXEMPT:
                missing.append(key)
    assert missing == [], f"public functions without a bad-input row (add one, or an EXEMPT entry): {missing}"


def test_not_yet_covered_are_topic_modules():
    assert set(NOT_YET_COVERED) <= set(topics.modules()), set(NOT_YET_COVERED) - set(topics.modules())


def test_exemptions_have_no_rows():
    covered = {_name(r[0]) for r in ROWS} | {_name(r[0]) for r in MODEL_ROWS}
    assert covered.isdisjoint(EXEMPT), covered & set(EXEMPT)


def test_exemptions_are_real_functions():
    for key in EXEMPT:
        short, n = key.split(".")
        mod = importlib.import_module(f"course_lib.{short}")
        assert inspect.isfunction(getattr(mod, n, None)), key
