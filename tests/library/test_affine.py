"""course_lib.affine: closed-form values, PyTorch's quantizers as independent references, properties."""

from __future__ import annotations

import math
import random
import warnings
from fractions import Fraction

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from course_lib import affine  # noqa: E402
from course_lib.plots import affine as plots  # noqa: E402
from course_lib.widgets import affine as widgets  # noqa: E402

F32 = torch.float32
SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

# (symmetric, signed, restricted) combinations the course uses
SCHEMES = [(False, False, False), (False, True, False), (True, True, False), (True, True, True),
           (True, False, False), (True, False, True)]


def _params(x, bits, symmetric, signed, restricted):
    qmin, qmax = affine.qrange(bits, signed, restricted)
    scale, zp = affine.compute_scale_zero_point(x.min(), x.max(), qmin, qmax, symmetric=symmetric)
    return scale, zp, qmin, qmax


finite_values = st.lists(
    st.floats(min_value=-1e4, max_value=1e4, allow_nan=False, allow_infinity=False, width=32),
    min_size=1, max_size=64)
schemes = st.sampled_from(SCHEMES)
bit_widths = st.integers(min_value=2, max_value=16)


# ----------------------------------------------------------------------------------------------
# qrange


@pytest.mark.parametrize("bits", range(2, 17))
def test_qrange_closed_form(bits):
    assert affine.qrange(bits, signed=True) == (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1)
    assert affine.qrange(bits, signed=False) == (0, 2**bits - 1)
    assert affine.qrange(bits, signed=True, restricted=True) == (-(2 ** (bits - 1)) + 1, 2 ** (bits - 1) - 1)
    assert affine.qrange(bits, signed=False, restricted=True) == (1, 2**bits - 1)


def test_qrange_int8_and_int4():
    assert affine.qrange(8, True) == (-128, 127)
    assert affine.qrange(8, True, True) == (-127, 127)
    assert affine.qrange(8, False) == (0, 255)
    assert affine.qrange(4, True) == (-8, 7)


@pytest.mark.parametrize("bits", [1, 0, 17, -3, 8.0, True, "8", None])
def test_qrange_rejects_bits(bits):
    with pytest.raises((TypeError, ValueError), match="bits"):
        affine.qrange(bits, True)


def test_qrange_rejects_non_bool_flags():
    with pytest.raises(TypeError, match="signed"):
        affine.qrange(8, 1)
    with pytest.raises(TypeError, match="restricted"):
        affine.qrange(8, True, "yes")


# ----------------------------------------------------------------------------------------------
# scale and zero point


def test_seed_001_example():
    """Seed 001: [-1.5, 0, 0.5, 1, 1.5] on 8 bits. Every value except 0 and 1 is an exact tie."""
    x = torch.tensor([-1.5, 0.0, 0.5, 1.0, 1.5])
    scale, zp = affine.compute_scale_zero_point(x.min(), x.max(), 0, 255)
    assert scale.dtype == F32 and zp.dtype == torch.int32 and scale.dim() == 0 and zp.dim() == 0
    assert scale.item() == (torch.tensor(3.0) / 255).item()
    assert int(zp) == 128  # -min/scale = 127.5, a tie: 0 - round(-127.5) = 128 (the seed says 127)
    q = affine.quantize(x, scale, zp, 0, 255)
    assert q.tolist() == [0, 128, 170, 213, 255]  # the seed says [0, 127, 170, 212, 255]
    deq = affine.dequantize(q, scale, zp)
    expected = torch.tensor([-128, 0, 42, 85, 127], dtype=F32) * scale
    assert torch.equal(deq, expected)
    # signed int8: the same grid, shifted by 128
    scale_s, zp_s = affine.compute_scale_zero_point(x.min(), x.max(), -128, 127)
    assert int(zp_s) == 0 and torch.equal(scale_s, scale)
    assert affine.quantize(x, scale_s, zp_s, -128, 127).tolist() == [-128, 0, 42, 85, 127]


def test_seed_004_example():
    """Seed 004: [-2.1, 0.5, 1.8] with its scale 0.015 and zero point 140, then with min-max parameters."""
    x = torch.tensor([-2.1, 0.5, 1.8])
    q = affine.quantize(x, 0.015, 140, 0, 255)
    assert q.tolist() == [0, 173, 255]  # round: [-140, 33, 120] + 140 = [0, 173, 260]; only 260 clips
    deq = affine.dequantize(q, 0.015, 140)
    assert torch.allclose(deq, torch.tensor([-2.1, 0.495, 1.725]), atol=1e-6)
    assert abs(deq[2].item() - 1.8) > 0.07  # clipping error 0.075 = 5 scales, far above scale/2
    scale, zp = affine.compute_scale_zero_point(x.min(), x.max(), 0, 255)
    assert abs(scale.item() - 3.9 / 255) < 1e-8 and int(zp) == 137
    q = affine.quantize(x, scale, zp, 0, 255)
    assert q.tolist() == [0, 170, 255]
    err = (x - affine.dequantize(q, scale, zp)).abs()
    assert bool((err <= scale / 2 + 1e-6).all())


def test_symmetric_closed_form():
    scale, zp = affine.compute_scale_zero_point(torch.tensor(-2.0), torch.tensor(1.0), -127, 127, symmetric=True)
    assert scale.item() == (torch.tensor(2.0) / 127).item() and int(zp) == 0
    scale, zp = affine.compute_scale_zero_point(-2.0, 1.0, -128, 127, symmetric=True)
    assert scale.item() == (torch.tensor(2.0) / 127.5).item() and int(zp) == 0
    scale, zp = affine.compute_scale_zero_point(-2.0, 1.0, 0, 255, symmetric=True)
    assert int(zp) == 128


