"""Tests of course_lib.formats (notebook 01): closed-form values, torch's casts as the independent
reference (bit for bit), exhaustive checks over every code and every rounding midpoint of the 8- and
16-bit formats, hypothesis properties, bad input, the widget and the plots."""

from __future__ import annotations

import bisect
import math
from fractions import Fraction

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from course_lib import formats as F

TORCH_FORMATS = [F.FP32, F.FP16, F.BF16, F.FP8_E4M3, F.FP8_E5M2]
SMALL_TORCH_FORMATS = [F.FP16, F.BF16, F.FP8_E4M3, F.FP8_E5M2]  # <= 16 bits: every code can be listed
ALL_FORMATS = TORCH_FORMATS + [F.FP4_E2M1]
# the `device` fixture (CPU always, CUDA when present) comes from tests/conftest.py
HYPO = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def ids(fmt):
    return fmt.name


def as_torch(fmt, device="cpu"):
    """``fmt`` with the overflow rule of the installed torch's cast on ``device`` (E4M3: torch 2.13
    saturates, older releases gave NaN), so that comparisons with torch hold on any torch version."""
    return fmt.with_overflow(F.torch_overflow_mode(fmt, device)) if fmt.torch_dtype is not None else fmt


def assert_same_bits(actual: torch.Tensor, expected: torch.Tensor, what: str = ""):
    """float32 tensors equal bit for bit (so -0.0 != +0.0), any NaN equal to any NaN."""
    assert actual.dtype == torch.float32 and expected.dtype == torch.float32
    assert actual.shape == expected.shape
    a, e = actual.cpu(), expected.cpu()
    same = (a.view(torch.int32) == e.view(torch.int32)) | (torch.isnan(a) & torch.isnan(e))
    if not bool(same.all()):
        i = int(torch.nonzero(~same.flatten())[0])
        raise AssertionError(f"{what}: {int((~same).sum())} of {a.numel()} differ, first: "
                             f"got {a.flatten()[i].item()!r}, expected {e.flatten()[i].item()!r}")


def random_float32_bits(n: int, seed: int) -> torch.Tensor:
    """Uniformly random 32-bit patterns viewed as float32: every exponent, subnormals, NaN and Inf."""
    g = torch.Generator().manual_seed(seed)
    return torch.randint(-(2**31), 2**31, (n,), generator=g, dtype=torch.int64).to(torch.int32).view(torch.float32)


def random_magnitudes(n: int, seed: int, lo_exp: float, hi_exp: float) -> torch.Tensor:
    """Random signed float32 values, log-uniform in magnitude between 2^lo_exp and 2^hi_exp."""
    g = torch.Generator().manual_seed(seed)
    e = torch.rand(n, generator=g, dtype=torch.float64) * (hi_exp - lo_exp) + lo_exp
    s = torch.randint(0, 2, (n,), generator=g) * 2 - 1
    return (s * torch.exp2(e)).to(torch.float32)


# ----------------------------------------------------------------------------------------------
# closed-form values and torch.finfo


def test_closed_form_ranges():
    assert F.format_range(F.FP32) == {"bits": 32, "max": (2 - 2**-23) * 2.0**127, "min_normal": 2.0**-126,
                                      "min_subnormal": 2.0**-149, "eps": 2.0**-23}
    assert F.format_range(F.FP16) == {"bits": 16, "max": 65504.0, "min_normal": 2.0**-14,
                                      "min_subnormal": 2.0**-24, "eps": 2.0**-10}
    assert F.format_range(F.BF16) == {"bits": 16, "max": (2 - 2**-7) * 2.0**127, "min_normal": 2.0**-126,
                                      "min_subnormal": 2.0**-133, "eps": 2.0**-7}
    assert F.format_range(F.FP8_E4M3) == {"bits": 8, "max": 448.0, "min_normal": 2.0**-6,
                                          "min_subnormal": 2.0**-9, "eps": 0.125}
    assert F.format_range(F.FP8_E5M2) == {"bits": 8, "max": 57344.0, "min_normal": 2.0**-14,
                                          "min_subnormal": 2.0**-16, "eps": 0.25}
    assert F.format_range(F.FP4_E2M1) == {"bits": 4, "max": 6.0, "min_normal": 1.0, "min_subnormal": 0.5, "eps": 0.5}
    assert F.representable_values(F.FP4_E2M1).tolist() == [-6, -4, -3, -2, -1.5, -1, -0.5, 0, 0.5, 1, 1.5, 2, 3, 4, 6]
    assert len(F.representable_values(F.FP8_E4M3)) == 253  # 256 codes - 2 NaN - one duplicate zero
    assert len(F.representable_values(F.FP8_E5M2)) == 247  # 256 - 6 NaN - 2 Inf - one duplicate zero


