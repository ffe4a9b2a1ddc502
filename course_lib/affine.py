"""Notebook 02: affine (uniform) quantization, from the integer grid to an integer matmul.

A real number ``r`` is stored as an integer code ``q`` through the affine map

    r ~ scale * (q - zero_point),        q in [qmin, qmax].

The course's rules (each one PyTorch's, so that the results are bit-exact with
``torch.fake_quantize_per_tensor_affine`` and ``torch.ao.quantization.MinMaxObserver``):

- **Range.** The range a grid must cover always contains 0 (``[min(x_min, 0), max(x_max, 0)]``),
  so that 0 has an exact code: padding, ReLU outputs and pruned weights stay exactly 0.
- **Scale.** asymmetric: ``(hi - lo) / (qmax - qmin)``; symmetric: ``max(-lo, hi) / ((qmax - qmin) / 2)``.
  The scale is never below float32's machine epsilon ``2**-23`` (about 1.19e-7): an all-zero
  tensor gets that scale instead of dividing by zero, and every code stays finite.
- **Zero point.** asymmetric: ``qmin - round(lo / scale)``, clamped to ``[qmin, qmax]``;
  symmetric: the middle code ``(qmin + qmax + 1) // 2`` (0 for a signed grid, 2**(bits-1) for an
  unsigned one). PyTorch agrees for signed grids and for the default uint8 range (128); for a custom
  unsigned range it uses ``(qmin + qmax) // 2`` instead (7 rather than 8 for codes 0..15).
- **Rounding.** Round half to even (``torch.round``, C's ``nearbyint``), applied to ``x / scale``
  *before* the zero point is added; the division is a multiplication by the float32 reciprocal
  ``1 / scale``, as PyTorch's kernels do it. All of it is float32 arithmetic.
- **Clipping.** Codes are clamped to ``[qmin, qmax]``; values outside the representable range
  ``[(qmin - z) * s, (qmax - z) * s]`` are clipped, and their error is not bounded by ``s / 2``.
- **Codes and zero points** are int32 tensors here (a deployed model packs codes into int8, uint8
  or 4-bit fields; int32 keeps the course's arithmetic simple and exact).

Integer-only inference (Jacob et al., arXiv 1712.05877, sections 2.2 to 2.4): a layer's int32 accumulator
becomes the next layer's codes through the one real number ``M = s_x * s_w / s_y``, stored as a fixed-point
pair ``M ~ m0 * 2**-(31 + n)`` with ``2**30 <= m0 < 2**31`` (``quantize_multiplier``); the bias is an int32
on the accumulator's grid (scale ``s_x * s_w``, zero point 0, ``quantize_bias``). ``requantize`` then rounds
``acc * m0 / 2**(31 + n)`` once, **halves up** (toward +infinity), with integer arithmetic only: this is
TensorFlow Lite's single-rounding kernel (``MultiplyByQuantizedMultiplier`` built with ``TFLITE_SINGLE_ROUNDING``;
Arm's CMSIS-NN has the same option, ``CMSIS_NN_USE_SINGLE_ROUNDING``). Their default builds round twice, as
gemmlowp does (``SaturatingRoundingDoublingHighMul``, ties up, then ``RoundingDivideByPOT``, ties away from zero);
the two rules differ by one code on rare inputs (under 0.5% of random accumulators, measured in
``tests/library/test_affine.py``). The course keeps the single rounding: one rule, exact against rational
arithmetic. The multiplier's range (``-30 <= n <= 31``) is TFLite's (its ``shift = -n`` lies in [-31, 30]).
"""

from __future__ import annotations

import math
import numbers

import torch

from .validation import FLOAT_DTYPES, check_bits, check_int, check_tensor

__all__ = [
    "SCALE_EPS",
    "INT32_MAX",
    "INT32_MIN",
    "qrange",
    "compute_scale_zero_point",
    "quantize",
    "dequantize",
    "fake_quantize",
    "representable_range",
    "int32_matmul",
    "int32_max_inner_dim",
    "quantized_matmul",
    "quantize_multiplier",
    "requantize",
    "quantize_bias",
    "integer_linear",
]