def test_range_is_widened_to_contain_zero():
    s1, z1 = affine.compute_scale_zero_point(2.0, 3.0, 0, 255)  # all positive: range becomes [0, 3]
    assert s1.item() == pytest.approx(3.0 / 255) and int(z1) == 0
    s2, z2 = affine.compute_scale_zero_point(-3.0, -2.0, 0, 255)  # all negative: range becomes [-3, 0]
    assert s2.item() == pytest.approx(3.0 / 255) and int(z2) == 255
    assert affine.quantize(torch.zeros(1), s2, z2, 0, 255).item() == 255
    assert affine.dequantize(torch.tensor([255]), s2, z2).item() == 0.0


@pytest.mark.parametrize("symmetric, signed, restricted", SCHEMES)
def test_all_zero_tensor_has_a_finite_nonzero_scale(symmetric, signed, restricted, device):
    x = torch.zeros(7, device=device)
    scale, zp, qmin, qmax = _params(x, 8, symmetric, signed, restricted)
    assert scale.item() == affine.SCALE_EPS and scale.device.type == device
    out = affine.fake_quantize(x, scale, zp, qmin, qmax)
    assert torch.equal(out, x)


@pytest.mark.parametrize("value", [3.25, -0.7, 1e-30, 6e4])
@pytest.mark.parametrize("symmetric, signed, restricted", SCHEMES)
def test_constant_tensor_is_finite_and_close(value, symmetric, signed, restricted, device):
    x = torch.full((5, 3), value, device=device)
    scale, zp, qmin, qmax = _params(x, 4, symmetric, signed, restricted)
    out = affine.fake_quantize(x, scale, zp, qmin, qmax)
    assert bool(torch.isfinite(out).all())
    assert float((out - x).abs().max()) <= scale.item() / 2 * (1 + 1e-5) + 1e-6 * abs(value)


def test_scale_floor_for_tiny_ranges():
    scale, _ = affine.compute_scale_zero_point(0.0, 1e-38, 0, 255)
    assert scale.item() == affine.SCALE_EPS


def test_huge_range_is_rejected_not_infinite():
    with pytest.raises(ValueError, match="x_max"):
        affine.compute_scale_zero_point(-3e38, 3e38, 0, 255)


@pytest.mark.parametrize("kwargs, exc, word", [
    (dict(x_min=float("nan"), x_max=1.0), ValueError, "x_min"),
    (dict(x_min=-1.0, x_max=float("inf")), ValueError, "x_max"),
    (dict(x_min=1.0, x_max=-1.0), ValueError, "x_max"),
    (dict(x_min=torch.tensor(-1), x_max=torch.tensor(1)), TypeError, "x_min"),
    (dict(x_min=torch.tensor([-1.0, 0.0]), x_max=1.0), ValueError, "x_min"),
    (dict(x_min="a", x_max=1.0), TypeError, "x_min"),
    (dict(x_min=-1.0, x_max=1.0, qmin=5, qmax=5), ValueError, "qmin"),
    (dict(x_min=-1.0, x_max=1.0, qmin=10, qmax=3), ValueError, "qmin"),
    (dict(x_min=-1.0, x_max=1.0, qmin=0.0, qmax=255), TypeError, "qmin"),
    (dict(x_min=-1.0, x_max=1.0, symmetric="no"), TypeError, "symmetric"),
])
def test_compute_scale_zero_point_rejects(kwargs, exc, word):
    args = dict(qmin=0, qmax=255)
    args.update(kwargs)
    with pytest.raises(exc, match=word):
        affine.compute_scale_zero_point(**args)


OBSERVER_CONFIGS = [
    # (torch dtype, qscheme, quant_min, quant_max, symmetric)
    (torch.quint8, torch.per_tensor_affine, 0, 255, False),
    (torch.qint8, torch.per_tensor_affine, -128, 127, False),
    (torch.qint8, torch.per_tensor_symmetric, -128, 127, True),
    (torch.qint8, torch.per_tensor_symmetric, -127, 127, True),
    (torch.quint8, torch.per_tensor_symmetric, 0, 255, True),
    (torch.quint8, torch.per_tensor_affine, 0, 15, False),
    (torch.qint8, torch.per_tensor_symmetric, -8, 7, True),
]


@SETTINGS
@given(values=finite_values, config=st.sampled_from(OBSERVER_CONFIGS))
def test_matches_torch_minmax_observer(values, config):
    from torch.ao.quantization import MinMaxObserver

    dtype, qscheme, qmin, qmax, symmetric = config
    x = torch.tensor(values)
    custom = {} if (qmin, qmax) in ((0, 255), (-128, 127)) else {"quant_min": qmin, "quant_max": qmax}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        observer = MinMaxObserver(dtype=dtype, qscheme=qscheme, **custom)
        observer(x)
        t_scale, t_zp = observer.calculate_qparams()
    scale, zp = affine.compute_scale_zero_point(x.min(), x.max(), qmin, qmax, symmetric=symmetric)
    assert scale.item() == t_scale.item()
    assert int(zp) == int(t_zp)


# ----------------------------------------------------------------------------------------------
# quantize / dequantize


def test_round_half_to_even():
    x = torch.tensor([0.5, 1.5, 2.5, -0.5, -1.5, -2.5, 0.49999997])
    assert affine.quantize(x, 1.0, 0, -128, 127).tolist() == [0, 2, 2, 0, -2, -2, 0]


def test_round_before_adding_the_zero_point():
    # round(2.5) + 1 = 3, whereas round(2.5 + 1) = 4: the order matters for ties when z is odd
    assert affine.quantize(torch.tensor([2.5]), 1.0, 1, -128, 127).item() == 3
    assert torch.fake_quantize_per_tensor_affine(torch.tensor([2.5]), 1.0, 1, -128, 127).item() == 2.0