@pytest.mark.parametrize("fmt", TORCH_FORMATS, ids=ids)
def test_format_range_matches_torch_finfo(fmt):
    info = torch.finfo(fmt.torch_dtype)
    r = F.format_range(fmt)
    assert r["max"] == info.max
    assert r["min_normal"] == info.tiny == info.smallest_normal
    assert r["eps"] == info.eps
    assert r["bits"] == info.bits
    smallest = F.torch_round(torch.tensor([r["min_subnormal"]]), fmt).item()
    assert smallest == r["min_subnormal"] and F.torch_round(torch.tensor([r["min_subnormal"] / 2]), fmt).item() == 0


def test_get_format_names():
    assert F.get_format("float16") is F.FP16 and F.get_format("half") is F.FP16
    assert F.get_format("BF16") is F.BF16 and F.get_format(torch.bfloat16) is F.BF16
    assert F.get_format("e4m3") is F.FP8_E4M3 and F.get_format("float8_e4m3fn") is F.FP8_E4M3
    assert F.get_format("fp8-e5m2") is F.FP8_E5M2 and F.get_format(torch.float8_e5m2) is F.FP8_E5M2
    with pytest.raises(ValueError, match="fmt"):
        F.get_format("fp7")
    with pytest.raises(TypeError, match="fmt"):
        F.get_format(16)


def test_bad_formats_are_rejected():
    with pytest.raises(ValueError, match="exponent_bits"):
        F.FloatFormat("x", 9, 3, 7)
    with pytest.raises(ValueError, match="mantissa_bits"):
        F.FloatFormat("x", 4, 0, 7)
    with pytest.raises(ValueError, match="overflow"):
        F.FloatFormat("x", 4, 3, 7, specials="fn", overflow="inf")
    with pytest.raises(ValueError, match="specials"):
        F.FloatFormat("x", 4, 3, 7, specials="weird")


# ----------------------------------------------------------------------------------------------
# decode / compose: every code against torch's own bits


@pytest.mark.parametrize("fmt", SMALL_TORCH_FORMATS, ids=ids)
def test_decode_every_code_matches_torch(fmt, device):
    n = 2**fmt.total_bits
    codes = torch.arange(n, device=device)
    stored = codes.to(torch.uint8) if n == 256 else ((codes + 2**15) % 2**16 - 2**15).to(torch.int16)
    theirs = stored.view(fmt.torch_dtype).to(torch.float32)
    assert_same_bits(F.decode(codes, fmt), theirs, f"decode {fmt.name}")
    assert F.decode(codes, fmt).device.type == device


def test_decode_fp32_random_patterns_match_the_bits(device):
    x = random_float32_bits(200_000, seed=1).to(device)
    codes = x.view(torch.int32).to(torch.int64) & 0xFFFFFFFF
    assert_same_bits(F.decode(codes, F.FP32), x, "decode fp32")


