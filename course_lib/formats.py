"""Notebook 01: number formats bit by bit (fp32, fp16, bf16, fp8 E4M3/E5M2, int8/int4) and memory.

Everything here is built from integer and float arithmetic on float64 (powers of two made from
the bits of a double, round-half-to-even with ``torch.round``), never from torch's casts to the
target dtype: those casts are the independent reference that the tests compare with
(:func:`torch_round`, :func:`torch_encode`).

A floating-point format with ``E`` exponent bits, ``M`` mantissa bits and bias ``b`` stores a
sign ``s``, a biased exponent ``e`` and a mantissa ``m`` and means::

    e == 0  (subnormal):  (-1)^s * 2^(1 - b) * m / 2^M
    e  > 0  (normal):     (-1)^s * 2^(e - b) * (1 + m / 2^M)

except for the special codes, which depend on ``fmt.specials``:

* ``"ieee"`` (fp32, fp16, bf16, fp8 E5M2): exponent all ones means +-Inf (m == 0) or NaN (m != 0);
* ``"fn"`` (fp8 E4M3, "finite"): no infinities; only exponent *and* mantissa all ones is NaN;
* ``"none"`` (fp4 E2M1): no special codes at all, every code is a number.

Conversions round to nearest, ties to even. What happens above the largest finite value is the
format's ``overflow`` rule: ``"inf"`` (IEEE), ``"saturate"`` (clamp to +-max; what torch 2.13's
cast to ``float8_e4m3fn`` does, for Inf inputs too) or ``"nan"`` (what older torch releases did
for ``float8_e4m3fn``). NaN stays NaN.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from dataclasses import dataclass
from fractions import Fraction

import torch

from .validation import FLOAT_DTYPES, check_int, check_tensor

__all__ = [
    "FloatFormat",
    "FP32",
    "FP16",
    "BF16",
    "FP8_E4M3",
    "FP8_E5M2",
    "FP4_E2M1",
    "FORMATS",
    "get_format",
    "round_to_format",
    "decompose",
    "compose",
    "encode",
    "decode",
    "ulp",
    "format_range",
    "representable_values",
    "probe_values",
    "bit_string",
    "int_range",
    "model_memory_bytes",
    "memory_table",
    "max_tokens_per_second",
    "GB",
    "GiB",
    "torch_round",
    "torch_encode",
    "torch_overflow_mode",
    "cast_agreement",
]

GB = 10**9  #: a gigabyte (decimal, what disk and GPU vendors and the seeds write "GB" for)
GiB = 2**30  #: a gibibyte (binary, what most memory tools report)

_SPECIALS = ("ieee", "fn", "none")
_OVERFLOWS = ("inf", "saturate", "nan")

#: input dtypes every conversion accepts (all widen exactly to float64)
INPUT_DTYPES = FLOAT_DTYPES + tuple(
    getattr(torch, name) for name in ("float8_e4m3fn", "float8_e5m2") if hasattr(torch, name)
)
#: integer dtypes accepted for bit fields and bit patterns
INT_DTYPES = (torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64)


@dataclass(frozen=True)
class FloatFormat:
    """A binary floating-point format: 1 sign bit, ``exponent_bits``, ``mantissa_bits``.

    Attributes:
        name: short name (``"fp16"``).
        exponent_bits: E, the width of the biased exponent field (1..8).
        mantissa_bits: M, the width of the stored mantissa (fraction) field (1..23).
        bias: the exponent bias b: a normal number is 2^(e - b) * 1.m.
        specials: ``"ieee"``, ``"fn"`` or ``"none"`` (see the module docstring).
        overflow: what rounding does above the largest finite value: ``"inf"``, ``"saturate"``, ``"nan"``.
        torch_dtype_name: the matching ``torch`` dtype's name, or None.
    """

    name: str
    exponent_bits: int
    mantissa_bits: int
    bias: int
    specials: str = "ieee"
    overflow: str = "inf"
    torch_dtype_name: str | None = None

    def __post_init__(self):
        check_int(self.exponent_bits, "exponent_bits", low=1, high=8)
        check_int(self.mantissa_bits, "mantissa_bits", low=1, high=23)
        check_int(self.bias, "bias", low=0, high=127)
        if self.specials not in _SPECIALS:
            raise ValueError(f"specials must be one of {_SPECIALS}, got {self.specials!r}")
        if self.overflow not in _OVERFLOWS:
            raise ValueError(f"overflow must be one of {_OVERFLOWS}, got {self.overflow!r}")
        if self.overflow == "inf" and self.specials != "ieee":
            raise ValueError(f"overflow='inf' needs specials='ieee' (the format has no Inf), got {self.specials!r}")
        if self.overflow == "nan" and self.specials == "none":
            raise ValueError("overflow='nan' needs a format with a NaN code (specials 'ieee' or 'fn')")
        if self.max_value > 2.0**128 - 2.0**104 or self.min_subnormal < 2.0**-149:
            raise ValueError(f"format {self.name!r} does not fit inside float32 (exponent_bits/bias too large)")

    # -- derived numbers (exact Python floats) --------------------------------------------------
    @property
    def total_bits(self) -> int:
        """1 + exponent_bits + mantissa_bits."""
        return 1 + self.exponent_bits + self.mantissa_bits

    @property
    def has_inf(self) -> bool:
        """Whether the format has +-Inf (only the IEEE-like ones do)."""
        return self.specials == "ieee"

    @property
    def max_exponent_field(self) -> int:
        """2^E - 1: the all-ones exponent field."""
        return 2**self.exponent_bits - 1

    @property
    def emin(self) -> int:
        """Smallest normal exponent 1 - bias (also the scale of subnormals)."""
        return 1 - self.bias

    @property
    def emax(self) -> int:
        """Largest exponent of a finite number."""
        top = self.max_exponent_field - (1 if self.specials == "ieee" else 0)
        return top - self.bias

    @property
    def max_mantissa(self) -> int:
        """Largest mantissa field of a finite number in the top binade."""
        return 2**self.mantissa_bits - (2 if self.specials == "fn" else 1)

    @property
    def max_value(self) -> float:
        """Largest finite value."""
        return math.ldexp(1.0 + self.max_mantissa / 2**self.mantissa_bits, self.emax)

    @property
    def min_normal(self) -> float:
        """Smallest positive normal value 2^emin."""
        return math.ldexp(1.0, self.emin)

    @property
    def min_subnormal(self) -> float:
        """Smallest positive value 2^(emin - M)."""
        return math.ldexp(1.0, self.emin - self.mantissa_bits)

    @property
    def eps(self) -> float:
        """Machine epsilon: the gap between 1 and the next value, 2^-M."""
        return math.ldexp(1.0, -self.mantissa_bits)

    @property
    def nan_mantissa(self) -> int | None:
        """Mantissa field this module writes for NaN (all ones for <= 8-bit formats, like torch;
        the quiet bit alone for wider formats, like the hardware); None when there is no NaN."""
        if self.specials == "none":
            return None
        if self.specials == "fn" or self.total_bits <= 8:
            return 2**self.mantissa_bits - 1
        return 2 ** (self.mantissa_bits - 1)

    @property
    def torch_dtype(self) -> torch.dtype | None:
        """The torch dtype of this format in the installed torch, or None."""
        return getattr(torch, self.torch_dtype_name, None) if self.torch_dtype_name else None

    def with_overflow(self, overflow: str) -> "FloatFormat":
        """The same format with another overflow rule (e.g. ``FP8_E4M3.with_overflow("nan")``)."""
        return dataclasses.replace(self, overflow=overflow)

    def __str__(self) -> str:
        return self.name


FP32 = FloatFormat("fp32", 8, 23, 127, torch_dtype_name="float32")
FP16 = FloatFormat("fp16", 5, 10, 15, torch_dtype_name="float16")
BF16 = FloatFormat("bf16", 8, 7, 127, torch_dtype_name="bfloat16")
FP8_E4M3 = FloatFormat("fp8_e4m3", 4, 3, 7, specials="fn", overflow="saturate", torch_dtype_name="float8_e4m3fn")
FP8_E5M2 = FloatFormat("fp8_e5m2", 5, 2, 15, torch_dtype_name="float8_e5m2")
FP4_E2M1 = FloatFormat("fp4_e2m1", 2, 1, 1, specials="none", overflow="saturate")

#: the course's formats by name, widest first
FORMATS = {f.name: f for f in (FP32, BF16, FP16, FP8_E5M2, FP8_E4M3, FP4_E2M1)}
_ALIASES = {
    "float32": "fp32", "float": "fp32", "single": "fp32",
    "float16": "fp16", "half": "fp16",
    "bfloat16": "bf16",
    "e4m3": "fp8_e4m3", "float8_e4m3fn": "fp8_e4m3", "fp8e4m3": "fp8_e4m3", "e4m3fn": "fp8_e4m3",
    "e5m2": "fp8_e5m2", "float8_e5m2": "fp8_e5m2", "fp8e5m2": "fp8_e5m2",
    "e2m1": "fp4_e2m1", "fp4": "fp4_e2m1",
}


def get_format(fmt) -> FloatFormat:
    """A :class:`FloatFormat` from itself or a name (``"fp16"``, ``"bfloat16"``, ``"e4m3"``, ...).

    Args:
        fmt: a :class:`FloatFormat`, a torch float dtype or a name (``"fp16"``, ``"bf16"``, ``"fp8_e4m3"``, ...).

    Returns:
        FloatFormat: the format.
    """
    if isinstance(fmt, FloatFormat):
        return fmt
    if isinstance(fmt, torch.dtype):
        fmt = str(fmt).replace("torch.", "")
    if not isinstance(fmt, str):
        raise TypeError(f"fmt must be a FloatFormat or a format name, got {type(fmt).__name__}")
    key = fmt.strip().lower().replace("-", "_")
    key = _ALIASES.get(key, key)
    if key not in FORMATS:
        names = ", ".join(list(FORMATS) + sorted(_ALIASES))
        raise ValueError(f"fmt {fmt!r} is not a known format; use a FloatFormat or one of: {names}")
    return FORMATS[key]


# ----------------------------------------------------------------------------------------------
# float64 bit helpers (exact)


def _pow2(k: torch.Tensor) -> torch.Tensor:
    """2.0**k as float64 for an integer tensor k in [-1022, 1023]: the bits of a double, written directly."""
    return ((k.to(torch.int64) + 1023) << 52).view(torch.float64)


def _exponent(a: torch.Tensor) -> torch.Tensor:
    """floor(log2 a) for positive normal float64 ``a`` (int64); -1023 for 0 and float64 subnormals."""
    return ((a.view(torch.int64) >> 52) & 0x7FF) - 1023


def _as_float64(x: torch.Tensor, fmt: FloatFormat, name: str = "x") -> torch.Tensor:
    check_tensor(x, name, dtypes=INPUT_DTYPES, allow_nonfinite=True)
    x64 = x.detach().to(torch.float64)  # widening: exact for every accepted dtype
    if fmt.specials == "none" and bool(torch.isnan(x64).any()):
        raise ValueError(f"{name} contains NaN, which {fmt.name} cannot represent (it has no NaN code)")
    return x64


def _round64(x64: torch.Tensor, fmt: FloatFormat) -> torch.Tensor:
    """Round float64 values to ``fmt`` (nearest, ties to even), applying its overflow rule; float64 out."""
    M = fmt.mantissa_bits
    finite = torch.isfinite(x64)
    a = torch.where(finite, x64.abs(), torch.zeros_like(x64))
    e = torch.clamp(_exponent(a), min=fmt.emin)  # below 2^emin the spacing stays that of the subnormals
    steps = torch.round(a * _pow2(M - e))  # |x| in units of the spacing 2^(e - M); ties to even
    r = steps * _pow2(e - M)
    big = math.inf if fmt.overflow == "inf" else (fmt.max_value if fmt.overflow == "saturate" else math.nan)
    r = torch.where(r > fmt.max_value, torch.full_like(r, big), r)
    if fmt.has_inf:
        non_finite = torch.where(torch.isnan(x64), x64, torch.full_like(x64, math.inf))
    else:  # no infinities: Inf follows the overflow rule (saturate -> max, nan -> NaN)
        non_finite = torch.where(torch.isnan(x64), x64, torch.full_like(x64, big))
    r = torch.where(finite, r, non_finite)
    return torch.copysign(r, x64)  # keeps the sign of zero (-0.0 stays -0.0)


# ----------------------------------------------------------------------------------------------
# the exercises' references


def round_to_format(x: torch.Tensor, fmt) -> torch.Tensor:
    """Round every element of ``x`` to the nearest value of ``fmt`` (ties to even).

    Args:
        x: tensor of any shape, dtype float16/bfloat16/float32/float64 (or float8), not empty.
            NaN and +-Inf are allowed.
        fmt: a :class:`FloatFormat` or its name.

    Returns:
        float32 tensor, same shape and device as ``x``: the nearest representable value of ``fmt``.
        Values below 2^emin become subnormals (or zero, keeping the sign); values above the largest
        finite value (and Inf in a format without Inf) follow ``fmt.overflow``; NaN stays NaN.
        For float32 input this equals ``x.to(fmt.torch_dtype).to(torch.float32)`` bit for bit
        (torch 2.13). For float64 input it is correctly rounded; torch's cast of a float64 tensor
        to a 16- or 8-bit dtype rounds to float32 first, and this double rounding differs near ties.

    Raises:
        TypeError: ``x`` is not a tensor of a floating-point dtype.
        ValueError: ``x`` is empty, or holds NaN and ``fmt`` has no NaN code (fp4 E2M1).
    """
    fmt = get_format(fmt)
    x64 = _as_float64(x, fmt)
    return _round64(x64, fmt).to(torch.float32)  # exact: every value of fmt is a float32


def _fields(x64: torch.Tensor, fmt: FloatFormat):
    """(sign, exponent, mantissa) int64 fields of float64 values after rounding them to ``fmt``."""
    M = fmt.mantissa_bits
    r = _round64(x64, fmt)
    sign = torch.signbit(torch.where(torch.isnan(r), x64, r)).to(torch.int64)
    finite = torch.isfinite(r)
    a = torch.where(finite, r.abs(), torch.zeros_like(r))
    normal = a >= fmt.min_normal
    e_unbiased = torch.where(normal, _exponent(a), torch.full_like(sign, fmt.emin))
    exponent = torch.where(normal, e_unbiased + fmt.bias, torch.zeros_like(sign))
    # normal: a = 2^e (1 + m/2^M) -> m = a 2^(M-e) - 2^M ; subnormal: a = 2^emin m/2^M
    mant = a * _pow2(M - e_unbiased) - torch.where(normal, 2.0**M, 0.0).to(a.dtype)
    mantissa = mant.to(torch.int64)  # exact integers
    if fmt.specials != "none":
        top = torch.full_like(exponent, fmt.max_exponent_field)
        nan = torch.isnan(r)
        exponent = torch.where(nan, top, exponent)
        mantissa = torch.where(nan, torch.full_like(mantissa, fmt.nan_mantissa), mantissa)
        if fmt.has_inf:
            inf = torch.isinf(r)
            exponent = torch.where(inf, top, exponent)
            mantissa = torch.where(inf, torch.zeros_like(mantissa), mantissa)
    return sign, exponent, mantissa


def decompose(x: torch.Tensor, fmt):
    """Bit fields of ``x`` stored in ``fmt`` (after rounding to it).

    Args:
        x: float tensor (any shape, not empty; NaN/Inf allowed).
        fmt: a :class:`FloatFormat` or its name.

    Returns:
        ``(sign, exponent, mantissa)``: int64 tensors of x's shape: the sign bit (0/1), the
        biased exponent field (0 .. 2^E - 1) and the mantissa field (0 .. 2^M - 1).
    """
    fmt = get_format(fmt)
    return _fields(_as_float64(x, fmt), fmt)


def _check_field(t, name: str, high: int) -> torch.Tensor:
    check_tensor(t, name, dtypes=INT_DTYPES)
    t = t.to(torch.int64)
    bad = (t < 0) | (t > high)
    if bool(bad.any()):
        first = int(t[bad].flatten()[0])
        raise ValueError(f"{name} must be in [0, {high}], got {first}")
    return t


def compose(sign: torch.Tensor, exponent: torch.Tensor, mantissa: torch.Tensor, fmt) -> torch.Tensor:
    """The value that the bit fields ``(sign, exponent, mantissa)`` stand for in ``fmt``.

    Args:
        sign: integer tensor of 0/1.
        exponent: integer tensor of biased exponent fields, 0 .. 2^E - 1.
        mantissa: integer tensor of mantissa fields, 0 .. 2^M - 1 (shapes broadcast together).
        fmt: a :class:`FloatFormat` or its name.

    Returns:
        float32 tensor (every value of these formats is exactly a float32); NaN and +-Inf where
        the fields are a special code of ``fmt`` (see the module docstring); -0.0 for sign 1, zero fields.

    Raises:
        ValueError naming the field that is out of range; TypeError for a non-integer tensor.
    """
    fmt = get_format(fmt)
    s = _check_field(sign, "sign", 1)
    e = _check_field(exponent, "exponent", fmt.max_exponent_field)
    m = _check_field(mantissa, "mantissa", 2**fmt.mantissa_bits - 1)
    s, e, m = torch.broadcast_tensors(s, e, m)
    M = fmt.mantissa_bits
    m64 = m.to(torch.float64)
    normal = (m64 + 2.0**M) * _pow2(e - fmt.bias - M)
    subnormal = m64 * _pow2(torch.full_like(e, fmt.emin - M))
    value = torch.where(e == 0, subnormal, normal)
    top = e == fmt.max_exponent_field
    if fmt.specials == "ieee":
        value = torch.where(top & (m == 0), torch.full_like(value, math.inf), value)
        value = torch.where(top & (m != 0), torch.full_like(value, math.nan), value)
    elif fmt.specials == "fn":
        value = torch.where(top & (m == 2**M - 1), torch.full_like(value, math.nan), value)
    value = torch.where(s == 1, -value, value)
    return value.to(torch.float32)


def encode(x: torch.Tensor, fmt) -> torch.Tensor:
    """Bit pattern of ``x`` rounded to ``fmt``, as an unsigned integer in an int64 tensor.

    The pattern is ``sign << (E + M) | exponent << M | mantissa``, the same bits that torch
    stores (``torch_encode``), except that NaN has many patterns: this writes the input's sign,
    an all-ones exponent and ``fmt.nan_mantissa``.

    Args:
        x: float tensor, any shape.
        fmt: a :class:`FloatFormat` or its name (``"fp16"``, ``"bf16"``, ``"fp8_e4m3"``, ...).

    Returns:
        torch.Tensor: int64, ``x``'s shape, each value in [0, 2**total_bits).
    """
    fmt = get_format(fmt)
    s, e, m = _fields(_as_float64(x, fmt), fmt)
    return (s << (fmt.exponent_bits + fmt.mantissa_bits)) | (e << fmt.mantissa_bits) | m


def decode(bits: torch.Tensor, fmt) -> torch.Tensor:
    """The float32 value of each bit pattern (0 .. 2^total_bits - 1) of ``fmt``.

    Args:
        bits: integer tensor of bit patterns, any shape.
        fmt: a :class:`FloatFormat` or its name (``"fp16"``, ``"bf16"``, ``"fp8_e4m3"``, ...).

    Returns:
        torch.Tensor: float32, ``bits``' shape.
    """
    fmt = get_format(fmt)
    check_tensor(bits, "bits", dtypes=INT_DTYPES)
    b = bits.to(torch.int64)
    high = 2**fmt.total_bits - 1
    bad = (b < 0) | (b > high)
    if bool(bad.any()):
        raise ValueError(f"bits must be in [0, {high}] for {fmt.name} ({fmt.total_bits} bits), "
                         f"got {int(b[bad].flatten()[0])}")
    M, E = fmt.mantissa_bits, fmt.exponent_bits
    return compose(b >> (E + M), (b >> M) & (2**E - 1), b & (2**M - 1), fmt)


def ulp(x: torch.Tensor, fmt) -> torch.Tensor:
    """Spacing of ``fmt``'s values at ``x``: 2^(max(floor(log2|x|), emin) - M), capped at the top binade.

    Rounding to nearest errs by at most ``ulp(x) / 2`` for every ``|x| <= fmt.max_value``.

    Args:
        x: finite float tensor (NaN and Inf have no spacing: ValueError naming ``x``).
    Returns:
        float32 tensor of x's shape and device.
    """
    fmt = get_format(fmt)
    check_tensor(x, "x", dtypes=INPUT_DTYPES)
    a = x.detach().to(torch.float64).abs()
    e = torch.clamp(_exponent(a), min=fmt.emin, max=fmt.emax)
    return _pow2(e - fmt.mantissa_bits).to(torch.float32)


def format_range(fmt) -> dict:
    """Key numbers of a format: ``max``, ``min_normal``, ``min_subnormal``, ``eps`` (= ulp(1)), ``bits``.

    Args:
        fmt: a :class:`FloatFormat` or its name (``"fp16"``, ``"bf16"``, ``"fp8_e4m3"``, ...).

    Returns:
        dict: ``max``, ``min_normal``, ``min_subnormal``, ``eps`` (floats) and ``bits`` (int).
    """
    fmt = get_format(fmt)
    return {
        "bits": fmt.total_bits,
        "max": fmt.max_value,
        "min_normal": fmt.min_normal,
        "min_subnormal": fmt.min_subnormal,
        "eps": fmt.eps,
    }


def representable_values(fmt, *, finite_only: bool = True) -> torch.Tensor:
    """Every value of a format of at most 16 bits, sorted, without duplicates (float32).

    ``+0.0`` and ``-0.0`` count as one value; NaN (and, unless ``finite_only``, Inf) are dropped / kept.

    Args:
        fmt: a :class:`FloatFormat` or its name (``"fp16"``, ``"bf16"``, ``"fp8_e4m3"``, ...).
        finite_only: drop Inf as well as NaN.

    Returns:
        torch.Tensor: float32, 1-D, ascending.
    """
    fmt = get_format(fmt)
    if fmt.total_bits > 16:
        raise ValueError(f"fmt must have at most 16 bits to list its values, {fmt.name} has {fmt.total_bits}")
    values = decode(torch.arange(2**fmt.total_bits), fmt)
    keep = torch.isfinite(values) if finite_only else ~torch.isnan(values)
    values = values[keep] + 0.0  # -0.0 + 0.0 = +0.0, so the two zeros merge
    return torch.unique(values)


def probe_values(fmt, n: int = 10_000, seed: int = 0) -> torch.Tensor:
    """float32 inputs that test a rounding to ``fmt`` where it is hard (1-D, CPU).

    Both signs of: ``n`` random values log-uniform from below the smallest subnormal to above the
    largest value; for formats of at most 16 bits every value, every tie halfway between neighbours
    and the float32 numbers just above and below each tie (ties to even, the subnormal ties, the
    overflow threshold); 0, Inf and NaN (NaN only where the format has one).

    Args:
        fmt: a :class:`FloatFormat` or its name (``"fp16"``, ``"bf16"``, ``"fp8_e4m3"``, ...).
        n: number of random log-uniform magnitudes.
        seed: seed of the random part.

    Returns:
        torch.Tensor: float32, 1-D, on the CPU.
    """
    fmt = get_format(fmt)
    check_int(n, "n", low=0)
    check_int(seed, "seed")
    g = torch.Generator().manual_seed(seed)
    lo = fmt.emin - fmt.mantissa_bits - 2
    hi = min(fmt.emax + 2, 127.99)
    logs = torch.rand(n, generator=g, dtype=torch.float64) * (hi - lo) + lo
    parts = [torch.exp2(logs).to(torch.float32)]
    if fmt.total_bits <= 16:
        v = representable_values(fmt).double()
        v = v[v >= 0]
        top = fmt.max_value + math.ldexp(1.0, fmt.emax - fmt.mantissa_bits) / 2  # the overflow tie
        ties = torch.cat([(v[1:] + v[:-1]) / 2, torch.tensor([top], dtype=torch.float64)]).to(torch.float32)
        parts += [v.to(torch.float32), ties, torch.nextafter(ties, torch.tensor(math.inf)),
                  torch.nextafter(ties, torch.tensor(0.0))]
    specials = [0.0, math.inf, 3.0e38, 1e-45] + ([math.nan] if fmt.specials != "none" else [])
    parts.append(torch.tensor(specials))
    pos = torch.cat(parts)
    return torch.cat([pos, -pos])


def bit_string(value: float, fmt, sep: str = " ") -> str:
    """The bits of one number stored in ``fmt`` as text: sign, exponent and mantissa separated by ``sep``.

    Example: ``bit_string(0.1, "fp16")`` is ``"0 01011 1001100110"``.

    Args:
        value: the number (rounded to ``fmt`` first).
        fmt: a :class:`FloatFormat` or its name (``"fp16"``, ``"bf16"``, ``"fp8_e4m3"``, ...).
        sep: separator between the three fields.

    Returns:
        str: the bits, most significant first.
    """
    fmt = get_format(fmt)
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"value must be a number, got {type(value).__name__}")
    s, e, m = (int(t) for t in _fields(_as_float64(torch.tensor([float(value)], dtype=torch.float64), fmt, "value"), fmt))
    return sep.join([str(s), format(e, f"0{fmt.exponent_bits}b"), format(m, f"0{fmt.mantissa_bits}b")])


def int_range(bits: int, signed: bool = True) -> tuple[int, int]:
    """(qmin, qmax) of a ``bits``-wide integer: two's complement when ``signed``.

    Args:
        bits: width, an int in [1, 64].
        signed: two's complement (-2^(bits-1) .. 2^(bits-1) - 1) or unsigned (0 .. 2^bits - 1).

    Returns:
        tuple[int, int]: ``(qmin, qmax)``.
    """
    check_int(bits, "bits", low=1, high=64)
    if not isinstance(signed, bool):
        raise TypeError(f"signed must be a bool, got {type(signed).__name__}")
    if signed:
        return -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    return 0, 2**bits - 1


def _check_count(n, name: str) -> int:
    if isinstance(n, bool) or not isinstance(n, numbers.Real):
        raise TypeError(f"{name} must be a number, got {type(n).__name__}")
    if not math.isfinite(n):
        raise ValueError(f"{name} must be finite, got {n}")
    if n < 0 or n != int(n):
        raise ValueError(f"{name} must be a whole number >= 0, got {n}")
    return int(n)


def model_memory_bytes(num_params, bits_per_param) -> int:
    """Bytes to store ``num_params`` parameters at ``bits_per_param`` bits each, densely packed.

    Args:
        num_params: a whole number >= 0 (an int, or a float such as ``7e9``).
        bits_per_param: bits per parameter, a number in (0, 64]: 32, 16, 8, 4, or a fractional
            average such as 4.5 (4-bit codes plus one 32-bit scale per 64 weights).

    Returns:
        int: ceil(num_params * bits_per_param / 8), computed exactly with fractions (a float
        ``bits_per_param`` is read as written: 1.58 is 158/100).
    """
    n = _check_count(num_params, "num_params")
    if isinstance(bits_per_param, bool) or not isinstance(bits_per_param, numbers.Real):
        raise TypeError(f"bits_per_param must be a number, got {type(bits_per_param).__name__}")
    if not math.isfinite(bits_per_param) or not 0 < bits_per_param <= 64:
        raise ValueError(f"bits_per_param must be in (0, 64], got {bits_per_param}")
    # a float is taken as written (its shortest repr: 1.58 means 158/100, not the nearest binary fraction)
    bits = Fraction(repr(bits_per_param)) if isinstance(bits_per_param, float) else Fraction(bits_per_param)
    return math.ceil(Fraction(n) * bits / 8)


#: formats of the seeds' memory tables: (name, bits per parameter)
MEMORY_FORMATS = (("fp32", 32), ("fp16/bf16", 16), ("int8", 8), ("int4", 4))


def memory_table(num_params, formats=MEMORY_FORMATS) -> list[dict]:
    """One row per format: ``format``, ``bits``, ``bytes``, ``GB`` (10^9 bytes), ``GiB`` (2^30 bytes).

    Args:
        num_params: number of parameters (a non-negative int).
        formats: ``(name, bits per parameter)`` pairs, one per row.

    Returns:
        list[dict]: one row per format.
    """
    rows = []
    for name, bits in formats:
        nbytes = model_memory_bytes(num_params, bits)
        rows.append({"format": name, "bits": bits, "bytes": nbytes, "GB": nbytes / GB, "GiB": nbytes / GiB})
    return rows


def max_tokens_per_second(model_bytes, bandwidth_bytes_per_s) -> float:
    """Upper bound on batch-1 decoding speed: each token reads every weight once, so
    tokens/s <= bandwidth / model bytes (KV cache, activations and imperfect bandwidth only lower it).

    Args:
        model_bytes: bytes read per token (the weights).
        bandwidth_bytes_per_s: memory bandwidth in bytes per second.

    Returns:
        float: the upper bound in tokens per second.
    """
    nbytes = _check_count(model_bytes, "model_bytes")
    if nbytes == 0:
        raise ValueError("model_bytes must be > 0")
    if isinstance(bandwidth_bytes_per_s, bool) or not isinstance(bandwidth_bytes_per_s, numbers.Real):
        raise TypeError(f"bandwidth_bytes_per_s must be a number, got {type(bandwidth_bytes_per_s).__name__}")
    if not math.isfinite(bandwidth_bytes_per_s) or bandwidth_bytes_per_s <= 0:
        raise ValueError(f"bandwidth_bytes_per_s must be finite and > 0, got {bandwidth_bytes_per_s}")
    return bandwidth_bytes_per_s / nbytes


# ----------------------------------------------------------------------------------------------
# torch's own casts: the independent reference


def _torch_dtype(fmt: FloatFormat) -> torch.dtype:
    dtype = fmt.torch_dtype
    if dtype is None:
        raise ValueError(f"fmt {fmt.name} has no torch dtype in torch {torch.__version__}")
    return dtype


def torch_round(x: torch.Tensor, fmt) -> torch.Tensor:
    """torch's cast: ``x.to(fmt's dtype).to(torch.float32)``.

    Args:
        x: float tensor, any shape.
        fmt: a :class:`FloatFormat` or its name (``"fp16"``, ``"bf16"``, ``"fp8_e4m3"``, ...). torch must have its dtype.

    Returns:
        torch.Tensor: float32, ``x``'s shape.
    """
    fmt = get_format(fmt)
    check_tensor(x, "x", dtypes=INPUT_DTYPES, allow_nonfinite=True)
    return x.to(_torch_dtype(fmt)).to(torch.float32)


def torch_encode(x: torch.Tensor, fmt) -> torch.Tensor:
    """The bits torch stores for ``x.to(fmt's dtype)``, as unsigned integers in an int64 tensor.

    Args:
        x: float tensor, any shape.
        fmt: a :class:`FloatFormat` or its name (``"fp16"``, ``"bf16"``, ``"fp8_e4m3"``, ...). torch must have its dtype.

    Returns:
        torch.Tensor: int64, ``x``'s shape.
    """
    fmt = get_format(fmt)
    check_tensor(x, "x", dtypes=INPUT_DTYPES, allow_nonfinite=True)
    as_int = {8: torch.uint8, 16: torch.int16, 32: torch.int32}[fmt.total_bits]
    stored = x.to(_torch_dtype(fmt)).view(as_int).to(torch.int64)
    return stored & (2**fmt.total_bits - 1)


def torch_overflow_mode(fmt, device="cpu") -> str:
    """What the installed torch's cast on ``device`` does above ``fmt``'s maximum: ``"inf"``,
    ``"saturate"`` or ``"nan"`` (torch 2.13 saturates float8_e4m3fn; older releases gave NaN).

    Args:
        fmt: a :class:`FloatFormat` or its name (``"fp16"``, ``"bf16"``, ``"fp8_e4m3"``, ...).
        device: where the cast runs.

    Returns:
        str: ``"inf"``, ``"saturate"`` or ``"nan"``.
    """
    fmt = get_format(fmt)
    y = torch_round(torch.tensor([fmt.max_value * 4], device=device), fmt)
    if torch.isinf(y).all():
        return "inf"
    if torch.isnan(y).all():
        return "nan"
    return "saturate"


def cast_agreement(x: torch.Tensor, fmt) -> float:
    """Fraction of elements where :func:`round_to_format` and torch's cast agree bit for bit
    (NaN counts as agreeing with NaN; +0.0 and -0.0 differ).

    Args:
        x: float tensor, any shape.
        fmt: a :class:`FloatFormat` or its name (``"fp16"``, ``"bf16"``, ``"fp8_e4m3"``, ...).

    Returns:
        float: the agreeing fraction, in [0, 1].
    """
    fmt = get_format(fmt)
    ours = round_to_format(x, fmt)
    theirs = torch_round(x, fmt)
    same = (ours.view(torch.int32) == theirs.view(torch.int32)) | (torch.isnan(ours) & torch.isnan(theirs))
    return same.double().mean().item()