def test_multiplies_by_the_float32_reciprocal():
    # with scale = float32(3/255): x / scale = 12.5 exactly (a tie, rounds to 12), x * (1/scale) = 12.500001
    scale = torch.tensor(3.0) / 255
    x = torch.tensor([0.14705882966518402, 0.7235293984413147])
    assert (x / scale).tolist()[0] == 12.5
    assert affine.quantize(x, scale, 0, -128, 127).tolist() == [13, 62]
    torch_fq = torch.fake_quantize_per_tensor_affine(x, scale.item(), 0, -128, 127)
    assert torch.equal(affine.fake_quantize(x, scale, 0, -128, 127), torch_fq)


def test_clipping_saturates_at_the_code_range():
    x = torch.tensor([-1e30, -5.0, 5.0, 1e30])
    assert affine.quantize(x, 0.01, 3, -8, 7).tolist() == [-8, -8, 7, 7]


def test_dtypes_and_devices(device):
    for dtype in (torch.float16, torch.bfloat16, torch.float32, torch.float64):
        x = torch.linspace(-2, 2, 11, dtype=dtype, device=device)
        q = affine.quantize(x, torch.tensor(0.02), torch.tensor(3, dtype=torch.int32), -128, 127)
        assert q.dtype == torch.int32 and q.device.type == device
        d = affine.dequantize(q, torch.tensor(0.02), 3)
        assert d.dtype == F32 and d.device.type == device
        expected = affine.quantize(x.to(F32).cpu(), 0.02, 3, -128, 127)
        assert torch.equal(q.cpu(), expected)


@pytest.mark.parametrize("code_dtype", [torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64])
def test_dequantize_accepts_every_integer_dtype(code_dtype):
    q = torch.tensor([0, 5, 100], dtype=code_dtype)
    assert affine.dequantize(q, 0.5, 4).tolist() == [-2.0, 0.5, 48.0]


@SETTINGS
@given(values=finite_values, bits=bit_widths, scheme=schemes)
def test_error_at_most_half_a_scale_inside_the_range(values, bits, scheme, device):
    x = torch.tensor(values, device=device)
    scale, zp, qmin, qmax = _params(x, bits, *scheme)
    err = (x.double() - affine.fake_quantize(x, scale, zp, qmin, qmax).double()).abs()
    # half a scale, plus float32 rounding of x * (1/scale) and of the dequantized value
    bound = scale.double() / 2 + 3e-7 * (x.double().abs() + scale.double())
    assert bool((err <= bound).all()), f"max error {err.max().item()} > scale/2 = {scale.item() / 2}"


@SETTINGS
@given(values=finite_values, bits=bit_widths, scheme=schemes)
def test_requantizing_the_dequantized_values_gives_the_same_codes(values, bits, scheme, device):
    x = torch.tensor(values, device=device)
    scale, zp, qmin, qmax = _params(x, bits, *scheme)
    q = affine.quantize(x, scale, zp, qmin, qmax)
    again = affine.quantize(affine.dequantize(q, scale, zp), scale, zp, qmin, qmax)
    assert torch.equal(again, q)
    assert bool(((q >= qmin) & (q <= qmax)).all())


@SETTINGS
@given(values=finite_values, bits=st.integers(2, 16), scheme=schemes, stretch=st.floats(0.1, 3.0))
def test_matches_torch_fake_quantize_bit_exact(values, bits, scheme, stretch, device):
    symmetric, signed, restricted = scheme
    x = torch.tensor(values, device=device)
    qmin, qmax = affine.qrange(bits, signed, restricted)
    # a range that may clip (stretch < 1) or leave room (stretch > 1)
    scale, zp = affine.compute_scale_zero_point(x.min() * stretch, x.max() * stretch, qmin, qmax, symmetric)
    ours = affine.fake_quantize(x, scale, zp, qmin, qmax)
    theirs = torch.fake_quantize_per_tensor_affine(x, scale.item(), int(zp), qmin, qmax)
    theirs_t = torch.fake_quantize_per_tensor_affine(x, scale.reshape(1), zp.reshape(1), qmin, qmax)
    assert torch.equal(ours, theirs)
    assert torch.equal(ours, theirs_t)


def test_matches_torch_fake_quantize_on_many_values(device):
    gen = torch.Generator().manual_seed(0)
    x = (torch.randn(200_000, generator=gen) * 3).to(device)
    for signed, symmetric in [(False, False), (True, True), (True, False)]:
        scale, zp, qmin, qmax = _params(x, 8, symmetric, signed, False)
        ours = affine.fake_quantize(x, scale, zp, qmin, qmax)
        assert torch.equal(ours, torch.fake_quantize_per_tensor_affine(x, scale.item(), int(zp), qmin, qmax))


def test_close_to_torch_quantize_per_tensor():
    """torch.quantize_per_tensor may add the zero point before rounding (fbgemm's fused x*inv+z): rare +-1."""
    if not hasattr(torch, "quantize_per_tensor"):
        pytest.skip("this torch has no quantize_per_tensor")
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(500_000, generator=gen) * 3
    for dtype, signed in [(torch.quint8, False), (torch.qint8, True)]:
        scale, zp, qmin, qmax = _params(x, 8, False, signed, False)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            theirs = torch.quantize_per_tensor(x, scale.item(), int(zp), dtype).int_repr().to(torch.int32)
        ours = affine.quantize(x, scale, zp, qmin, qmax)
        diff = (ours - theirs).abs()
        assert int(diff.max()) <= 1
        assert (diff > 0).float().mean().item() < 1e-4


