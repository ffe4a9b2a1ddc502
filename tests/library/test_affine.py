"""course_lib.affine: closed-form values, PyTorch's quantizers as independent references, properties."""

from __future__ import annotations

import warnings

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
