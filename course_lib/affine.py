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
"""

from __future__ import annotations

import numbers

import torch

from .validation import FLOAT_DTYPES, check_bits, check_int, check_tensor

__all__ = [
    "SCALE_EPS",
    "INT32_MAX",
    "qrange",
    "compute_scale_zero_point",
    "quantize",
    "dequantize",
    "fake_quantize",
    "representable_range",
    "int32_matmul",
    "int32_max_inner_dim",
    "quantized_matmul",
]

#: The smallest scale the course ever uses (float32 machine epsilon, PyTorch observers' ``eps``).
SCALE_EPS = torch.finfo(torch.float32).eps
#: The largest value an int32 accumulator holds.
INT32_MAX = 2**31 - 1
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
    inv_scale = 1.0 / s  # float32, as PyTorch's kernels compute it
    q = torch.round(x.to(torch.float32) * inv_scale) + z  # round first, then add the zero point
    return q.clamp(qmin, qmax).to(torch.int32)


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
    z_a, z_b = _zero_point(za, device), _zero_point(zb, device)
    k = qa.shape[1]
    max_a, max_b = int(qa.to(torch.int64).abs().max()), int(qb.to(torch.int64).abs().max())
    worst = k * (max_a * max_b + abs(int(z_a)) * max_b + abs(int(z_b)) * max_a + abs(int(z_a) * int(z_b)))
    if worst > INT32_MAX:
        raise ValueError(f"int32 accumulation could overflow: K={k} terms with |qa| <= {max_a}, |qb| <= {max_b} "
                         f"and zero points {int(z_a)}, {int(z_b)} can reach {worst} > 2**31 - 1")
    qa32, qb32 = qa.to(torch.int32), qb.to(torch.int32)
    acc = int32_matmul(qa32, qb32)
    acc = acc - z_a * qb32.sum(dim=0, dtype=torch.int32)[None, :]
    acc = acc - z_b * qa32.sum(dim=1, dtype=torch.int32)[:, None]
    acc = acc + k * z_a * z_b
    return acc.to(torch.float32) * (s_a * s_b)
