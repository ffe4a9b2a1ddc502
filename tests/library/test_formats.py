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


# ----------------------------------------------------------------------------------------------
# block-scaled formats: OCP MX (E8M0 scale per 32) and NVFP4 (E4M3 scale per 16, float32 per tensor)

MX_ELEMENTS = list(F.MX_ELEMENT_FORMATS.values())
E2M1_MAGNITUDES = [0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0]
MX_HYPO = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def test_fp6_and_fp4_closed_form():
    # the OCP MX v1.0 element tables: largest values, smallest normals and subnormals, emax
    assert F.format_range("e2m3") == {"bits": 6, "max": 7.5, "min_normal": 1.0, "min_subnormal": 0.125, "eps": 0.125}
    assert F.format_range("e3m2") == {"bits": 6, "max": 28.0, "min_normal": 0.25, "min_subnormal": 0.0625, "eps": 0.25}
    assert len(F.representable_values("fp6_e2m3")) == 63 == len(F.representable_values("fp6_e3m2"))  # +-0 count once
    assert F.representable_values("fp4_e2m1")[7:].tolist() == E2M1_MAGNITUDES
    assert [f.emax for f in (F.FP4_E2M1, F.FP6_E2M3, F.FP6_E3M2, F.FP8_E4M3, F.FP8_E5M2)] == [2, 2, 4, 8, 15]
    assert {n: f.max_value for n, f in F.MX_ELEMENT_FORMATS.items()} == {
        "fp8_e4m3": 448.0, "fp8_e5m2": 57344.0, "fp6_e3m2": 28.0, "fp6_e2m3": 7.5, "fp4_e2m1": 6.0}
    assert all(f.overflow == "saturate" for f in MX_ELEMENTS)


def _nearest_even(v: torch.Tensor, fmt) -> torch.Tensor:
    """Brute force: the value of ``fmt`` nearest to each of ``v`` (float64, |v| <= max), a tie going to the
    value whose code is even (mantissa bit 0): an independent check of ``round_to_format``'s arithmetic."""
    grid = F.representable_values(fmt).double()
    even = (F.encode(grid, fmt) & 1) == 0
    d = (v.reshape(-1, 1) - grid.reshape(1, -1)).abs()
    best = d.min(dim=1, keepdim=True).values
    candidates = d == best
    pick = torch.where((candidates & even).any(dim=1), (candidates & even).double().argmax(dim=1),
                       candidates.double().argmax(dim=1))
    return grid[pick].reshape(v.shape)


@pytest.mark.parametrize("fmt", [F.FP6_E2M3, F.FP6_E3M2, F.FP4_E2M1], ids=ids)
def test_small_formats_round_to_nearest_even_by_brute_force(fmt):
    x = F.probe_values(fmt, n=3000, seed=11).double()  # every value, every tie and its neighbours, random magnitudes
    x = x[torch.isfinite(x)]
    expected = torch.where(x.abs() > fmt.max_value, torch.sign(x) * fmt.max_value, x)  # saturation
    inside = x.abs() <= fmt.max_value
    expected[inside] = _nearest_even(x[inside], fmt)
    got = F.round_to_format(x, fmt).double()
    assert torch.equal(got, expected), fmt.name


def _independent_shared_exp(x: torch.Tensor, fmt, block_size: int) -> list:
    """Each block's k from Python floats and math.frexp (not the module's bit arithmetic)."""
    out = []
    for row in x.double().reshape(-1, x.shape[-1]).tolist():
        ks = []
        for start in range(0, len(row), block_size):
            amax = max(abs(v) for v in row[start:start + block_size])
            ks.append(-127 if amax == 0 else max(math.frexp(amax)[1] - 1 - fmt.emax, -127))
        out.append(ks)
    return out