def test_compose_special_codes():
    t = torch.tensor
    assert F.compose(t([0]), t([15]), t([7]), F.FP8_E4M3).isnan().all()   # S.1111.111 is NaN
    assert F.compose(t([0]), t([15]), t([6]), F.FP8_E4M3).item() == 448.0  # S.1111.110 is the max
    assert F.compose(t([1]), t([31]), t([0]), F.FP8_E5M2).item() == -math.inf
    assert F.compose(t([0]), t([31]), t([1]), F.FP8_E5M2).isnan().all()
    assert F.compose(t([0]), t([3]), t([1]), F.FP4_E2M1).item() == 6.0     # fp4 has no specials
    neg_zero = F.compose(t([1]), t([0]), t([0]), F.FP16)
    assert neg_zero.item() == 0.0 and torch.signbit(neg_zero).all()
    assert F.compose(t([0]), t([0]), t([1]), F.FP16).item() == 2.0**-24  # smallest subnormal
    # broadcasting of the fields
    assert F.compose(t(0), t([7, 8]), t([0]), F.FP8_E4M3).tolist() == [1.0, 2.0]


@pytest.mark.parametrize("fmt", ALL_FORMATS, ids=ids)
def test_decompose_compose_encode_decode_round_trip(fmt, device):
    x = torch.cat([random_magnitudes(5000, seed=2, lo_exp=fmt.emin - fmt.mantissa_bits - 2, hi_exp=fmt.emax + 2),
                   torch.tensor([0.0, -0.0, math.inf, -math.inf])]).to(device)
    r = F.round_to_format(x, fmt)
    s, e, m = F.decompose(x, fmt)
    assert s.dtype == e.dtype == m.dtype == torch.int64
    assert int(s.max()) <= 1 and int(e.max()) <= fmt.max_exponent_field and int(m.max()) < 2**fmt.mantissa_bits
    assert_same_bits(F.compose(s, e, m, fmt), r, "compose(decompose(x))")
    bits = F.encode(x, fmt)
    assert_same_bits(F.decode(bits, fmt), r, "decode(encode(x))")
    assert torch.equal(bits, (s << (fmt.total_bits - 1)) | (e << fmt.mantissa_bits) | m)


@pytest.mark.parametrize("fmt", TORCH_FORMATS, ids=ids)
def test_encode_matches_torch_bits(fmt, device):
    x = torch.cat([random_float32_bits(100_000, seed=3), F.probe_values(fmt, n=0) if fmt.total_bits <= 16
                   else random_magnitudes(1000, seed=4, lo_exp=-150, hi_exp=128)]).to(device)
    nan = torch.isnan(x)
    ours, theirs = F.encode(x, as_torch(fmt, device)), F.torch_encode(x, fmt)
    assert torch.equal(ours[~nan], theirs[~nan])
    # NaN has many codes: ours is the input's sign, all-ones exponent, fmt.nan_mantissa
    s, e, m = F.decompose(x[nan], fmt)
    assert bool((e == fmt.max_exponent_field).all()) and bool((m == fmt.nan_mantissa).all())
    assert torch.isnan(F.decode(ours[nan], fmt)).all()


def test_bit_string():
    assert F.bit_string(0.1, "fp16") == "0 01011 1001100110"
    assert F.bit_string(-2.0, F.FP8_E4M3, sep="|") == "1|1000|000"
    assert F.bit_string(1000.0, F.FP8_E4M3) == "0 1111 110"       # saturates to 448
    assert F.bit_string(float("nan"), F.FP8_E4M3) == "0 1111 111"
    with pytest.raises(ValueError, match="value"):
        F.bit_string(float("nan"), F.FP4_E2M1)


# ----------------------------------------------------------------------------------------------
# round_to_format against torch's casts, bit for bit


@pytest.mark.parametrize("fmt", TORCH_FORMATS, ids=ids)
def test_round_random_bit_patterns_match_torch(fmt, device):
    x = random_float32_bits(1_000_000, seed=5).to(device)
    assert_same_bits(F.round_to_format(x, as_torch(fmt, device)), F.torch_round(x, fmt), f"random patterns, {fmt.name}")