@pytest.mark.parametrize("args, exc, word", [
    ((torch.tensor([1, 2, 3]), 0.1, 0, -128, 127), TypeError, "x"),
    ((torch.tensor([1.0, float("nan")]), 0.1, 0, -128, 127), ValueError, "x"),
    ((torch.tensor([1.0, float("inf")]), 0.1, 0, -128, 127), ValueError, "x"),
    ((torch.tensor([]), 0.1, 0, -128, 127), ValueError, "x"),
    (([1.0, 2.0], 0.1, 0, -128, 127), TypeError, "x"),
    ((torch.ones(3), 0.0, 0, -128, 127), ValueError, "scale"),
    ((torch.ones(3), -0.1, 0, -128, 127), ValueError, "scale"),
    ((torch.ones(3), float("nan"), 0, -128, 127), ValueError, "scale"),
    ((torch.ones(3), 1e-40, 0, -128, 127), ValueError, "scale"),
    ((torch.ones(3), torch.tensor([0.1, 0.2]), 0, -128, 127), ValueError, "scale"),
    ((torch.ones(3), 0.1, 0.5, -128, 127), TypeError, "zero_point"),
    ((torch.ones(3), 0.1, torch.tensor(1.0), -128, 127), TypeError, "zero_point"),
    ((torch.ones(3), 0.1, 300, 0, 255), ValueError, "zero_point"),
    ((torch.ones(3), 0.1, 0, 127, -128), ValueError, "qmin"),
    ((torch.ones(3), 0.1, 0, 0, 0), ValueError, "qmin"),
    ((torch.ones(3), 0.1, 0, -(2**20), 127), ValueError, "qmin"),
    ((torch.ones(3), 0.1, 0, 0, 255.0), TypeError, "qmax"),
])
def test_quantize_rejects(args, exc, word):
    with pytest.raises(exc, match=word):
        affine.quantize(*args)


@pytest.mark.parametrize("args, exc, word", [
    ((torch.tensor([1.0, 2.0]), 0.1, 0), TypeError, "q"),
    ((torch.tensor([], dtype=torch.int32), 0.1, 0), ValueError, "q"),
    ((torch.tensor([1, 2]), 0.0, 0), ValueError, "scale"),
    ((torch.tensor([1, 2]), 0.1, 1.5), TypeError, "zero_point"),
])
def test_dequantize_rejects(args, exc, word):
    with pytest.raises(exc, match=word):
        affine.dequantize(*args)


def test_representable_range():
    assert affine.representable_range(0.5, 2, 0, 15) == (-1.0, 6.5)


# ----------------------------------------------------------------------------------------------
# integer matmul


def test_int32_matmul_matches_int64(device):
    gen = torch.Generator().manual_seed(0)
    a = torch.randint(-128, 128, (9, 37), generator=gen, dtype=torch.int8)
    b = torch.randint(0, 256, (37, 5), generator=gen).to(torch.uint8)
    out = affine.int32_matmul(a.to(device), b.to(device))
    assert out.dtype == torch.int32 and out.device.type == device
    assert torch.equal(out.cpu().to(torch.int64), a.to(torch.int64) @ b.to(torch.int64))


def test_blocked_int32_matmul_equals_torch_int32_matmul_including_wraparound():
    gen = torch.Generator().manual_seed(2)
    a = torch.randint(-30000, 30000, (13, 50), generator=gen, dtype=torch.int32)
    b = torch.randint(-30000, 30000, (50, 7), generator=gen, dtype=torch.int32)
    native = a @ b  # overflows and wraps
    wide = a.to(torch.int64) @ b.to(torch.int64)
    assert not torch.equal(native.to(torch.int64), wide)
    assert torch.equal(affine._int32_matmul_blocked(a, b, max_elements=700), native)
    assert torch.equal(native.to(torch.int64), (wide + 2**31) % 2**32 - 2**31)


def test_int32_headroom_bound_is_tight():
    k = affine.int32_max_inner_dim(128, 128)
    assert k == 2**17 - 1 == 131071
    assert k * 128 * 128 <= 2**31 - 1 < (k + 1) * 128 * 128
    assert affine.int32_max_inner_dim(127, 127) == 133144
    assert affine.int32_max_inner_dim(255, 255) == 33025
    # one more term than the bound allows really does wrap around
    a = torch.full((1, k + 1), -128, dtype=torch.int32)
    assert (a @ a.T).item() == -(2**31)


def _random_operands(gen, m, k, n, bits, symmetric, signed):
    a = torch.randn(m, k, generator=gen) * 2 + 0.5
    b = torch.randn(k, n, generator=gen)
    qmin, qmax = affine.qrange(bits, signed, restricted=symmetric and signed)
    sa, za = affine.compute_scale_zero_point(a.min(), a.max(), qmin, qmax, symmetric)
    sb, zb = affine.compute_scale_zero_point(b.min(), b.max(), qmin, qmax, symmetric)
    qa = affine.quantize(a, sa, za, qmin, qmax)
    qb = affine.quantize(b, sb, zb, qmin, qmax)
    return qa, sa, za, qb, sb, zb


@SETTINGS
@given(m=st.integers(1, 12), k=st.integers(1, 300), n=st.integers(1, 12), bits=st.integers(2, 8),
       symmetric=st.booleans(), signed=st.booleans(), seed=st.integers(0, 2**16))
def test_quantized_matmul_equals_float_matmul_of_dequantized(m, k, n, bits, symmetric, signed, seed, device):
    gen = torch.Generator().manual_seed(seed)
    qa, sa, za, qb, sb, zb = _random_operands(gen, m, k, n, bits, symmetric, signed)
    qa, qb, sa, za, sb, zb = (t.to(device) for t in (qa, qb, sa, za, sb, zb))
    out = affine.quantized_matmul(qa, sa, za, qb, sb, zb)
    assert out.dtype == F32 and out.shape == (m, n) and out.device.type == device
    # the integer core is exact: the only roundings are int32 -> float32 and the multiply by sa * sb
    integer = ((qa.long() - za.long())[:, :, None] * (qb.long() - zb.long())[None]).sum(1)
    assert torch.equal(out, integer.to(F32) * (sa * sb))
    # and it equals the float product of the dequantized operands, up to the float32 rounding of those
    da, db = affine.dequantize(qa, sa, za).double(), affine.dequantize(qb, sb, zb).double()
    exact, magnitude = da @ db, da.abs() @ db.abs()
    assert bool(((out.double() - exact).abs() <= 3e-7 * magnitude + 1e-30).all())


