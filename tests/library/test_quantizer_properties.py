"""Property tests of every quantizer's core invariants that its own test file does not already check.

Already covered elsewhere (not repeated here): affine round trip <= scale/2 and requantization
(tests/library/test_affine.py); granularity per-channel/per-group error <= step/2 and idempotence with fixed
parameters (tests/library/test_granularity.py); nf4 error bound, idempotence and zeros (tests/library/test_nf4.py);
llm_int8 vector-wise round trip (tests/library/test_llm_int8.py); formats round trip, idempotence, monotonicity
(tests/library/test_formats.py); bitnet codes and the int8 round trip (tests/library/test_bitnet.py).

Here: monotonicity of the per-tensor (and per-row, per-block) scalar quantizers, scale > 0 and finite
output on constant and all-zero tensors, idempotence where it was missing (llm_int8 vector-wise, hqq codes,
bitnet ternary), and hqq's min-max round trip bound.
"""

from __future__ import annotations

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from course_lib import affine, bitnet, formats, granularity, hqq, llm_int8, nf4

SETTINGS = settings(max_examples=50)

finite = st.floats(-1e4, 1e4, allow_nan=False, allow_infinity=False, width=32)
vectors = st.lists(finite, min_size=2, max_size=64).map(lambda v: torch.tensor(v, dtype=torch.float32))
constants = st.sampled_from([0.0, -0.0, 1e-30, -3.5, 7.0, 1e4, -1e-8])


@st.composite
def matrices(draw, max_rows=6, max_groups=4, group=8):
    rows = draw(st.integers(1, max_rows))
    cols = group * draw(st.integers(1, max_groups))
    values = draw(st.lists(finite, min_size=rows * cols, max_size=rows * cols))
    return torch.tensor(values, dtype=torch.float32).reshape(rows, cols)


def _sorted_pair(x):
    """x sorted, so that monotonicity reads: the codes of a sorted vector are sorted."""
    return torch.sort(x).values


# ----------------------------------------------------------------------------------------------
# affine (per-tensor)


@SETTINGS
@given(x=vectors, bits=st.integers(2, 8), symmetric=st.booleans())
def test_affine_quantize_is_monotone(x, bits, symmetric):
    qmin, qmax = affine.qrange(bits, signed=False)
    s, z = affine.compute_scale_zero_point(x.min(), x.max(), qmin, qmax, symmetric)
    xs = _sorted_pair(x)
    q = affine.quantize(xs, s, z, qmin, qmax)
    assert bool((q[1:] >= q[:-1]).all())
    dq = affine.dequantize(q, s, z)
    assert bool((dq[1:] >= dq[:-1]).all())


@SETTINGS
@given(c=constants, n=st.integers(1, 16), bits=st.integers(2, 8), symmetric=st.booleans())
def test_affine_constant_tensor_has_positive_scale_and_finite_output(c, n, bits, symmetric):
    x = torch.full((n,), c)
    qmin, qmax = affine.qrange(bits, signed=True)
    s, z = affine.compute_scale_zero_point(x.min(), x.max(), qmin, qmax, symmetric)
    assert float(s) > 0 and bool(torch.isfinite(s))
    fq = affine.fake_quantize(x, s, z, qmin, qmax)
    assert bool(torch.isfinite(fq).all())
    assert bool(((fq - x).abs() <= s / 2 * (1 + 1e-5) + 1e-30).all())


@SETTINGS
@given(x=vectors, bits=st.integers(2, 8))
def test_affine_fake_quantize_is_idempotent(x, bits):
    qmin, qmax = affine.qrange(bits, signed=False)
    s, z = affine.compute_scale_zero_point(x.min(), x.max(), qmin, qmax)
    once = affine.fake_quantize(x, s, z, qmin, qmax)
    assert torch.equal(affine.fake_quantize(once, s, z, qmin, qmax), once)


# ----------------------------------------------------------------------------------------------
# granularity: per-channel and per-group RTN


@SETTINGS
@given(w=matrices(), bits=st.integers(2, 8), group=st.sampled_from([None, 8]), symmetric=st.booleans())
def test_granularity_is_monotone_within_a_channel(w, bits, group, symmetric):
    """One (scale, zero) per row or group: inside a group, sorted inputs give sorted codes."""
    ws = torch.sort(w, dim=1).values if group is None else \
        torch.sort(w.reshape(w.shape[0], -1, group), dim=-1).values.reshape(w.shape)
    s, z = granularity.weight_scale_zero_point(ws, bits, group, symmetric)
    q = granularity.quantize_weight(ws, s, z, bits, group).to(torch.int64)
    q = q if group is None else q.reshape(w.shape[0], -1, group)
    assert bool((q[..., 1:] >= q[..., :-1]).all())