@pytest.mark.parametrize("fmt", TORCH_FORMATS, ids=ids)
def test_round_random_magnitudes_match_torch(fmt, device):
    # log-uniform over the whole range of the format and a little beyond: normals, subnormals, overflow
    x = random_magnitudes(500_000, seed=6, lo_exp=fmt.emin - fmt.mantissa_bits - 3,
                          hi_exp=min(fmt.emax + 3, 127.9)).to(device)
    assert_same_bits(F.round_to_format(x, as_torch(fmt, device)), F.torch_round(x, fmt), f"magnitudes, {fmt.name}")


@pytest.mark.parametrize("fmt", SMALL_TORCH_FORMATS, ids=ids)
def test_round_every_midpoint_matches_torch(fmt, device):
    """Every tie (ties to even), the float32 numbers on either side of it, overflow, +-0, NaN, +-Inf."""
    x = F.probe_values(fmt, n=0).to(device)
    assert_same_bits(F.round_to_format(x, as_torch(fmt, device)), F.torch_round(x, fmt), f"midpoints, {fmt.name}")


def test_round_fp32_midpoints_from_float64(device):
    """float64 -> float32 in hardware is correctly rounded: ties between float32 neighbours and their neighbours."""
    a = random_magnitudes(200_000, seed=7, lo_exp=-152, hi_exp=128).to(torch.float64)
    b = torch.nextafter(a.to(torch.float32), torch.tensor(math.inf)).to(torch.float64)
    mid = (a.to(torch.float32).double() + b) / 2
    x = torch.cat([mid, torch.nextafter(mid, torch.tensor(math.inf, dtype=torch.float64)),
                   torch.nextafter(mid, torch.tensor(0.0, dtype=torch.float64)), a]).to(device)
    assert_same_bits(F.round_to_format(x, F.FP32), x.to(torch.float32), "float64 -> fp32")


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("fmt", [F.FP8_E4M3, F.FP8_E5M2], ids=ids)
def test_round_from_half_inputs_matches_torch(fmt, dtype, device):
    x = random_magnitudes(100_000, seed=8, lo_exp=-24, hi_exp=15.9).to(dtype).to(device)
    assert_same_bits(F.round_to_format(x, as_torch(fmt, device)), F.torch_round(x, fmt), f"{dtype} -> {fmt.name}")


def test_round_closed_form_edges():
    r = lambda v, f: F.round_to_format(torch.tensor([v], dtype=torch.float64), f).item()  # noqa: E731
    # ties go to the even mantissa
    assert r(1 + 2**-11, F.FP16) == 1.0 and r(1 + 3 * 2**-11, F.FP16) == 1 + 2**-9
    assert r(1.0625, F.FP8_E4M3) == 1.0 and r(1.1875, F.FP8_E4M3) == 1.25
    # subnormals: ties at the bottom go to zero or to the even subnormal
    assert r(2.0**-25, F.FP16) == 0.0 and r(3 * 2.0**-25, F.FP16) == 2.0**-23 and r(2.0**-25 * 1.01, F.FP16) == 2.0**-24
    assert r(2.0**-10, F.FP8_E4M3) == 0.0 and r(3 * 2.0**-10, F.FP8_E4M3) == 2.0**-8
    assert r(2.0**-17, F.FP8_E5M2) == 0.0 and r(2.0**-17 * 1.01, F.FP8_E5M2) == 2.0**-16
    # overflow: IEEE formats go to Inf past max + ulp/2 (ties go to the even code, which is Inf)
    assert r(65519.99, F.FP16) == 65504.0 and r(65520.0, F.FP16) == math.inf
    assert r(61439.0, F.FP8_E5M2) == 57344.0 and r(61440.0, F.FP8_E5M2) == math.inf
    assert r(2.0**128 - 2.0**119, F.BF16) == math.inf and r(2.0**128 - 2.0**119 - 2.0**100, F.BF16) == F.BF16.max_value
    # E4M3 (torch 2.13 convention): saturate to +-448, Inf too; NaN stays NaN
    assert r(464.0, F.FP8_E4M3) == 448.0 and r(465.0, F.FP8_E4M3) == 448.0 and r(1e9, F.FP8_E4M3) == 448.0
    assert r(-math.inf, F.FP8_E4M3) == -448.0 and math.isnan(r(math.nan, F.FP8_E4M3))
    # the older convention: NaN once the rounded value passes 448 (and for Inf)
    old = F.FP8_E4M3.with_overflow("nan")
    assert r(464.0, old) == 448.0 and math.isnan(r(465.0, old)) and math.isnan(r(math.inf, old))
    # fp4 saturates
    assert r(5.0, F.FP4_E2M1) == 4.0 and r(5.01, F.FP4_E2M1) == 6.0 and r(100.0, F.FP4_E2M1) == 6.0
    assert r(0.25, F.FP4_E2M1) == 0.0 and r(0.26, F.FP4_E2M1) == 0.5