def test_quantized_matmul_integer_path_is_exact_where_float32_is_not():
    # sum of 127*127 + 1 - 127*127: float32 products of scaled values cancel badly, integers do not
    qa = torch.tensor([[127, 1, -127]], dtype=torch.int32)
    qb = torch.tensor([[127], [1], [127]], dtype=torch.int32)
    sa = sb = torch.tensor(0.1)
    out = affine.quantized_matmul(qa, sa, 0, qb, sb, 0)
    assert out.item() == (torch.tensor(1.0) * (sa * sb)).item()
    float_path = affine.dequantize(qa, sa, 0) @ affine.dequantize(qb, sb, 0)
    assert abs(float_path.item() - out.item()) > 1e-6


def test_quantized_matmul_zero_point_terms_by_hand():
    qa = torch.tensor([[3, 5], [0, 255]], dtype=torch.uint8)
    qb = torch.tensor([[10], [20]], dtype=torch.uint8)
    out = affine.quantized_matmul(qa, 0.5, 4, qb, 0.25, 12)
    # (3-4)(10-12) + (5-4)(20-12) = 2 + 8 = 10; (0-4)(-2) + (251)(8) = 8 + 2008 = 2016
    assert out.flatten().tolist() == [10 * 0.125, 2016 * 0.125]


def test_quantized_matmul_rejects():
    q = torch.zeros(2, 3, dtype=torch.int32)
    with pytest.raises(TypeError, match="qa"):
        affine.quantized_matmul(q.float(), 0.1, 0, q.T, 0.1, 0)
    with pytest.raises(ValueError, match="qb"):
        affine.quantized_matmul(q, 0.1, 0, q, 0.1, 0)
    with pytest.raises(ValueError, match="qa"):
        affine.quantized_matmul(torch.zeros(3, dtype=torch.int32), 0.1, 0, q.T, 0.1, 0)
    with pytest.raises(ValueError, match="scale"):
        affine.quantized_matmul(q, 0.0, 0, q.T, 0.1, 0)
    with pytest.raises(TypeError, match="zero_point"):
        affine.quantized_matmul(q, 0.1, 0.5, q.T, 0.1, 0)
    big = torch.full((1, 200_000), -128, dtype=torch.int8)
    with pytest.raises(ValueError, match="int32"):
        affine.quantized_matmul(big, 0.1, 0, big.T, 0.1, 0)


# ----------------------------------------------------------------------------------------------
# integer-only inference: fixed-point multiplier, int32 bias, requantization


def _round_half_up(value: Fraction) -> int:
    """The integer nearest to an exact rational, halves toward +infinity."""
    return math.floor(value + Fraction(1, 2))


def _requantize_exact(acc: int, m0: int, n: int, zero_point: int, qmin: int, qmax: int) -> int:
    """The course's rule in rational arithmetic: clamp(z + round_half_up(acc * m0 / 2**(31 + n)))."""
    return min(max(zero_point + _round_half_up(Fraction(acc * m0, 2 ** (31 + n))), qmin), qmax)


def _gemmlowp_requantize(acc: int, m0: int, n: int) -> int:
    """TFLite's default MultiplyByQuantizedMultiplier (gemmlowp's two roundings), in Python ints, from
    gemmlowp/fixedpoint/fixedpoint.h: SaturatingRoundingDoublingHighMul (a nudge, then a division that
    truncates toward zero) and RoundingDivideByPOT (a mask and a threshold). Used only to measure the difference."""
    x = acc * (1 << max(-n, 0))
    ab = x * m0
    v = ab + ((1 << 30) if ab >= 0 else 1 - (1 << 30))
    high = abs(v) // (1 << 31) * (1 if v >= 0 else -1)
    e = max(n, 0)
    mask = (1 << e) - 1
    threshold = (mask >> 1) + (1 if high < 0 else 0)
    return (high >> e) + (1 if (high & mask) > threshold else 0)


@pytest.mark.parametrize("k", range(-32, 30))
def test_quantize_multiplier_of_a_power_of_two_is_exact(k):
    m0, n = affine.quantize_multiplier(2.0**k)
    assert (m0, n) == (2**30, -k - 1)
    assert Fraction(m0, 2 ** (31 + n)) == Fraction(2) ** k


def test_quantize_multiplier_closed_form_examples():
    assert affine.quantize_multiplier(0.5) == (2**30, 0)
    assert affine.quantize_multiplier(0.75) == (3 * 2**29, 0)
    assert affine.quantize_multiplier(1.0) == (2**30, -1)
    # 0.1 = 0.8 * 2**-3: m0 = round(0.8 * 2**31) = 1717986918 (0.8 * 2**31 = 1717986918.4)
    assert affine.quantize_multiplier(0.1) == (1717986918, 3)
    # a tie of f * 2**31 rounds up (C's round, TFLite), not to even
    assert affine.quantize_multiplier((2**30 + 0.5) * 2.0**-31) == (2**30 + 1, 0)
    assert affine.quantize_multiplier((2**30 + 1.5) * 2.0**-31) == (2**30 + 2, 0)
    # just below 1: f * 2**31 rounds up to 2**31, which renormalizes to (2**30, n - 1)
    assert affine.quantize_multiplier(1 - 2.0**-40) == (2**30, -1)
    assert affine.quantize_multiplier(0.5 - 2.0**-40) == (2**30, 0)
    # a float32 tensor is read exactly, a Python number too
    s = torch.tensor(0.3, dtype=torch.float32)
    assert affine.quantize_multiplier(s) == affine.quantize_multiplier(float(s.item()))