@SETTINGS
@given(c=constants, rows=st.integers(1, 4), bits=st.integers(2, 8), group=st.sampled_from([None, 8]),
       symmetric=st.booleans())
def test_granularity_constant_weight_has_positive_scales_and_finite_output(c, rows, bits, group, symmetric):
    w = torch.full((rows, 16), c)
    s, z = granularity.weight_scale_zero_point(w, bits, group, symmetric)
    assert bool((s > 0).all()) and bool(torch.isfinite(s).all())
    fq = granularity.fake_quantize_weight(w, bits, group, symmetric)
    assert bool(torch.isfinite(fq).all())
    per = s.repeat_interleave(16 if group is None else group, dim=1)
    assert bool(((fq - w).abs() <= per / 2 * (1 + 1e-5) + 1e-30).all())


@SETTINGS
@given(w=matrices(), bits=st.integers(2, 8), symmetric=st.booleans())
def test_granularity_per_group_fake_quantize_is_idempotent(w, bits, symmetric):
    """Requantizing the dequantized weights with their own (scale, zero) gives the same codes."""
    s, z = granularity.weight_scale_zero_point(w, bits, 8, symmetric)
    q = granularity.quantize_weight(w, s, z, bits, 8)
    dq = granularity.dequantize_weight(q, s, z, 8)
    assert torch.equal(granularity.quantize_weight(dq, s, z, bits, 8), q)


# ----------------------------------------------------------------------------------------------
# nf4 / fp4 (blockwise absmax codebooks)


@SETTINGS
@given(x=vectors, quant_type=st.sampled_from(["nf4", "fp4"]))
def test_4bit_is_monotone_within_a_block(x, quant_type):
    xs = _sorted_pair(x)
    n = xs.numel()
    packed, absmax = nf4.quantize_4bit(xs, blocksize=64, quant_type=quant_type)
    dq = nf4.dequantize_4bit(packed, absmax, (n,), blocksize=64, quant_type=quant_type)
    assert bool((dq[1:] >= dq[:-1]).all())


@SETTINGS
@given(x=vectors)
def test_nearest_code_is_monotone(x):
    book = nf4.nf4_codebook()
    xs = _sorted_pair(x.clamp(-1, 1))
    codes = nf4.nearest_code(xs, book).to(torch.int64)
    values = book[codes]
    assert bool((values[1:] >= values[:-1]).all())


@SETTINGS
@given(c=constants, n=st.integers(1, 130), quant_type=st.sampled_from(["nf4", "fp4"]))
def test_4bit_constant_tensor_is_finite_and_close(c, n, quant_type):
    """A constant block has absmax |c|: c itself is the code +-1 (nf4) or +-max (fp4), exactly."""
    x = torch.full((n,), c)
    packed, absmax = nf4.quantize_4bit(x, blocksize=64, quant_type=quant_type)
    assert bool((absmax >= 0).all()) and bool(torch.isfinite(absmax).all())
    dq = nf4.dequantize_4bit(packed, absmax, (n,), blocksize=64, quant_type=quant_type)
    assert bool(torch.isfinite(dq).all())
    torch.testing.assert_close(dq, x, rtol=1e-6, atol=0)


# ----------------------------------------------------------------------------------------------
# llm_int8 vector-wise


@SETTINGS
@given(x=matrices())
def test_vectorwise_is_idempotent(x):
    codes, stats = llm_int8.vectorwise_quant(x)
    dq = llm_int8.vectorwise_dequant(codes, stats)
    codes2, stats2 = llm_int8.vectorwise_quant(dq)
    assert torch.equal(codes2, codes)


@SETTINGS
@given(x=matrices())
def test_vectorwise_is_monotone_within_a_row(x):
    xs = torch.sort(x, dim=1).values
    codes, _ = llm_int8.vectorwise_quant(xs)
    assert bool((codes[:, 1:] >= codes[:, :-1]).all())


@SETTINGS
@given(c=constants, rows=st.integers(1, 4))
def test_vectorwise_constant_rows_are_finite_and_exact(c, rows):
    x = torch.full((rows, 8), c)
    codes, stats = llm_int8.vectorwise_quant(x)
    assert bool((stats >= 0).all()) and bool(torch.isfinite(stats).all())
    dq = llm_int8.vectorwise_dequant(codes, stats)
    assert bool(torch.isfinite(dq).all())
    torch.testing.assert_close(dq, x, rtol=1e-6, atol=0)