def test_round_keeps_signed_zero_and_shape(device):
    x = torch.tensor([[-0.0, 0.0], [-1e-30, 1e-30]], device=device)
    y = F.round_to_format(x, F.FP16)
    assert y.shape == (2, 2) and y.dtype == torch.float32 and y.device.type == device
    assert torch.signbit(y).tolist() == [[True, False], [True, False]] and bool((y == 0).all())
    assert F.round_to_format(torch.tensor(3.3), F.FP8_E4M3).shape == ()


def test_round_float64_is_correctly_rounded():
    """For float64 input the reference rounds the exact value once; compare with an exact (Fraction)
    oracle on inputs built to sit just off a tie, where rounding through float32 first would go wrong."""
    for fmt in (F.FP16, F.BF16, F.FP8_E4M3, F.FP8_E5M2):
        values = F.representable_values(fmt).double()
        pos = [v for v in values.tolist() if v >= 0]
        probes = []
        for lo, hi in zip(pos[:-1:7], pos[1::7]):
            mid = (lo + hi) / 2
            probes += [mid + mid * 2.0**-40, mid - mid * 2.0**-40, mid]
        x = torch.tensor(probes, dtype=torch.float64)
        ours = F.round_to_format(x, fmt).double().tolist()
        for value, got in zip(probes, ours):
            i = bisect.bisect_left(pos, value)
            lo, hi = pos[i - 1], pos[i]
            d_lo, d_hi = Fraction(value) - Fraction(lo), Fraction(hi) - Fraction(value)
            if d_lo != d_hi:
                expected = lo if d_lo < d_hi else hi
            else:  # tie: the one whose code is even
                expected = lo if int(F.encode(torch.tensor([lo]), fmt)) % 2 == 0 else hi
            assert got == expected, (fmt.name, value, got, expected)


def test_round_and_encode_reject_bad_input():
    with pytest.raises(TypeError, match="x"):
        F.round_to_format(torch.tensor([1, 2]), F.FP16)
    with pytest.raises(TypeError, match="x"):
        F.round_to_format([1.0, 2.0], F.FP16)
    with pytest.raises(ValueError, match="x"):
        F.round_to_format(torch.tensor([]), F.FP16)
    with pytest.raises(ValueError, match="x"):  # fp4 has no NaN
        F.round_to_format(torch.tensor([1.0, math.nan]), F.FP4_E2M1)
    with pytest.raises(ValueError, match="fmt"):
        F.round_to_format(torch.tensor([1.0]), "fp12")
    with pytest.raises(TypeError, match="x"):
        F.encode(torch.tensor([True]), F.FP16)
    with pytest.raises(ValueError, match="x"):
        F.decompose(torch.zeros(0, 3), F.FP8_E4M3)