@SETTINGS
@given(multiplier=st.floats(min_value=2.0**-32, max_value=2.0**29, allow_nan=False, allow_infinity=False))
def test_quantize_multiplier_is_the_nearest_fixed_point_number(multiplier):
    m0, n = affine.quantize_multiplier(multiplier)
    assert isinstance(m0, int) and isinstance(n, int)
    assert 2**30 <= m0 < 2**31 and -30 <= n <= 31
    exact = Fraction(multiplier) * 2 ** (31 + n)          # the real m0, in rational arithmetic
    assert m0 == _round_half_up(exact)   # also after renormalizing a round-up to 2**31 (exact >= 2**30 - 1/4)
    assert abs(Fraction(m0, 2 ** (31 + n)) - Fraction(multiplier)) <= Fraction(multiplier) * Fraction(1, 2**31)


@pytest.mark.parametrize("bad, exc", [(0.0, ValueError), (-0.5, ValueError), (float("nan"), ValueError),
                                      (float("inf"), ValueError), (2.0**-33, ValueError), (2.0**30, ValueError),
                                      (True, TypeError), ("0.5", TypeError), (torch.ones(2), ValueError),
                                      (torch.tensor(1, dtype=torch.int32), TypeError)])
def test_quantize_multiplier_rejects(bad, exc):
    with pytest.raises(exc, match="multiplier"):
        affine.quantize_multiplier(bad)


def test_requantize_rounds_once_halves_up():
    acc = torch.tensor([5, -5, 3, -3, 1, -1, 0, 7, -7], dtype=torch.int32)
    # m0 = 2**30, n = 0: M = 1/2, every odd accumulator is a tie
    out = affine.requantize(acc, 2**30, 0, 0, -128, 127)
    assert out.tolist() == [3, -2, 2, -1, 1, 0, 0, 4, -3]
    # M = 1/4: -3/4 -> -1 (not a tie), -2/4 -> 0 (a tie, up), 6/4 -> 2
    out = affine.requantize(torch.tensor([-3, -2, 6, 2], dtype=torch.int32), 2**30, 1, 0, -128, 127)
    assert out.tolist() == [-1, 0, 2, 1]


def test_requantize_with_multiplier_one_adds_the_zero_point_and_saturates():
    acc = torch.arange(-300, 301, dtype=torch.int32)
    m0, n = affine.quantize_multiplier(1.0)
    out = affine.requantize(acc, m0, n, -7, -128, 127)
    assert torch.equal(out, (acc - 7).clamp(-128, 127))
    out = affine.requantize(acc, m0, n, 3, 0, 255)
    assert torch.equal(out, (acc + 3).clamp(0, 255))


@SETTINGS
@given(acc=st.lists(st.integers(-(2**31), 2**31 - 1), min_size=1, max_size=32),
       m0=st.integers(2**30, 2**31 - 1), n=st.integers(-30, 31),
       grid=st.sampled_from([(-128, 127), (0, 255), (-127, 127), (-8, 7), (-32768, 32767)]),
       z_at=st.floats(0.0, 1.0))
def test_requantize_equals_exact_rational_arithmetic(acc, m0, n, grid, z_at, device):
    qmin, qmax = grid
    zero_point = qmin + int(z_at * (qmax - qmin))
    out = affine.requantize(torch.tensor(acc, dtype=torch.int32, device=device), m0, n, zero_point, qmin, qmax)
    assert out.dtype == torch.int32 and out.device.type == device and out.shape == (len(acc),)
    assert out.cpu().tolist() == [_requantize_exact(a, m0, n, zero_point, qmin, qmax) for a in acc]


@SETTINGS
@given(multiplier=st.floats(1e-6, 0.999), seed=st.integers(0, 2**16), zero_point=st.integers(-128, 127))
def test_requantize_saturates_and_never_decreases(multiplier, seed, zero_point, device):
    m0, n = affine.quantize_multiplier(multiplier)
    acc = torch.randint(-(2**31), 2**31, (500,), generator=torch.Generator().manual_seed(seed), dtype=torch.int64)
    acc = torch.cat([acc, torch.tensor([-(2**31), 2**31 - 1, 0])]).to(torch.int32).sort().values
    out = affine.requantize(acc.to(device), m0, n, zero_point, -128, 127).cpu()
    assert bool((out.diff() >= 0).all())
    # the extreme accumulators (at least 2147 steps of M from 0) saturate; 0 is the zero point
    assert int(out[0]) == -128 and int(out[-1]) == 127
    assert int(out[acc == 0][0]) == zero_point


def test_requantize_is_exact_where_float32_and_float64_are_not():
    # 26345471 / 2**18 = 100.4999962: float32 holds 26345472 and lands on the tie 100.5
    # 26345473 / 2**18 = 100.5000038: float32 holds 26345472 again, and round-half-even gives 100
    acc = torch.tensor([26345471, 26345473, -26345473], dtype=torch.int32)
    out = affine.requantize(acc, 2**30, 17, 0, -128, 127)
    assert out.tolist() == [100, 101, -101]
    scaled32 = acc.float() * 2.0**-18
    assert torch.floor(scaled32 + 0.5).tolist() != out.tolist()
    assert torch.round(scaled32).tolist() != out.tolist()
    # acc * m0 = 2**52 * 97 - 5 needs 62 bits: float64 rounds it onto the tie 48.5 (floor(x + 0.5) gives 49)
    acc64, m0, n = 231127169, 1890081403, 22
    assert _requantize_exact(acc64, m0, n, 0, -128, 127) == 48
    assert affine.requantize(torch.tensor([acc64], dtype=torch.int32), m0, n, 0, -128, 127).item() == 48
    assert math.floor(float(acc64) * m0 / 2.0**53 + 0.5) == 49