#: The smallest scale the course ever uses (float32 machine epsilon, PyTorch observers' ``eps``).
SCALE_EPS = torch.finfo(torch.float32).eps
#: The largest value an int32 accumulator holds.
INT32_MAX = 2**31 - 1
#: The smallest value an int32 accumulator holds.
INT32_MIN = -(2**31)
#: ``quantize_multiplier``'s m0 lies in ``[2**30, 2**31 - 1]`` and its right shift n in ``[-30, 31]``: the total
#: shift ``31 + n`` is 1 to 62, so ``acc * m0 + 2**(30 + n)`` fits int64 (TFLite's ``shift = -n``: [-31, 30]).
_M0_MIN, _M0_MAX = 2**30, 2**31 - 1
_SHIFT_MIN, _SHIFT_MAX = -30, 31
#: Codes must stay exactly representable in float32 (and far from int32's limits).
_CODE_LIMIT = 2**16

INT_DTYPES = (torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64)


# ----------------------------------------------------------------------------------------------
# argument checks shared by the functions below


def _check_qrange(qmin, qmax) -> None:
    check_int(qmin, "qmin", low=-_CODE_LIMIT, high=_CODE_LIMIT)
    check_int(qmax, "qmax", low=-_CODE_LIMIT, high=_CODE_LIMIT)
    if qmin >= qmax:
        raise ValueError(f"qmin must be smaller than qmax, got qmin={qmin}, qmax={qmax}")


def _single_value(value, name: str, integer: bool):
    """A Python number or a one-element tensor of the right kind, as a Python float or int."""
    kind, dtypes, py_type = ("integer", INT_DTYPES, numbers.Integral) if integer else ("float", FLOAT_DTYPES, numbers.Real)
    if isinstance(value, torch.Tensor):
        if value.dtype not in dtypes:
            raise TypeError(f"{name} must be a Python number or a one-element {kind} tensor, "
                            f"got dtype {str(value.dtype).replace('torch.', '')}")
        if value.numel() != 1:
            raise ValueError(f"{name} must hold a single value, got shape {tuple(value.shape)}")
        return value.detach().reshape(())
    if isinstance(value, py_type) and not isinstance(value, bool):
        return int(value) if integer else float(value)
    raise TypeError(f"{name} must be a Python number or a one-element {kind} tensor, got {type(value).__name__}")


def _float_scalar(value, name: str, device=None) -> torch.Tensor:
    """A finite real number (Python number or one-element float tensor) as a 0-dim float32 tensor."""
    out = torch.as_tensor(_single_value(value, name, integer=False)).to(torch.float32)
    if not bool(torch.isfinite(out)):
        raise ValueError(f"{name} must be finite, got {out.item()}")
    return out if device is None else out.to(device)


def _scale(scale, device, name: str = "scale") -> torch.Tensor:
    s = _float_scalar(scale, name, device)
    if not bool(s >= torch.finfo(torch.float32).tiny):
        raise ValueError(f"{name} must be a positive normal float32 number (>= {torch.finfo(torch.float32).tiny:.3g}), "
                         f"got {s.item()}")
    return s


def _zero_point(zero_point, device) -> torch.Tensor:
    value = int(_single_value(zero_point, "zero_point", integer=True))
    if abs(value) > _CODE_LIMIT:
        raise ValueError(f"zero_point must be in [-{_CODE_LIMIT}, {_CODE_LIMIT}], got {value}")
    return torch.tensor(value, dtype=torch.int32, device=device)


# ----------------------------------------------------------------------------------------------
# the grid


def qrange(bits: int, signed: bool, restricted: bool = False) -> tuple[int, int]:
    """The integer codes of a ``bits``-bit grid.

    Args:
        bits: bit width, 2 to 16.
        signed: two's complement codes ``[-2**(bits-1), 2**(bits-1) - 1]``; else ``[0, 2**bits - 1]``.
        restricted: drop the lowest code so that the grid is symmetric about its middle code:
            ``[-(2**(bits-1) - 1), 2**(bits-1) - 1]`` signed (-127..127 for int8), ``[1, 2**bits - 1]`` unsigned.

    Returns:
        (qmin, qmax) as Python ints.
    """
    check_bits(bits, "bits", low=2, high=16)
    if not isinstance(signed, bool):
        raise TypeError(f"signed must be a bool, got {type(signed).__name__}")
    if not isinstance(restricted, bool):
        raise TypeError(f"restricted must be a bool, got {type(restricted).__name__}")
    if signed:
        qmin, qmax = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    else:
        qmin, qmax = 0, 2**bits - 1
    return (qmin + 1 if restricted else qmin), qmax