def test_compose_and_decode_reject_bad_fields():
    t = torch.tensor
    with pytest.raises(ValueError, match="sign"):
        F.compose(t([2]), t([1]), t([0]), F.FP16)
    with pytest.raises(ValueError, match="exponent"):
        F.compose(t([0]), t([16]), t([0]), F.FP8_E4M3)
    with pytest.raises(ValueError, match="mantissa"):
        F.compose(t([0]), t([1]), t([8]), F.FP8_E4M3)
    with pytest.raises(ValueError, match="mantissa"):
        F.compose(t([0]), t([1]), t([-1]), F.FP8_E4M3)
    with pytest.raises(TypeError, match="sign"):
        F.compose(t([0.0]), t([1]), t([0]), F.FP16)
    with pytest.raises(ValueError, match="exponent"):
        F.compose(t([0]), t([], dtype=torch.int64), t([0]), F.FP16)
    with pytest.raises(ValueError, match="bits"):
        F.decode(t([256]), F.FP8_E5M2)
    with pytest.raises(ValueError, match="bits"):
        F.decode(t([-1]), F.FP16)
    with pytest.raises(TypeError, match="bits"):
        F.decode(t([1.0]), F.FP16)


# ----------------------------------------------------------------------------------------------
# ulp


def test_ulp_values():
    u = lambda v, f: F.ulp(torch.tensor([v], dtype=torch.float64), f).item()  # noqa: E731
    assert u(1.0, F.FP16) == 2.0**-10 and u(1.999, F.FP16) == 2.0**-10 and u(2.0, F.FP16) == 2.0**-9
    assert u(0.0, F.FP16) == 2.0**-24 and u(1e-7, F.FP16) == 2.0**-24  # subnormal spacing
    assert u(1e6, F.FP16) == 32.0  # beyond max: the spacing of the top binade
    assert u(448.0, F.FP8_E4M3) == 32.0 and u(-1.0, F.FP8_E4M3) == 0.125
    assert u(1.0, F.BF16) == 2.0**-7 and u(1.0, F.FP32) == 2.0**-23
    with pytest.raises(ValueError, match="x"):
        F.ulp(torch.tensor([1.0, math.nan]), F.FP16)
    with pytest.raises(ValueError, match="x"):
        F.ulp(torch.tensor([math.inf]), F.FP16)


# ----------------------------------------------------------------------------------------------
# hypothesis properties

f32 = st.floats(width=32, allow_nan=True, allow_infinity=True)
f32_lists = st.lists(f32, min_size=1, max_size=40)


@HYPO
@given(values=f32_lists, fmt=st.sampled_from(TORCH_FORMATS))
def test_property_equals_torch_cast(values, fmt):
    x = torch.tensor(values, dtype=torch.float32)
    assert_same_bits(F.round_to_format(x, as_torch(fmt)), F.torch_round(x, fmt), fmt.name)


@HYPO
@given(values=f32_lists, fmt=st.sampled_from(ALL_FORMATS))
def test_property_idempotent_and_odd(values, fmt):
    x = torch.tensor(values, dtype=torch.float32)
    if fmt.specials == "none":
        x = torch.nan_to_num(x, nan=0.0)
    r = F.round_to_format(x, fmt)
    assert_same_bits(F.round_to_format(r, fmt), r, "idempotent")
    assert_same_bits(F.round_to_format(-x, fmt), -r, "odd symmetry")


@HYPO
@given(values=st.lists(st.floats(allow_nan=False, allow_infinity=False, width=64), min_size=1, max_size=40),
       fmt=st.sampled_from(ALL_FORMATS))
def test_property_error_at_most_half_ulp_inside_range(values, fmt):
    x = torch.tensor(values, dtype=torch.float64)
    x = x[x.abs() <= fmt.max_value]
    if x.numel() == 0:
        return
    err = (F.round_to_format(x, fmt).double() - x).abs()
    assert bool((err <= F.ulp(x, fmt).double() / 2).all())


@HYPO
@given(a=st.floats(allow_nan=False, width=64), b=st.floats(allow_nan=False, width=64),
       fmt=st.sampled_from(ALL_FORMATS))