def test_requantize_differs_from_gemmlowp_double_rounding_by_at_most_one_code_and_rarely():
    # the module docstring's claim, measured: TFLite's default build rounds twice (gemmlowp)
    rng = random.Random(0)
    differ = total = 0
    for _ in range(300):
        m0, n = affine.quantize_multiplier(10 ** rng.uniform(-6, -0.01))
        acc = [rng.randrange(-(2**24), 2**24) for _ in range(100)]
        ours = affine.requantize(torch.tensor(acc, dtype=torch.int32), m0, n, 0, -(2**16), 2**16).tolist()
        for a, o in zip(acc, ours):
            g = _gemmlowp_requantize(a, m0, n)
            if abs(g) < 2**16:
                assert abs(g - o) <= 1
                total += 1
                differ += g != o
    assert total > 15_000 and 0 < differ < 0.005 * total
    # one of them: 1/8 of -12 is -1.5; gemmlowp: -12 * 2**30 / 2**31 = -6 exactly, then -6 / 4 = -1.5, a tie
    # of RoundingDivideByPOT, away from zero: -2; one rounding, halves up: -1
    assert _gemmlowp_requantize(-12, 2**30, 2) == -2
    assert affine.requantize(torch.tensor([-12], dtype=torch.int32), 2**30, 2, 0, -128, 127).item() == -1


@pytest.mark.parametrize("kwargs, exc, word", [
    (dict(acc=torch.zeros(3, dtype=torch.int64)), TypeError, "acc"),
    (dict(acc=torch.zeros(3)), TypeError, "acc"),
    (dict(acc=torch.zeros(0, dtype=torch.int32)), ValueError, "acc"),
    (dict(m0=2**31), ValueError, "m0"),
    (dict(m0=2**29), ValueError, "m0"),
    (dict(m0=1.5e9), TypeError, "m0"),
    (dict(n=32), ValueError, "n"),
    (dict(n=-31), ValueError, "n"),
    (dict(zero_point=200), ValueError, "zero_point"),
    (dict(qmin=5, qmax=5), ValueError, "qmin"),
])
def test_requantize_rejects(kwargs, exc, word):
    args = dict(acc=torch.zeros(3, dtype=torch.int32), m0=2**30, n=0, zero_point=0, qmin=-128, qmax=127)
    args.update(kwargs)
    with pytest.raises(exc, match=word):
        affine.requantize(**args)


def test_quantize_bias_closed_form_and_torch_qint32():
    bias = torch.tensor([0.1, -0.2, 0.0, 1e-9])
    assert affine.quantize_bias(bias, 0.01, 0.02).tolist() == [500, -1000, 0, 0]
    # the same codes as torch.quantize_per_tensor to qint32, zero point 0, on the float32 scale product
    b = torch.randn(5000, generator=torch.Generator().manual_seed(3)) * 2
    s_x, s_w = torch.tensor(0.0123), torch.tensor(0.00071)
    ours = affine.quantize_bias(b, s_x, s_w)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # quantize_per_tensor warns that it is deprecated
        theirs = torch.quantize_per_tensor(b, float(s_x * s_w), 0, torch.qint32).int_repr()
    assert ours.dtype == torch.int32
    assert int((ours - theirs).abs().max()) <= 1 and int((ours != theirs).sum()) <= 5


def test_quantize_bias_rejects_what_int32_cannot_hold():
    with pytest.raises(ValueError, match="int32"):
        affine.quantize_bias(torch.tensor([1.0]), 1e-5, 1e-5)
    with pytest.raises(TypeError, match="bias"):
        affine.quantize_bias(torch.tensor([1, 2]), 0.1, 0.1)
    with pytest.raises(ValueError, match="scale_w"):
        affine.quantize_bias(torch.tensor([1.0]), 0.1, 0.0)


def _linear_layer(gen, batch, k, out, relu_input=True):
    """Float x, W, b; their grids (uint8 asymmetric input, int8 symmetric weight, int8 asymmetric output)."""
    x = torch.randn(batch, k, generator=gen)
    x = torch.relu(x) if relu_input else x
    w = torch.randn(out, k, generator=gen) * 0.1
    b = torch.randn(out, generator=gen) * 0.1
    s_x, z_x = affine.compute_scale_zero_point(x.min(), x.max(), 0, 255)
    s_w, z_w = affine.compute_scale_zero_point(w.min(), w.max(), -127, 127, symmetric=True)
    qx, qw = affine.quantize(x, s_x, z_x, 0, 255), affine.quantize(w, s_w, z_w, -127, 127)
    qb = affine.quantize_bias(b, s_x, s_w)
    y = affine.dequantize(qx, s_x, z_x) @ affine.dequantize(qw, s_w, z_w).T + affine.dequantize(qb, s_x * s_w, 0)
    s_y, z_y = affine.compute_scale_zero_point(y.min(), y.max(), -128, 127)
    return qx, s_x, z_x, qw, s_w, z_w, qb, b, y, s_y, z_y


@SETTINGS
@given(batch=st.integers(1, 8), k=st.integers(1, 200), out=st.integers(1, 8), seed=st.integers(0, 2**16),
       z_w=st.integers(-5, 5), with_bias=st.booleans())
def test_integer_linear_is_requantize_of_the_exact_accumulator(batch, k, out, seed, z_w, with_bias, device):
    gen = torch.Generator().manual_seed(seed)
    qx = torch.randint(0, 256, (batch, k), generator=gen).to(torch.uint8)
    qw = torch.randint(-127, 128, (out, k), generator=gen).to(torch.int8)
    qb = torch.randint(-(2**20), 2**20, (out,), generator=gen, dtype=torch.int32) if with_bias else None
    m0, n = affine.quantize_multiplier(0.37 / k)
    got = affine.integer_linear(qx.to(device), 131, qw.to(device), z_w, None if qb is None else qb.to(device),
                                m0, n, -3, -128, 127)
    acc = (qx.long() - 131) @ (qw.long() - z_w).T + (0 if qb is None else qb.long())   # int64: exact
    expected = [[_requantize_exact(int(a), m0, n, -3, -128, 127) for a in row] for row in acc.tolist()]
    assert got.dtype == torch.int32 and got.device.type == device and got.cpu().tolist() == expected