def compute_scale_zero_point(x_min, x_max, qmin: int, qmax: int,
                             symmetric: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Scale and zero point that map the range ``[x_min, x_max]`` (widened to contain 0) onto ``[qmin, qmax]``.

    Args:
        x_min, x_max: the observed range: one-element float tensors (e.g. ``x.min()``, ``x.max()``)
            or Python numbers; finite, ``x_min <= x_max``.
        qmin, qmax: the integer grid (see ``qrange``), ``qmin < qmax``.
        symmetric: symmetric grid around 0 (zero point = middle code) or asymmetric (min-max).

    Returns:
        (scale, zero_point): 0-dim tensors, float32 and int32, on ``x_min``'s device (CPU for numbers).
        The scale is at least ``SCALE_EPS``, so a constant or all-zero input never divides by zero.
    """
    device = x_min.device if isinstance(x_min, torch.Tensor) else torch.device("cpu")
    lo = _float_scalar(x_min, "x_min", device)
    hi = _float_scalar(x_max, "x_max", device)
    if bool(hi < lo):
        raise ValueError(f"x_max must be >= x_min, got x_min={lo.item()}, x_max={hi.item()}")
    _check_qrange(qmin, qmax)
    if not isinstance(symmetric, bool):
        raise TypeError(f"symmetric must be a bool, got {type(symmetric).__name__}")
    zero = torch.zeros((), dtype=torch.float32, device=device)
    lo, hi = torch.minimum(lo, zero), torch.maximum(hi, zero)  # the range always contains 0
    eps = torch.tensor(SCALE_EPS, dtype=torch.float32, device=device)
    if symmetric:
        amax = torch.maximum(-lo, hi)
        scale = torch.maximum(amax / ((qmax - qmin) / 2), eps)
        zero_point = torch.tensor((qmin + qmax + 1) // 2, dtype=torch.int32, device=device)
    else:
        scale = torch.maximum((hi - lo) / (qmax - qmin), eps)
        if not bool(torch.isfinite(scale)):
            raise ValueError(f"x_max - x_min overflows float32 (x_min={lo.item()}, x_max={hi.item()}): "
                             "rescale the tensor first")
        zero_point = (qmin - torch.round(lo / scale)).clamp(qmin, qmax).to(torch.int32)
    return scale, zero_point


def quantize(x: torch.Tensor, scale, zero_point, qmin: int, qmax: int) -> torch.Tensor:
    """Integer codes ``clamp(round(x / scale) + zero_point, qmin, qmax)``.

    ``round`` is round-half-to-even of the float32 product ``x * (1 / scale)``, as in PyTorch.

    Args:
        x: float tensor (float16, bfloat16, float32 or float64; computed in float32), any shape,
            not empty, finite.
        scale: positive float (Python number or one-element float tensor).
        zero_point: integer (Python int or one-element integer tensor) in ``[qmin, qmax]``.
        qmin, qmax: the code range, ``qmin < qmax``.

    Returns:
        int32 tensor of ``x``'s shape on ``x``'s device.
    """
    check_tensor(x, "x", dtypes=FLOAT_DTYPES)
    _check_qrange(qmin, qmax)
    s = _scale(scale, x.device)
    z = _zero_point(zero_point, x.device)
    if not qmin <= int(z) <= qmax:
        raise ValueError(f"zero_point must lie in [qmin, qmax] = [{qmin}, {qmax}], got {int(z)}")
    q = _round_scaled(x, s) + z  # round first, then add the zero point
    return q.clamp(qmin, qmax).to(torch.int32)


def _round_scaled(x: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """``round(x * (1 / s))`` in float32: the float32 reciprocal, as PyTorch's kernels compute it, and
    round half to even."""
    return torch.round(x.to(torch.float32) * (1.0 / s))


def dequantize(q: torch.Tensor, scale, zero_point) -> torch.Tensor:
    """Real values ``(q - zero_point) * scale`` in float32.

    Args:
        q: integer codes (any integer dtype), any shape, not empty.
        scale: positive float (Python number or one-element float tensor).
        zero_point: integer (Python int or one-element integer tensor).

    Returns:
        float32 tensor of ``q``'s shape on ``q``'s device.
    """
    check_tensor(q, "q", dtypes=INT_DTYPES)
    s = _scale(scale, q.device)
    z = _zero_point(zero_point, q.device)
    return (q.to(torch.int64) - z).to(torch.float32) * s


def fake_quantize(x: torch.Tensor, scale, zero_point, qmin: int, qmax: int) -> torch.Tensor:
    """``dequantize(quantize(x))``: the float32 values that the integer grid can represent.

    Args:
        x: float tensor, any shape.
        scale, zero_point: a scale and an integer zero point (Python numbers or 0-d tensors).
        qmin, qmax: the integer range of the codes.

    Returns:
        torch.Tensor: float32, ``x``'s shape, every value on the grid ``s * (q - z)``, q in [qmin, qmax].
    """
    return dequantize(quantize(x, scale, zero_point, qmin, qmax), scale, zero_point)


def representable_range(scale, zero_point, qmin: int, qmax: int) -> tuple[float, float]:
    """The real interval ``[(qmin - z) * s, (qmax - z) * s]`` the codes cover (floats, computed in float32).

    Args:
        scale, zero_point: the grid's step and zero point.
        qmin, qmax: the integer range of the codes.

    Returns:
        tuple[float, float]: the lowest and highest representable real values.
    """
    _check_qrange(qmin, qmax)
    s = _scale(scale, "cpu")
    z = int(_zero_point(zero_point, "cpu"))
    return float(torch.tensor(float(qmin - z)) * s), float(torch.tensor(float(qmax - z)) * s)


# ----------------------------------------------------------------------------------------------
# integer matmul


def _check_int_matrices(a, b, name_a: str, name_b: str) -> None:
    check_tensor(a, name_a, dtypes=INT_DTYPES, ndim=2)
    check_tensor(b, name_b, dtypes=INT_DTYPES, ndim=2)
    if a.shape[1] != b.shape[0]:
        raise ValueError(f"{name_b} must have {a.shape[1]} rows ({name_a}'s columns), got shape {tuple(b.shape)}")
    if a.device != b.device:
        raise ValueError(f"{name_a} and {name_b} must be on the same device, got {a.device} and {b.device}")


def int32_matmul(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``a @ b`` for integer matrices, computed in int32 with an int32 accumulator.

    Overflow wraps around modulo 2**32, as an int32 accumulator in hardware does; keep the inner
    dimension below ``int32_max_inner_dim`` to be safe.

    On the CPU this is PyTorch's int32 matmul. PyTorch has no integer matmul on CUDA (``addmm_cuda``
    is not implemented for int32 or int64; ``torch._int_mm`` takes only int8 operands with sizes that
    are multiples of 8), so on other devices the products are formed in int32 and summed into an int32
    result, a block of rows at a time. Both give the same integers, including the wrap-around.

    Args:
        a: (M, K) integer tensor. b: (K, N) integer tensor on the same device.

    Returns:
        (M, N) int32 tensor.
    """
    _check_int_matrices(a, b, "a", "b")
    a32, b32 = a.to(torch.int32), b.to(torch.int32)
    if a.device.type == "cpu":
        return a32 @ b32
    return _int32_matmul_blocked(a32, b32)


def _int32_matmul_blocked(a32: torch.Tensor, b32: torch.Tensor, max_elements: int = 1 << 24) -> torch.Tensor:
    """int32 matmul from elementwise int32 products summed into int32, ``max_elements`` products at a time.

    The sum wraps modulo 2**32 exactly like an int32 accumulator (two's complement addition is the
    same modulo 2**32 whatever width the intermediate sums use).
    """
    m, k = a32.shape
    n = b32.shape[1]
    rows = max(1, max_elements // max(1, k * n))
    out = torch.empty((m, n), dtype=torch.int32, device=a32.device)
    for start in range(0, m, rows):
        block = a32[start:start + rows, :, None] * b32[None, :, :]
        out[start:start + rows] = block.sum(dim=1, dtype=torch.int32)
    return out


def int32_max_inner_dim(max_abs_a: int, max_abs_b: int) -> int:
    """The largest inner dimension K for which ``sum_k a_k b_k`` cannot overflow int32.

    Each product is at most ``max_abs_a * max_abs_b`` in magnitude, so K of them sum to at most
    ``K * max_abs_a * max_abs_b``; that must not exceed ``2**31 - 1``.
    int8 x int8 (128 * 128 = 2**14): K <= 131071, i.e. K < 2**17.

    Args:
        max_abs_a: largest magnitude of a code of the first operand (128 for int8).
        max_abs_b: largest magnitude of a code of the second operand.

    Returns:
        int: the largest safe K.
    """
    check_int(max_abs_a, "max_abs_a", low=1)
    check_int(max_abs_b, "max_abs_b", low=1)
    return INT32_MAX // (max_abs_a * max_abs_b)


def quantized_matmul(qa: torch.Tensor, sa, za, qb: torch.Tensor, sb, zb) -> torch.Tensor:
    """The float32 product of two quantized matrices, computed on their integer codes.

    ``A ~ sa (qa - za)`` and ``B ~ sb (qb - zb)``, so

        A @ B ~ sa * sb * (qa @ qb - za * colsum(qb) - zb * rowsum(qa) + K * za * zb),

    where every term is an integer computed in int32 (``int32_matmul`` for ``qa @ qb``) and only the
    final integer is converted to float32 and multiplied by ``sa * sb`` (a float32 product).
    This equals ``dequantize(qa) @ dequantize(qb)`` up to the float rounding of that computation.

    Args:
        qa: (M, K) integer codes. sa, za: qa's scale and zero point.
        qb: (K, N) integer codes on qa's device. sb, zb: qb's scale and zero point.

    Returns:
        (M, N) float32 tensor on qa's device.

    Raises:
        ValueError: when the worst case of these codes over K terms could overflow int32.
    """
    _check_int_matrices(qa, qb, "qa", "qb")
    device = qa.device
    s_a, s_b = _scale(sa, device, "sa (qa's scale)"), _scale(sb, device, "sb (qb's scale)")
    acc = _zero_point_accumulate(qa, _zero_point(za, device), qb, _zero_point(zb, device), ("qa", "qb"))
    return acc.to(torch.float32) * (s_a * s_b)


def _zero_point_accumulate(qa: torch.Tensor, z_a: torch.Tensor, qb: torch.Tensor, z_b: torch.Tensor,
                           names: tuple[str, str], extra: int = 0) -> torch.Tensor:
    """The int32 matrix ``(qa - z_a) @ (qb - z_b)`` from one integer GEMM, two sums and a constant.

    Raises ValueError when the worst case over K terms, plus ``extra`` (a bias's largest magnitude), could
    overflow int32. ``qa`` (M, K) and ``qb`` (K, N) are checked integer matrices on one device.
    """
    k = qa.shape[1]
    max_a, max_b = int(qa.to(torch.int64).abs().max()), int(qb.to(torch.int64).abs().max())
    worst = k * (max_a * max_b + abs(int(z_a)) * max_b + abs(int(z_b)) * max_a + abs(int(z_a) * int(z_b))) + extra
    if worst > INT32_MAX:
        with_bias = f" plus a bias up to {extra}" if extra else ""
        raise ValueError(f"int32 accumulation could overflow: K={k} terms with |{names[0]}| <= {max_a}, "
                         f"|{names[1]}| <= {max_b} and zero points {int(z_a)}, {int(z_b)}{with_bias} can reach "
                         f"{worst} > 2**31 - 1")
    qa32, qb32 = qa.to(torch.int32), qb.to(torch.int32)
    acc = int32_matmul(qa32, qb32)
    acc = acc - z_a * qb32.sum(dim=0, dtype=torch.int32)[None, :]
    acc = acc - z_b * qa32.sum(dim=1, dtype=torch.int32)[:, None]
    return acc + k * z_a * z_b


# ----------------------------------------------------------------------------------------------
# integer-only inference: the fixed-point multiplier, the int32 bias, requantization


def quantize_multiplier(multiplier) -> tuple[int, int]:
    """A positive real multiplier as a fixed-point pair: ``multiplier ~ m0 * 2**-(31 + n)``.

    ``m0 / 2**31`` is a fraction in ``[0.5, 1)`` with 31 bits (Q0.31) and ``n`` a right shift (negative for a
    left shift): ``n = -e`` where ``multiplier = f * 2**e``, ``f`` in ``[0.5, 1)``, and ``m0 = round(f * 2**31)``
    with halves rounded up, as TFLite's ``QuantizeMultiplier`` does (C's ``round``). When that rounds up to
    ``2**31``, the pair becomes ``(2**30, n - 1)``. Computed exactly in float64 (``f * 2**31`` is exact),
    so ``|m0 * 2**-(31 + n) - multiplier| <= 2**-(32 + n)``: a relative error of at most ``2**-31``.

    Args:
        multiplier: the real multiplier, e.g. ``s_x * s_w / s_y`` of a layer; a Python number or a one-element
            float tensor (a float32 value is read exactly), finite, in ``[2**-32, 2**29]`` (so that
            ``-30 <= n <= 31``; TFLite's ``shift = -n`` has the same range).

    Returns:
        ``(m0, n)``: Python ints, ``2**30 <= m0 < 2**31`` and ``-30 <= n <= 31``.
    """
    value = _single_value(multiplier, "multiplier", integer=False)
    value = float(value.item()) if isinstance(value, torch.Tensor) else value
    if not math.isfinite(value) or not 2.0**-32 <= value <= 2.0**29:
        raise ValueError(f"multiplier must be finite and in [2**-32, 2**29] (so that 2**30 <= m0 < 2**31 with "
                         f"{_SHIFT_MIN} <= n <= {_SHIFT_MAX}), got {value!r}")
    fraction, exponent = math.frexp(value)  # value = fraction * 2**exponent, 0.5 <= fraction < 1
    scaled = math.ldexp(fraction, 31)       # exact: in [2**30, 2**31), a multiple of 2**-22
    m0 = math.floor(scaled)
    if scaled - m0 >= 0.5:                  # halves up (the difference is exact)
        m0 += 1
    n = -exponent
    if m0 == 2**31:                         # rounded up to 1.0: renormalize
        m0, n = 2**30, n - 1
    return m0, n


def _check_multiplier_pair(m0, n) -> None:
    check_int(m0, "m0", low=_M0_MIN, high=_M0_MAX)
    check_int(n, "n", low=_SHIFT_MIN, high=_SHIFT_MAX)


def requantize(acc: torch.Tensor, m0: int, n: int, zero_point, qmin: int, qmax: int) -> torch.Tensor:
    """Output codes from an int32 accumulator, with integer arithmetic only.

        q = clamp(zero_point + round(acc * m0 / 2**(31 + n)), qmin, qmax)

    ``round`` rounds the exact rational number once, **halves up** (toward +infinity: 2.5 -> 3, -2.5 -> -2):
    with ``s = 31 + n``, ``round(p / 2**s) = (p + 2**(s - 1)) >> s`` for the int64 product ``p = acc * m0``
    (``|p| < 2**62``, and ``>>`` is an arithmetic shift, i.e. floor division by ``2**s``). No float is
    involved. This is TFLite's ``MultiplyByQuantizedMultiplier`` with ``TFLITE_SINGLE_ROUNDING`` (the pair
    ``(m0, -n)`` is its ``(quantized_multiplier, shift)``); TFLite's default build rounds twice (gemmlowp) and
    can differ by one code (see the module docstring).

    Args:
        acc: int32 tensor, any shape, not empty: the accumulator, bias already added.
        m0, n: the fixed-point multiplier (``quantize_multiplier``): ints, ``2**30 <= m0 < 2**31``,
            ``-30 <= n <= 31``.
        zero_point: the output's zero point (Python int or one-element integer tensor) in ``[qmin, qmax]``.
        qmin, qmax: the output code range (-128, 127 for int8; 0, 255 for uint8; ``qmin = zero_point``
            fuses a ReLU).

    Returns:
        int32 tensor of ``acc``'s shape on ``acc``'s device, every code in ``[qmin, qmax]``.
    """
    check_tensor(acc, "acc", dtypes=(torch.int32,))
    _check_multiplier_pair(m0, n)
    _check_qrange(qmin, qmax)
    z = int(_zero_point(zero_point, acc.device))
    if not qmin <= z <= qmax:
        raise ValueError(f"zero_point must lie in [qmin, qmax] = [{qmin}, {qmax}], got {z}")
    shift = 31 + n
    rounded = (acc.to(torch.int64) * m0 + (1 << (shift - 1))) >> shift
    return (rounded + z).clamp(qmin, qmax).to(torch.int32)


def quantize_bias(bias: torch.Tensor, scale_x, scale_w) -> torch.Tensor:
    """A layer's bias as int32 codes on its accumulator's grid: scale ``scale_x * scale_w``, zero point 0.

    ``round(bias * (1 / (scale_x * scale_w)))``: the float32 product of the scales, its float32 reciprocal and
    round half to even, as ``quantize`` does; no clamping to a code range (an int32 holds it).

    Args:
        bias: float tensor (N,) (any shape, computed in float32), finite.
        scale_x: the input's scale; scale_w: the weight's scale (positive floats or one-element tensors).

    Returns:
        int32 tensor of ``bias``'s shape on its device.

    Raises:
        ValueError: when a code would not fit int32 (a bias more than ``2**31`` steps of ``scale_x * scale_w``).
    """
    check_tensor(bias, "bias", dtypes=FLOAT_DTYPES)
    s = _scale(scale_x, bias.device, "scale_x") * _scale(scale_w, bias.device, "scale_w")
    if not bool(s >= torch.finfo(torch.float32).tiny):
        raise ValueError(f"scale_x * scale_w must be a normal float32 number, got {s.item()}")
    codes = _round_scaled(bias, s)
    largest = codes.abs().max().item()
    if not largest <= INT32_MAX:
        raise ValueError(f"bias does not fit int32 on the grid scale_x * scale_w = {s.item():.3g}: its largest "
                         f"code would be {largest:.4g} > 2**31 - 1")
    return codes.to(torch.int32)


def integer_linear(qx: torch.Tensor, zx, qw: torch.Tensor, zw, qbias: torch.Tensor | None, m0: int, n: int,
                   zy, qmin: int, qmax: int) -> torch.Tensor:
    """An integer-only linear layer ``y = x W^T + b``: codes in, codes out, nothing but integers in between.

        acc = (qx - zx) @ (qw - zw)^T + qbias          (int32: one GEMM, two sums, a constant, the bias)
        qy  = requantize(acc, m0, n, zy, qmin, qmax)

    With ``x ~ s_x (qx - zx)``, ``W ~ s_w (qw - zw)``, ``qbias = quantize_bias(b, s_x, s_w)`` and
    ``(m0, n) = quantize_multiplier(s_x * s_w / s_y)``, ``qy`` are the codes of ``y`` on the output grid
    ``(s_y, zy)``: ``y ~ s_y (qy - zy)``. A ReLU after the layer is the clamp: pass ``qmin = zy``.

    Args:
        qx: (B, K) integer codes of the input (uint8, int8, ... any integer dtype). zx: their zero point.
        qw: (N, K) integer codes of the weight, ``nn.Linear``'s layout, on qx's device. zw: their zero point.
        qbias: (N,) int32 bias codes on the grid ``s_x * s_w`` (``quantize_bias``), or None.
        m0, n: the fixed-point multiplier of ``s_x * s_w / s_y`` (``quantize_multiplier``).
        zy, qmin, qmax: the output's zero point and code range.

    Returns:
        (B, N) int32 codes in ``[qmin, qmax]`` on qx's device.

    Raises:
        ValueError: when the worst case of these codes (and the bias) could overflow the int32 accumulator.
    """
    check_tensor(qw, "qw", dtypes=INT_DTYPES, ndim=2)
    _check_int_matrices(qx, qw.T, "qx", "qw.T")   # qw.T: (K, N), K = qx's columns
    device = qx.device
    extra = 0
    if qbias is not None:
        check_tensor(qbias, "qbias", dtypes=(torch.int32,), ndim=1)
        if qbias.shape[0] != qw.shape[0] or qbias.device != device:
            raise ValueError(f"qbias must have shape ({qw.shape[0]},) (qw's rows) on {device}, "
                             f"got shape {tuple(qbias.shape)} on {qbias.device}")
        extra = int(qbias.to(torch.int64).abs().max())
    _check_multiplier_pair(m0, n)
    acc = _zero_point_accumulate(qx, _zero_point(zx, device), qw.T, _zero_point(zw, device), ("qx", "qw"), extra)
    if qbias is not None:
        acc = acc + qbias[None, :]
    return requantize(acc, m0, n, zy, qmin, qmax)