def test_property_monotone(a, b, fmt):
    lo, hi = sorted([a, b])
    r = F.round_to_format(torch.tensor([lo, hi], dtype=torch.float64), fmt)
    assert r[0] <= r[1]


@HYPO
@given(values=f32_lists, fmt=st.sampled_from(TORCH_FORMATS))
def test_property_bits_round_trip(values, fmt):
    x = torch.tensor(values, dtype=torch.float32)
    r = F.round_to_format(x, fmt)
    assert_same_bits(F.decode(F.encode(x, fmt), fmt), r, "decode(encode)")
    assert_same_bits(F.compose(*F.decompose(x, fmt), fmt), r, "compose(decompose)")


@HYPO
@given(values=st.lists(st.floats(width=64), min_size=1, max_size=40))
def test_property_float64_to_fp32_equals_hardware(values):
    x = torch.tensor(values, dtype=torch.float64)
    assert_same_bits(F.round_to_format(x, F.FP32), x.to(torch.float32), "float64 -> fp32")


# ----------------------------------------------------------------------------------------------
# integers and memory


def test_int_range():
    assert F.int_range(8) == (-128, 127) and F.int_range(4) == (-8, 7) and F.int_range(2) == (-2, 1)
    assert F.int_range(8, signed=False) == (0, 255) and F.int_range(4, signed=False) == (0, 15)
    assert F.int_range(1) == (-1, 0) and F.int_range(32) == (-(2**31), 2**31 - 1)
    assert all(isinstance(v, int) for v in F.int_range(16))
    for bad in (0, 65, -8):
        with pytest.raises(ValueError, match="bits"):
            F.int_range(bad)
    for bad in (8.0, True, "8", None):
        with pytest.raises(TypeError, match="bits"):
            F.int_range(bad)
    with pytest.raises(TypeError, match="signed"):
        F.int_range(8, signed="yes")


def test_model_memory_bytes():
    assert F.model_memory_bytes(100_000_000, 32) == 400_000_000
    assert F.model_memory_bytes(100_000_000, 8) == 100_000_000
    assert F.model_memory_bytes(7e9, 16) == 14 * 10**9
    assert F.model_memory_bytes(7_000_000_000, 4) == 3_500_000_000
    assert F.model_memory_bytes(3, 4) == 2          # 1.5 bytes of codes need 2 bytes
    assert F.model_memory_bytes(1000, 4.5) == 563   # 4-bit codes + a 32-bit scale per 64 weights
    assert F.model_memory_bytes(0, 8) == 0
    assert F.model_memory_bytes(7e9, 1.58) == 1_382_500_000  # 1.58 read as 158/100, not its binary neighbour
    assert F.model_memory_bytes(10**15, 1.58) == 10**15 * 158 // 800
    assert isinstance(F.model_memory_bytes(7e9, 16), int)
    for bad in (-1, 1.5, math.nan, math.inf):
        with pytest.raises(ValueError, match="num_params"):
            F.model_memory_bytes(bad, 8)
    for bad in ("7B", True, None):
        with pytest.raises(TypeError, match="num_params"):
            F.model_memory_bytes(bad, 8)
    for bad in (0, -4, 65, math.nan, math.inf):
        with pytest.raises(ValueError, match="bits_per_param"):
            F.model_memory_bytes(100, bad)
    for bad in ("8", True):
        with pytest.raises(TypeError, match="bits_per_param"):
            F.model_memory_bytes(100, bad)