def test_integer_linear_agrees_with_the_float_reference_within_one_code(device):
    gen = torch.Generator().manual_seed(5)
    qx, s_x, z_x, qw, s_w, z_w, qb, b, y, s_y, z_y = _linear_layer(gen, 64, 256, 48)
    m0, n = affine.quantize_multiplier(float(s_x) * float(s_w) / float(s_y))
    got = affine.integer_linear(qx.to(device), z_x, qw.to(device), z_w, qb.to(device), m0, n, z_y, -128, 127).cpu()
    reference = affine.quantize(y, s_y, z_y, -128, 127)   # dequantize, float32 matmul, quantize
    assert int((got - reference).abs().max()) <= 1
    assert (got == reference).double().mean().item() > 0.99
    # a fused ReLU is the clamp at the output's zero point
    relu = affine.integer_linear(qx, z_x, qw, z_w, qb, m0, n, z_y, int(z_y), 127)
    assert torch.equal(relu, got.clamp(min=int(z_y)))


@pytest.mark.parametrize("engine", ["x86", "fbgemm", "qnnpack"])
def test_integer_linear_matches_torch_quantized_linear_within_one_code(engine):
    if engine not in torch.backends.quantized.supported_engines:
        pytest.skip(f"torch has no {engine} quantized engine here")
    import torch.ao.nn.quantized.functional as qF

    gen = torch.Generator().manual_seed(6)
    qx, s_x, z_x, qw, s_w, z_w, qb, b, y, s_y, z_y = _linear_layer(gen, 32, 128, 24)
    m0, n = affine.quantize_multiplier(float(s_x) * float(s_w) / float(s_y))
    ours = affine.integer_linear(qx, z_x, qw, z_w, qb, m0, n, z_y, -128, 127) + 128   # to uint8 codes
    previous = torch.backends.quantized.engine
    try:
        torch.backends.quantized.engine = engine
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # quantized tensors are deprecated in torch 2.13
            tx = torch._make_per_tensor_quantized_tensor(qx.to(torch.uint8), float(s_x), int(z_x))
            tw = torch._make_per_tensor_quantized_tensor(qw.to(torch.int8), float(s_w), 0)
            bias = affine.dequantize(qb, s_x * s_w, 0)   # the bias the integer path adds, as floats
            theirs = qF.linear(tx, tw, bias, scale=float(s_y), zero_point=int(z_y) + 128).int_repr().to(torch.int32)
    finally:
        torch.backends.quantized.engine = previous
    assert int((ours - theirs).abs().max()) <= 1
    assert (ours == theirs).double().mean().item() > 0.98


def test_integer_linear_rejects():
    qx = torch.zeros(2, 4, dtype=torch.uint8)
    qw = torch.zeros(3, 4, dtype=torch.int8)
    args = dict(qx=qx, zx=0, qw=qw, zw=0, qbias=torch.zeros(3, dtype=torch.int32), m0=2**30, n=0, zy=0,
                qmin=-128, qmax=127)
    for kwargs, exc, word in [(dict(qx=qx.float()), TypeError, "qx"), (dict(qw=qw[:, :3]), ValueError, "qw"),
                              (dict(qbias=torch.zeros(2, dtype=torch.int32)), ValueError, "qbias"),
                              (dict(qbias=torch.zeros(3)), TypeError, "qbias"), (dict(m0=5), ValueError, "m0"),
                              (dict(qbias=torch.full((3,), 2**31 - 1, dtype=torch.int32),
                                    qx=torch.ones(2, 4, dtype=torch.uint8), qw=torch.ones(3, 4, dtype=torch.int8)),
                               ValueError, "int32")]:
        with pytest.raises(exc, match=word):
            affine.integer_linear(**{**args, **kwargs})



# ----------------------------------------------------------------------------------------------
# plots and widget


def test_plots_return_figures():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2000, generator=gen)
    scale, zp = affine.compute_scale_zero_point(-1.0, 2.0, 0, 7)
    figs = [
        plots.plot_mapping(scale, zp, 0, 7, -2, 3, data=x),
        plots.plot_error_vs_x(scale, zp, 0, 7, -2, 3),
        plots.plot_sym_vs_asym(torch.relu(x), bits=4),
        plots.plot_number_line([-2.1, 0.5, 1.8], {"seed": (0.015, 140, 0, 255)}),
        plots.plot_clipping_tradeoff(x, bits=4, n=10),
        plots.plot_int32_headroom(),
    ]
    for fig in figs:
        assert isinstance(fig, matplotlib.figure.Figure)
    stats = figs[2].stats
    assert stats["asymmetric (unsigned)"]["mse"] < stats["symmetric (signed)"]["mse"]
    assert 0.05 <= figs[4].best[0] < 1.0
    plt.close("all")


def test_widget_updates_without_a_browser():
    box = widgets.affine_explorer(bits=4)
    first = box.last
    assert first["max_inside"] <= first["scale"] / 2 * (1 + 1e-5)
    box.bits.value = 8
    assert box.last["scale"] < first["scale"] and "scale" in box.readout.value
    box.scheme.value = "symmetric, restricted"
    assert box.last["qmin"] == -127 and box.last["zero_point"] == 0
    box.range.value = [-1.0, 1.0]
    narrow = box.update()
    assert narrow["clipped"] > 0.2 and narrow["max_clipped"] > narrow["scale"]
    plt.close("all")