def _check_mx(x: torch.Tensor, fmt, block_size: int) -> None:
    """Every property an MX quantization must have, on one input."""
    elements, k = F.mx_quantize(x, fmt, block_size)
    n = x.shape[-1]
    nb = -(-n // block_size)
    assert elements.dtype == torch.float32 and elements.shape == x.shape
    assert k.dtype == torch.int64 and k.shape == (*x.shape[:-1], nb)
    assert k.reshape(-1, nb).tolist() == _independent_shared_exp(x, fmt, block_size)
    # one shared power of two per block, and the elements on the element grid, within its range
    assert torch.equal(F.round_to_format(elements, fmt), elements) and bool((elements.abs() <= fmt.max_value).all())
    x64 = x.double()
    scale = torch.tensor([[math.ldexp(1.0, int(kk)) for kk in row for _ in range(block_size)][:n]
                          for row in k.reshape(-1, nb).tolist()], dtype=torch.float64).reshape(x.shape)
    v = x64 / scale
    # each element is the nearest element value to x / X (ties to even), saturating at the largest
    clamped = v.clamp(-fmt.max_value, fmt.max_value)
    assert torch.equal(elements.double(), _nearest_even(clamped, fmt)), "nearest even"
    # the block's largest magnitude lands in the top binade [2^emax, max] unless the scale is clamped at 2^-127
    top = elements.abs().double()
    top = torch.nn.functional.pad(top, (0, nb * block_size - n)).reshape(*x.shape[:-1], nb, block_size).amax(-1)
    unclamped = k > -127
    assert bool((top[unclamped] >= 2.0**fmt.emax).all())
    # error bound: half the top binade's spacing, or what saturation clips (the larger), times X
    c = max(2.0 ** (fmt.emax - fmt.mantissa_bits) / 2, 2.0 ** (fmt.emax + 1) - fmt.max_value)
    x_hat = F.mx_dequantize(elements, k, block_size)
    assert torch.equal(x_hat.double(), elements.double() * scale)  # exact: a small float times a power of two
    assert bool(((x_hat.double() - x64).abs() <= c * scale).all())
    normal = (v.abs() >= fmt.min_normal) & (v.abs() <= fmt.max_value)
    assert bool(((x_hat.double() - x64).abs()[normal] <= 2.0 ** -(fmt.mantissa_bits + 1) * x64.abs()[normal]).all())


@MX_HYPO
@given(values=st.lists(st.floats(min_value=-(2.0**100), max_value=2.0**100, width=32), min_size=1, max_size=70),
       fmt=st.sampled_from(MX_ELEMENTS), block_size=st.sampled_from([1, 3, 8, 32]))
def test_property_mx_quantize(values, fmt, block_size):
    _check_mx(torch.tensor(values, dtype=torch.float32), fmt, block_size)


@pytest.mark.parametrize("fmt", MX_ELEMENTS, ids=ids)
def test_mx_quantize_on_blocks_that_break_quantizers(fmt):
    g = torch.Generator().manual_seed(5)
    x = torch.randn(6, 8 * 32, generator=g, dtype=torch.float64)
    x[:, 0:32] = 0                                    # all-zero blocks
    x[:, 32:64] *= 1e-6
    x[:, 64:96] *= 1e6
    x[:, 96:128] = -1.25                              # constant
    x[:, 130] = 1e4                                   # one outlier
    x[:, 160:192] = torch.exp2(torch.randint(-30, 30, (6, 32), generator=g).double())  # powers of two
    x[:, 192:224] *= 2.0**-140                        # below E8M0's smallest scale
    x[0] = 0
    for dtype in (torch.float32, torch.float16, torch.bfloat16):
        _check_mx(x.to(dtype).clamp(-6e4, 6e4) if dtype == torch.float16 else x.to(dtype), fmt, 32)
    _check_mx(x[:, :45].float(), fmt, 32)             # a last block of 13
    _check_mx(x.reshape(2, 3, -1).float(), fmt, 16)   # leading dimensions


def _randn(shape, seed, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g) * scale


def test_mx_scale_invariance_and_short_last_block():
    x = _randn((5, 70), seed=21)
    for fmt in MX_ELEMENTS:
        e, k = F.mx_quantize(x, fmt)
        for j in (-20, 3, 17):
            e2, k2 = F.mx_quantize(x * 2.0**j, fmt)
            assert torch.equal(e2, e) and torch.equal(k2, k + j)
        padded = torch.nn.functional.pad(x, (0, 96 - 70))
        ep, kp = F.mx_quantize(padded, fmt)
        assert torch.equal(ep[:, :70], e) and torch.equal(kp, k)


def test_mx_closed_form_and_edges():
    # the notebook's hand example: max 2.9 -> k = 1 - 2 = -1; 0.6, -2.4, 0.1, 5.8 -> 0.5, -2, 0, 6
    e, k = F.mxfp4_quantize(torch.tensor([0.3, -1.2, 0.05, 2.9]), 4)
    assert e.tolist() == [0.5, -2.0, 0.0, 6.0] and k.tolist() == [-1]
    # ties to even on the E2M1 grid (k = 0)
    e, k = F.mxfp4_quantize(torch.tensor([4.0, 0.75, 1.25, 1.75, 2.5, 3.5, 5.0, 0.25, -0.75, -3.5]))
    assert k.tolist() == [0] and e.tolist() == [4.0, 1.0, 1.0, 2.0, 2.0, 4.0, 4.0, 0.0, -1.0, -4.0]
    # zeros, E8M0's smallest scale, and E5M2 saturating at 57344 instead of overflowing to Inf
    e, k = F.mx_quantize(torch.zeros(3, 40), "fp8_e4m3")
    assert k.tolist() == [[-127, -127]] * 3 and not bool(e.any())
    e, k = F.mx_quantize(torch.tensor([65000.0, 1.0]), "e5m2")
    assert k.tolist() == [0] and e.tolist() == [57344.0, 1.0]
    e, k = F.mx_quantize(torch.tensor([460.0, 3.0]), "fp8_e4m3")
    assert k.tolist() == [0] and e.tolist() == [448.0, 3.0]          # 460 in [256, 512) saturates at 448
    # the value just below a power of two belongs to the binade below it (float32 log2 would say 20)
    e, k = F.mxfp4_quantize(torch.tensor([2.0**20 - 2.0**-4]))
    assert k.tolist() == [17] and e.tolist() == [6.0]
    # a float64 block beyond E8M0's largest scale has no MX representation
    with pytest.raises(ValueError, match="x"):
        F.mx_quantize(torch.tensor([2.0**200], dtype=torch.float64), "fp4_e2m1")
    assert F.mx_quantize(torch.tensor([2.0**127], dtype=torch.float64), "fp4_e2m1")[1].tolist() == [125]


def test_mx_and_nvfp4_reject_bad_input():
    with pytest.raises(ValueError, match="element_format"):
        F.mx_quantize(torch.ones(4), "fp16")
    with pytest.raises(ValueError, match="element_format"):
        F.mx_quantize(torch.ones(4), "fp9")
    with pytest.raises(ValueError, match="block_size"):
        F.mx_quantize(torch.ones(4), "fp4_e2m1", 0)
    with pytest.raises(ValueError, match="x"):
        F.mxfp4_quantize(torch.tensor(1.0))
    with pytest.raises(ValueError, match="x"):
        F.nvfp4_quantize(torch.tensor([1.0, math.inf]))
    e, k = F.mx_quantize(torch.ones(2, 40), "fp4_e2m1")
    with pytest.raises(ValueError, match="shared_exp"):
        F.mx_dequantize(e, k[:, :1])
    with pytest.raises(ValueError, match="shared_exp"):
        F.mx_dequantize(e, k + 300)
    with pytest.raises(TypeError, match="shared_exp"):
        F.mx_dequantize(e, k.float())
    e, s, t = F.nvfp4_quantize(torch.ones(2, 40))
    with pytest.raises(ValueError, match="block_scales"):
        F.nvfp4_dequantize(e, -s, t)
    with pytest.raises(ValueError, match="tensor_scale"):
        F.nvfp4_dequantize(e, s, torch.zeros(()))
    with pytest.raises(ValueError, match="fmt"):
        F.block_format_bits("mxfp5")
    with pytest.raises(ValueError, match="scale"):
        F.BlockFormat("bad", F.FP4_E2M1, 32, scale="e4m3")


def test_block_format_bits_from_the_layouts():
    bits = {name: F.block_format_bits(name) for name in F.BLOCK_FORMATS}
    assert bits == {"mxfp8_e4m3": 8.25, "mxfp8_e5m2": 8.25, "mxfp6_e3m2": 6.25, "mxfp6_e2m3": 6.25, "mxfp4": 4.25,
                    "nvfp4": 4.5}
    assert F.block_format_bits("nvfp4", numel=384 * 384) == 4.5 + 32 / (384 * 384)
    assert F.block_format_bits("mxfp4", numel=64) == 4.25  # no per-tensor scale
    # bytes per block, as llama.cpp's gguf package lays MXFP4 out: one E8M0 byte + 16 bytes of codes per 32
    assert F.block_format_bits("mxfp4") * 32 / 8 == 17


def test_block_fake_quantize_is_quantize_then_dequantize(device):
    x = _randn((4, 96), seed=3, scale=0.05).to(device)
    for name, fmt in F.BLOCK_FORMATS.items():
        got = F.block_fake_quantize(x, name)
        if fmt.scale == "e4m3":
            expected = F.nvfp4_dequantize(*F.nvfp4_quantize(x))
        else:
            expected = F.mx_dequantize(*F.mx_quantize(x, fmt.element, fmt.block_size), fmt.block_size)
        assert got.device == x.device and torch.equal(got, expected)
        assert torch.equal(got.cpu(), F.block_fake_quantize(x.cpu(), fmt))  # same on every device


# -- against llama.cpp's gguf package


def _mxfp4_gguf_bytes(elements: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """The course's MXFP4 in gguf's block layout: the E8M0 byte k + 127, then 16 bytes whose low nibble is
    element i and high nibble element i + 16 (E2M1 codes; gguf writes +0 for a zero, so -0.0 becomes code 0)."""
    codes = F.encode(elements, F.FP4_E2M1)
    codes = torch.where(elements == 0, 0, codes).reshape(*k.shape, 32)
    packed = codes[..., :16] | (codes[..., 16:] << 4)
    return torch.cat([(k + 127).unsqueeze(-1), packed], dim=-1).to(torch.uint8).reshape(*k.shape[:-1], -1)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=["fp32", "fp16"])
def test_mxfp4_bytes_and_values_match_gguf(dtype):
    gguf = pytest.importorskip("gguf")
    QT = gguf.GGMLQuantizationType
    g = torch.Generator().manual_seed(7)
    mags = torch.exp2(torch.randint(-14, 8, (12, 10, 1), generator=g).float())  # ragged magnitudes from block to block
    x = (torch.randn(12, 10, 32, generator=g) * mags).reshape(12, 320)
    x[:, 32:64] = 0                                  # all-zero blocks
    x[:, 64:96] = 0.37                               # constant
    x[:, 100] = 50.0                                 # one outlier
    x[3] = 0
    x = x.to(dtype)
    elements, k = F.mx_quantize(x, "fp4_e2m1")
    theirs = gguf.quants.quantize(x.numpy(), QT.MXFP4)
    assert torch.equal(_mxfp4_gguf_bytes(elements, k), torch.from_numpy(theirs))
    ours = F.mx_dequantize(elements, k)
    assert torch.equal(ours, torch.from_numpy(gguf.quants.dequantize(theirs, QT.MXFP4)))


def test_mxfp4_ties_follow_the_spec_where_gguf_rounds_towards_zero():
    gguf = pytest.importorskip("gguf")
    QT = gguf.GGMLQuantizationType
    x = torch.zeros(1, 32)
    x[0, :10] = torch.tensor([4.0, 0.75, 1.75, 3.5, -0.75, -3.5, 1.25, 2.5, 5.0, 0.25])  # k = 0: x / X = x
    ours = F.mx_dequantize(*F.mx_quantize(x, "fp4_e2m1"))[0, :10]
    theirs = torch.from_numpy(gguf.quants.dequantize(gguf.quants.quantize(x.numpy(), QT.MXFP4), QT.MXFP4))[0, :10]
    assert ours.tolist() == [4.0, 1.0, 2.0, 4.0, -1.0, -4.0, 1.0, 2.0, 4.0, 0.0]      # ties to even
    assert theirs.tolist() == [4.0, 0.5, 1.5, 3.0, -0.5, -3.0, 1.0, 2.0, 4.0, 0.0]    # ties to the smaller magnitude


def test_mxfp4_random_gguf_bytes_decode_like_gguf():
    gguf = pytest.importorskip("gguf")
    QT = gguf.GGMLQuantizationType
    g = torch.Generator().manual_seed(8)
    blocks = torch.randint(0, 256, (64, 17), generator=g, dtype=torch.uint8)
    blocks[:, 0] = torch.randint(1, 255, (64,), generator=g, dtype=torch.uint8)  # E8M0 bytes 1..254 (0xFF is NaN)
    codes = torch.cat([blocks[:, 1:] & 15, blocks[:, 1:] >> 4], dim=1).to(torch.int64)
    elements = F.decode(codes, F.FP4_E2M1)
    k = blocks[:, :1].to(torch.int64) - 127
    theirs = torch.from_numpy(gguf.quants.dequantize(blocks.numpy(), QT.MXFP4)).reshape(64, 32)
    assert torch.equal(F.mx_dequantize(elements, k), theirs)


def _nvfp4_gguf_bytes(elements: torch.Tensor, block_scales: torch.Tensor) -> torch.Tensor:
    """The course's NVFP4 in gguf's layout: per 64 values, the four E4M3 scale bytes, then for each block of 16
    8 bytes whose low nibble is element i and high nibble element i + 8 (E2M1 codes)."""
    rows = elements.shape[0]
    codes = F.encode(elements, F.FP4_E2M1).reshape(rows, -1, 4, 16)
    packed = (codes[..., :8] | (codes[..., 8:] << 4)).reshape(rows, -1, 32)
    scale_bytes = F.encode(block_scales, F.FP8_E4M3).reshape(rows, -1, 4)
    return torch.cat([scale_bytes, packed], dim=-1).to(torch.uint8).reshape(rows, -1)


def test_nvfp4_dequantize_matches_gguf_on_the_same_bytes():
    gguf = pytest.importorskip("gguf")
    QT = gguf.GGMLQuantizationType
    g = torch.Generator().manual_seed(9)
    mags = torch.exp2(torch.randint(-12, 6, (8, 12, 1), generator=g).float())
    x = (torch.randn(8, 12, 16, generator=g) * mags).reshape(8, 192)
    x[:, 16:32] = 0
    x[:, 40] = 300.0
    x[:, 64:80] *= 1e-6                                # block scales that are E4M3 subnormals or 0
    elements, block_scales, tensor_scale = F.nvfp4_quantize(x)
    blocks = _nvfp4_gguf_bytes(elements, block_scales)
    theirs = gguf.quants.dequantize(blocks.numpy(), QT.NVFP4) * tensor_scale.numpy()  # gguf keeps no tensor scale
    assert torch.equal(F.nvfp4_dequantize(elements, block_scales, tensor_scale), torch.from_numpy(theirs))
    # and any bytes gguf can read (E4M3 scale bytes 0..0x7E, any codes) decode to the same values
    rand = torch.randint(0, 256, (16, 36), generator=g, dtype=torch.uint8)
    rand[:, :4] = torch.randint(0, 0x7F, (16, 4), generator=g, dtype=torch.uint8)
    scales = F.decode(rand[:, :4].to(torch.int64), F.FP8_E4M3)
    nib = rand[:, 4:].reshape(16, 4, 8).to(torch.int64)
    codes = torch.cat([nib & 15, nib >> 4], dim=-1).reshape(16, 64)
    got = F.nvfp4_dequantize(F.decode(codes, F.FP4_E2M1), scales, torch.tensor(1.0))
    assert torch.equal(got, torch.from_numpy(gguf.quants.dequantize(rand.numpy(), QT.NVFP4)))


@MX_HYPO
@given(values=st.lists(st.floats(min_value=-(2.0**100), max_value=2.0**100, width=32), min_size=1, max_size=60))
def test_property_nvfp4(values):
    x = torch.tensor(values, dtype=torch.float32)
    elements, block_scales, tensor_scale = F.nvfp4_quantize(x)
    assert elements.shape == x.shape and block_scales.shape == (-(-x.numel() // 16),) and tensor_scale.shape == ()
    assert torch.equal(F.round_to_format(elements, F.FP4_E2M1), elements)            # E2M1 elements
    assert torch.equal(F.round_to_format(block_scales, F.FP8_E4M3), block_scales)    # E4M3 block scales
    assert bool((block_scales >= 0).all() & (block_scales <= 448).all())
    amax = x.abs().max().item()
    s_t = tensor_scale.item()
    assert s_t == (max(torch.tensor(amax / 2688, dtype=torch.float32).item(), 2.0**-149) if amax else 1.0)
    x_hat = F.nvfp4_dequantize(elements, block_scales, tensor_scale).double()
    per = block_scales.double().repeat_interleave(16)[: x.numel()] * s_t
    assert torch.equal(x_hat, (elements.double() * per).float().double())
    # the largest magnitude lands on 6 * 448 * s_t: it comes back to float32 precision while s_t is a normal
    # float32; a subnormal s_t leaves only the E4M3 block scale's precision (1/16)
    tol = 2.0**-20 if s_t >= 2.0**-126 else 2.0**-4
    assert abs(x_hat.abs().max().item() - amax) <= tol * amax + 2.0**-149
    # a block whose scale is a normal E4M3 number errs by at most one scale step s_b * s_t
    err = (x_hat - x.double()).abs()
    normal = per >= 2.0**-6 * s_t
    assert bool((err[normal] <= per[normal] * (1 + 2.0**-20)).all())


def test_nvfp4_closed_form():
    x = torch.tensor([2688.0, -1.0, 0.3, 100.0] + [0.0] * 12 + [0.01] * 16)
    elements, block_scales, tensor_scale = F.nvfp4_quantize(x)
    assert tensor_scale.item() == 1.0                                # 2688 / (6 * 448)
    assert block_scales.tolist() == [448.0, F.round_to_format(torch.tensor([0.01 / 6]), F.FP8_E4M3).item()]
    assert elements[:4].tolist() == [6.0, -0.0, 0.0, 0.0]            # 1 / 448 and 100 / 448 = 0.22 round to 0
    s = block_scales[1].item()
    assert elements[16:].tolist() == [F.round_to_format(torch.tensor([0.01 / s]), F.FP4_E2M1).item()] * 16
    e, s, t = F.nvfp4_quantize(torch.zeros(3, 20))
    assert t.item() == 1.0 and not bool(e.any()) and not bool(s.any())