def test_memory_table_and_the_seed_claims():
    rows = {r["format"]: r for r in F.memory_table(7e9)}
    assert [rows[k]["GB"] for k in ("fp32", "fp16/bf16", "int8", "int4")] == [28.0, 14.0, 7.0, 3.5]
    assert rows["fp16/bf16"]["GiB"] == pytest.approx(13.038516, abs=1e-6)
    seventy = {r["format"]: r["GB"] for r in F.memory_table(70e9)}
    assert seventy == {"fp32": 280.0, "fp16/bf16": 140.0, "int8": 70.0, "int4": 35.0}
    assert F.model_memory_bytes(70e9, 16) > 128 * F.GiB > 128 * F.GB  # "70B in BF16 fits in 128 GB": no
    assert F.model_memory_bytes(70e9, 4.5) / F.GB == pytest.approx(39.375)  # seed 003's own Q4_K_M bits
    hundred = {r["format"]: r["bytes"] for r in F.memory_table(100e6)}
    assert hundred["fp32"] == 400e6 and hundred["int8"] == 100e6 and 1 - hundred["int8"] / hundred["fp32"] == 0.75
    assert F.max_tokens_per_second(F.model_memory_bytes(7e9, 16), 2e12) == pytest.approx(142.857, abs=1e-3)
    with pytest.raises(ValueError, match="bandwidth_bytes_per_s"):
        F.max_tokens_per_second(10, 0)
    with pytest.raises(ValueError, match="model_bytes"):
        F.max_tokens_per_second(0, 1e12)


def test_cast_agreement_and_overflow_mode(device):
    x = random_magnitudes(10_000, seed=9, lo_exp=-20, hi_exp=20).to(device)
    for fmt in TORCH_FORMATS:
        assert F.cast_agreement(x, as_torch(fmt, device)) == 1.0
    assert F.torch_overflow_mode(F.FP16, device) == "inf" and F.torch_overflow_mode(F.FP8_E5M2, device) == "inf"
    assert F.torch_overflow_mode(F.FP8_E4M3, device) in ("saturate", "nan")


@pytest.mark.skipif(tuple(int(v) for v in torch.__version__.split(".")[:2]) < (2, 13),
                    reason="the course's reference follows torch 2.13; older torch gives NaN on E4M3 overflow")
def test_reference_e4m3_rule_is_torch_2_13s():
    assert F.torch_overflow_mode(F.FP8_E4M3) == F.FP8_E4M3.overflow == "saturate"


# ----------------------------------------------------------------------------------------------
# widget and plots


def test_widget_describe_and_explorer():
    pytest.importorskip("ipywidgets")
    pytest.importorskip("matplotlib")
    from course_lib.widgets.formats import bits_html, describe, format_explorer

    d = describe(0.1, "fp8_e4m3")
    assert (d["bits"], d["stored"], d["kind"], d["code"]) == ("0 0011 101", 0.1015625, "normal", 0x1D)
    assert d["abs_error"] == pytest.approx(0.0015625) and d["ulp"] == 2.0**-7
    assert describe(1000.0, "fp8_e4m3")["note"].startswith("overflow: saturated")
    assert describe(1e5, "fp16")["kind"] == "inf"
    assert describe(1e-9, "fp16")["note"].startswith("underflow")
    assert describe(2.0**-20, "fp16")["kind"] == "subnormal"
    assert describe(math.nan, "bf16")["kind"] == "nan"
    assert "0 01011 1001100110".split()[1] in bits_html(0.1, "fp16")

    box = format_explorer(0.1, "fp8_e4m3")
    assert "0x1D" in box.html.value
    box.value_text.value = -500.0
    assert "-448.0" in box.html.value and box.slider.value == pytest.approx(500.0)
    box.format_dropdown.value = "fp8_e5m2"
    assert "-512.0" in box.html.value
    box.slider.value = 3.0
    assert box.value_text.value == -3.0 and "-3.0" in box.html.value
    box.format_dropdown.value = "fp32"
    box.value_text.value = 1e-42
    assert "subnormal" in box.html.value
    box.update()


def test_plots_return_figures():
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from course_lib.plots import formats as P

    figs = [P.plot_bit_layout(), P.plot_spacing(), P.plot_value_grid(), P.plot_rounding_error(),
            P.plot_rounding_error(F.FP16, 1000, 1100), P.plot_memory({"7B": 7e9}, budgets={"24 GB": 24e9})]
    for fig in figs:
        assert isinstance(fig, matplotlib.figure.Figure) and fig.axes
        plt.close(fig)