# ----------------------------------------------------------------------------------------------
# hqq (min-max initialisation, codes, optimized zero points)


@SETTINGS
@given(w=matrices(), bits=st.integers(2, 8))
def test_hqq_min_max_round_trip_within_half_a_step(w, bits):
    """Before the zero-point optimization: |W - dq(q(W))| <= step/2 with step = 1/inv_scale, when nothing clips."""
    g = hqq.group_weight(w, 8)
    inv, zero = hqq.init_scale_zero(g, bits)
    assert bool((inv > 0).all()) and bool(torch.isfinite(inv).all())
    dq = hqq.dequantize_codes(hqq.quantize_codes(g, inv, zero, bits), inv, zero)
    step = 1.0 / inv
    ranged = (g.amax(1, keepdim=True) - g.amin(1, keepdim=True)) * inv <= 2**bits - 1 + 1e-3  # no clamp of inv
    err = (dq - g).abs()
    ok = err <= step / 2 * (1 + 1e-4) + 1e-6 * g.abs().amax(1, keepdim=True)  # float32 rounding
    assert bool((ok | ~ranged).all())


@SETTINGS
@given(w=matrices(), bits=st.integers(2, 8))
def test_hqq_codes_are_idempotent(w, bits):
    g = hqq.group_weight(w, 8)
    inv, zero = hqq.init_scale_zero(g, bits)
    q = hqq.quantize_codes(g, inv, zero, bits)
    assert torch.equal(hqq.quantize_codes(hqq.dequantize_codes(q, inv, zero), inv, zero, bits), q)


@settings(max_examples=20)
@given(c=constants, bits=st.sampled_from([2, 3, 4, 8]), group=st.sampled_from([None, 8]))
def test_hqq_constant_weight_is_finite_with_positive_scale(c, bits, group):
    w = torch.full((4, 16), c)
    q, inv, zero = hqq.hqq_quantize(w, bits, group, iters=3)
    assert bool((inv > 0).all()) and bool(torch.isfinite(inv).all()) and bool(torch.isfinite(zero).all())
    dq = hqq.hqq_quantize_weight(w, bits, group, iters=3)
    assert bool(torch.isfinite(dq).all())


# ----------------------------------------------------------------------------------------------
# bitnet ternary and int8 activations (per tensor / per token)


@SETTINGS
@given(x=vectors)
def test_ternary_is_monotone(x):
    codes, _ = bitnet.absmean_ternary(_sorted_pair(x))
    assert bool((codes[1:] >= codes[:-1]).all())
    codes8, _ = bitnet.absmax_int8(_sorted_pair(x))
    assert bool((codes8[1:] >= codes8[:-1]).all())


@SETTINGS
@given(x=vectors)
def test_ternary_fake_quant_is_idempotent_up_to_the_rescale(x):
    """Requantizing gamma * codes gives the same zero pattern and signs (gamma changes with the mean)."""
    codes, gamma = bitnet.absmean_ternary(x)
    fq = bitnet.fake_quant_weight(x)
    codes2, _ = bitnet.absmean_ternary(fq)
    if bool((codes != 0).any()):
        # the non-zero codes have |fq| = gamma >= mean|fq|, so they stay non-zero with the same sign
        assert bool((codes2[codes != 0] == codes[codes != 0]).all())
    assert bool(torch.isfinite(fq).all())


@SETTINGS
@given(c=constants, n=st.integers(1, 32))
def test_bitnet_constant_tensor_has_positive_scale_and_finite_output(c, n):
    x = torch.full((n,), c)
    codes, gamma = bitnet.absmean_ternary(x)
    assert float(gamma) > 0 and bool(torch.isfinite(gamma))
    assert bool(torch.isfinite(bitnet.fake_quant_weight(x)).all())
    xc, delta = bitnet.absmax_int8(x)
    assert bool((delta > 0).all()) and bool(torch.isfinite(bitnet.fake_quant_activation(x)).all())


# ----------------------------------------------------------------------------------------------
# formats: constant and zero tensors (round trip, idempotence, monotonicity live in test_formats.py)


@SETTINGS
@given(c=constants, fmt=st.sampled_from(["fp16", "bf16", "fp8_e4m3", "fp8_e5m2", "fp4_e2m1"]))
def test_round_to_format_of_constants_is_constant_and_finite(c, fmt):
    x = torch.full((5,), c)
    r = formats.round_to_format(x, fmt)
    assert bool(torch.isfinite(r).all()) or fmt in ("fp16", "bf16", "fp8_e5m2")  # may overflow to Inf
    assert bool((r == r[0]).all())
