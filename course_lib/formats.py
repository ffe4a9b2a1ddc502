"""Notebook 01: number formats bit by bit (fp32, fp16, bf16, fp8 E4M3/E5M2, int8/int4), memory, and the
block-scaled formats OCP MX (MXFP8, MXFP6, MXFP4) and NVFP4.

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

Block-scaled formats (:func:`mx_quantize`, :func:`nvfp4_quantize`). The OCP Microscaling Formats (MX)
specification v1.0 gives a block of 32 elements one shared scale ``X`` stored in E8M0 (8 exponent bits, no
sign, no mantissa: the powers of two 2^-127 .. 2^127, the byte 0xFF is NaN); each element is a small float
(E4M3 or E5M2: MXFP8; E3M2 or E2M3: MXFP6; E2M1: MXFP4) and stands for ``X * P``. The conversion the spec
describes (its section 6.3) takes, per block::

    X = 2^(floor(log2(max |V_i|)) - emax_elem)      (emax_elem: the element format's largest exponent)
    P_i = V_i / X rounded to the element format, values beyond its largest clamped to it (saturation)

What the references here choose where implementations differ:

* Elements round to nearest, ties to even (IEEE 754's default and :func:`round_to_format`'s).
  llama.cpp's Python package ``gguf`` (``gguf.quants.MXFP4``) takes the first nearest value of its E2M1
  table, which sends a tie to the smaller magnitude (x / X = 0.75, 1.75, 3.5 give 0.5, 1.5, 3 there, 1, 2, 4
  here); Microsoft's ``microxcaling`` library rounds ties away from zero by default. Without exact ties they
  agree: ``tests/library/test_formats.py`` compares with gguf byte for byte.
* The shared exponent is clamped below at -127, E8M0's smallest: a block of zeros, or of values below
  2^(emax_elem - 127), gets X = 2^-127 (as in microxcaling; gguf writes the same byte 0 for a block of
  zeros). A float32 block never needs more than 2^125; a float64 block that would needs a scale E8M0
  does not have, and is rejected.
* A last block shorter than the block size (the last axis not a multiple of it) is a block of its own,
  which is what padding it with zeros gives (microxcaling pads; gguf needs whole blocks).
* E5M2 elements saturate at 57344 like the others, where the plain E5M2 cast overflows to Inf.

NVFP4 (NVIDIA, Blackwell GPUs; the NVFP4 recipe of NVIDIA's TransformerEngine, arXiv 2509.25149) keeps E2M1
elements but scales each block of 16 by an E4M3 number (not only a power of two) and the tensor by one float32::

    s_t = max |x| / (6 * 448)                      (float32: the largest magnitude lands on 6 * 448 * s_t)
    s_b = E4M3(max_block |x| / (6 * s_t))           (nearest, ties to even; at most 448)
    P_i = E2M1(x_i / (s_b * s_t)),    x_hat_i = P_i * s_b * s_t

Here the quotient is computed once in float64 (the scales' product is exact there) and then rounded to E2M1,
which for float32 input is the exact quotient's rounding; code that divides in float32, or multiplies by a
float32 reciprocal, can land on the other side of a tie in rare cases. A block whose scale rounds to 0 in E4M3
(a block below 2^-10 * 6 * s_t) stores zeros; an all-zero tensor gets s_t = 1, and s_t never goes below
float32's smallest subnormal 2^-149. gguf's NVFP4 blocks hold 64 values as four blocks of 16 (four E4M3 scale
bytes, then the 4-bit codes) and no tensor scale; its decoder reads the course's codes and scales to the
course's values divided by the tensor scale (``tests/library/test_formats.py``).
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
    "FP6_E2M3",
    "FP6_E3M2",
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
    "E8M0_MIN_EXP",
    "E8M0_MAX_EXP",
    "MX_BLOCK_SIZE",
    "NVFP4_BLOCK_SIZE",
    "MX_ELEMENT_FORMATS",
    "BlockFormat",
    "BLOCK_FORMATS",
    "mx_quantize",
    "mx_dequantize",
    "mxfp4_quantize",
    "nvfp4_quantize",
    "nvfp4_dequantize",
    "block_fake_quantize",
    "block_format_bits",
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
# the two 6-bit element formats of the OCP MX specification: no Inf, no NaN, every code a number
FP6_E2M3 = FloatFormat("fp6_e2m3", 2, 3, 1, specials="none", overflow="saturate")
FP6_E3M2 = FloatFormat("fp6_e3m2", 3, 2, 3, specials="none", overflow="saturate")

#: the course's formats by name, widest first
FORMATS = {f.name: f for f in (FP32, BF16, FP16, FP8_E5M2, FP8_E4M3, FP6_E3M2, FP6_E2M3, FP4_E2M1)}
_ALIASES = {
    "float32": "fp32", "float": "fp32", "single": "fp32",
    "float16": "fp16", "half": "fp16",
    "bfloat16": "bf16",
    "e4m3": "fp8_e4m3", "float8_e4m3fn": "fp8_e4m3", "fp8e4m3": "fp8_e4m3", "e4m3fn": "fp8_e4m3",
    "e5m2": "fp8_e5m2", "float8_e5m2": "fp8_e5m2", "fp8e5m2": "fp8_e5m2",
    "e2m1": "fp4_e2m1", "fp4": "fp4_e2m1",
    "e2m3": "fp6_e2m3", "e3m2": "fp6_e3m2",
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
    all_finite = bool(finite.all())  # the common case skips the special values' passes (block formats, weights)
    a = x64.abs() if all_finite else torch.where(finite, x64.abs(), torch.zeros_like(x64))
    e = torch.clamp(_exponent(a), min=fmt.emin)  # below 2^emin the spacing stays that of the subnormals
    steps = torch.round(a * _pow2(M - e))  # |x| in units of the spacing 2^(e - M); ties to even
    r = steps * _pow2(e - M)
    big = math.inf if fmt.overflow == "inf" else (fmt.max_value if fmt.overflow == "saturate" else math.nan)
    if fmt.overflow == "saturate":
        r = torch.clamp(r, max=fmt.max_value)  # r is finite and >= 0 here
    else:
        r = torch.where(r > fmt.max_value, torch.full_like(r, big), r)
    if not all_finite:
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
# block-scaled formats: OCP MX (MXFP8, MXFP6, MXFP4) and NVIDIA's NVFP4 (the module docstring says
# where they follow the specification and where they fill in a detail)

#: E8M0's exponents: X = 2^k for k in [-127, 127] (stored as k + 127; 0xFF is NaN)
E8M0_MIN_EXP, E8M0_MAX_EXP = -127, 127
#: elements per shared scale in the OCP MX formats
MX_BLOCK_SIZE = 32
#: elements per E4M3 block scale in NVFP4
NVFP4_BLOCK_SIZE = 16
#: the MX element formats, each saturating (the spec's conversion clamps to the largest value)
MX_ELEMENT_FORMATS = {f.name: f for f in (FP8_E4M3, FP8_E5M2.with_overflow("saturate"), FP6_E3M2, FP6_E2M3, FP4_E2M1)}
_BLOCK_INT_DTYPES = (torch.int8, torch.int16, torch.int32, torch.int64)
_NVFP4_RANGE = FP4_E2M1.max_value * FP8_E4M3.max_value  # 6 * 448 = 2688


def _mx_element(element_format) -> FloatFormat:
    """The saturating MX element format for ``element_format`` (a FloatFormat or a name)."""
    try:
        fmt = get_format(element_format)
    except (TypeError, ValueError) as err:
        raise type(err)(f"element_format: {err}") from None
    for elem in MX_ELEMENT_FORMATS.values():
        if (fmt.exponent_bits, fmt.mantissa_bits, fmt.bias, fmt.specials) == (
                elem.exponent_bits, elem.mantissa_bits, elem.bias, elem.specials):
            return elem
    raise ValueError(f"element_format must be an MX element format ({', '.join(MX_ELEMENT_FORMATS)}), got {fmt.name}")


def _check_blocked(x, name: str, block_size) -> None:
    check_tensor(x, name, dtypes=FLOAT_DTYPES)
    if x.dim() < 1:
        raise ValueError(f"{name} must have at least 1 dimension (blocks run along the last one), got a 0-dim tensor")
    check_int(block_size, "block_size", low=1)


def _in_blocks(x64: torch.Tensor, block_size: int) -> torch.Tensor:
    """``[..., n]`` -> ``[..., ceil(n / block_size), block_size]``, the last block padded with zeros."""
    pad = (-x64.shape[-1]) % block_size
    if pad:
        x64 = torch.nn.functional.pad(x64, (0, pad))
    return x64.reshape(*x64.shape[:-1], -1, block_size)


def _per_element(per_block: torch.Tensor, block_size: int, n: int) -> torch.Tensor:
    """One value per block ``[..., nb]`` -> repeated for each element ``[..., n]``."""
    return per_block.repeat_interleave(block_size, dim=-1)[..., :n]


def _check_per_block(t, name: str, values: torch.Tensor, block_size: int, dtypes) -> None:
    check_tensor(t, name, dtypes=dtypes)
    if t.device != values.device:
        raise ValueError(f"{name} is on {t.device} and the values on {values.device}: put them on one device")
    want = (*values.shape[:-1], -(-values.shape[-1] // block_size))
    if tuple(t.shape) != want:
        raise ValueError(f"{name} must have shape {want} (one per block of {block_size} along the last axis of "
                         f"{tuple(values.shape)}), got {tuple(t.shape)}")


def mx_quantize(x: torch.Tensor, element_format, block_size: int = MX_BLOCK_SIZE) -> tuple[torch.Tensor, torch.Tensor]:
    """Quantize ``x`` to an OCP MX format: one power-of-two scale per block, small-float elements.

    Blocks are ``block_size`` consecutive values along the last axis (a shorter last block is a block
    of its own). Per block, the shared exponent is ``k = floor(log2(max |x|)) - emax`` with ``emax`` the
    element format's largest exponent, clamped to E8M0's ``[-127, 127]`` (-127 for an all-zero block),
    and each element is ``x / 2^k`` rounded to the element format (nearest, ties to even, saturating at
    its largest value). Where this follows the OCP MX specification and where it fills in a detail (ties,
    the clamp, short blocks, E5M2 saturation): the module docstring.

    Args:
        x: float tensor ``[..., n]`` (float16, bfloat16, float32 or float64), at least 1-D, finite, not empty.
        element_format: ``"fp8_e4m3"`` (MXFP8), ``"fp8_e5m2"``, ``"fp6_e3m2"``, ``"fp6_e2m3"`` (MXFP6) or
            ``"fp4_e2m1"`` (MXFP4), or the FloatFormat; its overflow rule is replaced by saturation.
        block_size: values per shared scale (32 in the spec), >= 1.

    Returns:
        ``(elements, shared_exp)``: float32 ``[..., n]``, the element values P (on the element format's
        grid, ``|P| <=`` its largest value), and int64 ``[..., ceil(n / block_size)]``, each block's ``k``
        (the scale is ``2^k``; E8M0 stores ``k + 127``). ``x ~ P * 2^k``. On ``x``'s device.

    Raises:
        TypeError: ``x`` is not a float tensor, ``block_size`` not an int.
        ValueError: ``x`` is 0-dim, empty or not finite, or has a block beyond E8M0's largest scale
            (float64 input only); ``block_size < 1``; ``element_format`` is not an MX element format.
    """
    fmt = _mx_element(element_format)
    _check_blocked(x, "x", block_size)
    x64 = x.detach().to(torch.float64)
    blocks = _in_blocks(x64, block_size)
    k = _exponent(blocks.abs().amax(dim=-1)) - fmt.emax  # floor(log2 amax) - emax; about -1023 for zeros
    if bool((k > E8M0_MAX_EXP).any()):
        raise ValueError(f"x has a block whose largest magnitude needs a scale above 2^{E8M0_MAX_EXP} (E8M0's "
                         f"largest) for {fmt.name} elements: quantize float32 data")
    k = torch.clamp(k, min=E8M0_MIN_EXP)
    elements = _round64(blocks * _pow2(-k).unsqueeze(-1), fmt)  # exact scaling, one rounding
    elements = elements.reshape(*x.shape[:-1], -1)[..., : x.shape[-1]]
    return elements.to(torch.float32), k


def mx_dequantize(elements: torch.Tensor, shared_exp: torch.Tensor, block_size: int = MX_BLOCK_SIZE) -> torch.Tensor:
    """The values an MX tensor stands for: each element times its block's scale ``2^k``.

    Args:
        elements: float tensor ``[..., n]``, the element values (as :func:`mx_quantize` returns them).
        shared_exp: integer tensor ``[..., ceil(n / block_size)]``, each block's exponent ``k`` in [-127, 127].
        block_size: values per shared scale, >= 1.

    Returns:
        torch.Tensor: float32 ``[..., n]``, ``elements * 2^k`` (exact for the MX element formats).
    """
    _check_blocked(elements, "elements", block_size)
    _check_per_block(shared_exp, "shared_exp", elements, block_size, _BLOCK_INT_DTYPES)
    k = shared_exp.to(torch.int64)
    if bool(((k < E8M0_MIN_EXP) | (k > E8M0_MAX_EXP)).any()):
        raise ValueError(f"shared_exp must be in [{E8M0_MIN_EXP}, {E8M0_MAX_EXP}] (E8M0's exponents), "
                         f"got {int(k.min())} .. {int(k.max())}")
    scale = _per_element(_pow2(k), block_size, elements.shape[-1])
    return (elements.to(torch.float64) * scale).to(torch.float32)


def mxfp4_quantize(x: torch.Tensor, block_size: int = MX_BLOCK_SIZE) -> tuple[torch.Tensor, torch.Tensor]:
    """MXFP4: :func:`mx_quantize` with E2M1 elements (largest exponent 2, largest value 6).

    Per block: ``k = clamp(floor(log2(max |x|)) - 2, -127, 127)``, elements ``x / 2^k`` rounded to
    E2M1's values 0, 0.5, 1, 1.5, 2, 3, 4, 6 (with sign; ties to even, saturating at 6).

    Args:
        x: float tensor ``[..., n]``, at least 1-D, finite, not empty.
        block_size: values per shared scale (32 in the spec), >= 1; a shorter last block is its own block.

    Returns:
        ``(elements, shared_exp)``: float32 ``[..., n]`` E2M1 values and int64 ``[..., ceil(n / block_size)]``
        exponents, as :func:`mx_quantize`.
    """
    return mx_quantize(x, FP4_E2M1, block_size)


def nvfp4_quantize(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Quantize ``x`` to NVFP4: E2M1 elements, an E4M3 scale per 16 values, one float32 scale per tensor.

    ``s_t = max|x| / 2688`` (float32, at least 2^-149; 1 for an all-zero tensor),
    ``s_b = E4M3(max_block|x| / (6 s_t))``, elements ``E2M1(x / (s_b s_t))`` (ties to even; a block whose
    ``s_b`` rounds to 0 stores zeros).
    Blocks run along the last axis; a shorter last block is a block of its own. Where this follows
    NVIDIA's recipe and where it fills in a detail: the module docstring.

    Args:
        x: float tensor ``[..., n]`` (float16, bfloat16, float32 or float64), at least 1-D, finite, not empty.

    Returns:
        ``(elements, block_scales, tensor_scale)``: float32 ``[..., n]`` E2M1 values; float32
        ``[..., ceil(n / 16)]`` block scales, each a non-negative E4M3 value (<= 448); a 0-dim float32
        tensor ``s_t``. ``x ~ elements * block_scale * tensor_scale``. On ``x``'s device.
    """
    _check_blocked(x, "x", NVFP4_BLOCK_SIZE)
    x64 = x.detach().to(torch.float64)
    amax = x64.abs().amax()
    tensor_scale = (amax / _NVFP4_RANGE).to(torch.float32)
    if bool(torch.isinf(tensor_scale)):
        raise ValueError(f"x's largest magnitude {amax.item():.4g} is beyond float32's range: quantize float32 data")
    # never below float32's smallest subnormal (a tiny tensor keeps its values); 1 for an all-zero tensor
    tensor_scale = torch.clamp(tensor_scale, min=math.ldexp(1.0, -149))
    tensor_scale = torch.where(amax > 0, tensor_scale, torch.ones_like(tensor_scale))
    s_t = tensor_scale.to(torch.float64)
    blocks = _in_blocks(x64, NVFP4_BLOCK_SIZE)
    block_scales = _round64(blocks.abs().amax(dim=-1) / (FP4_E2M1.max_value * s_t), FP8_E4M3)
    denom = (block_scales * s_t).unsqueeze(-1)  # exact: a 4-bit times a 24-bit significand
    scaled = torch.where(denom > 0, blocks / torch.where(denom > 0, denom, torch.ones_like(denom)), 0.0)
    elements = _round64(scaled, FP4_E2M1).reshape(*x.shape[:-1], -1)[..., : x.shape[-1]]
    return elements.to(torch.float32), block_scales.to(torch.float32), tensor_scale


def nvfp4_dequantize(elements: torch.Tensor, block_scales: torch.Tensor, tensor_scale: torch.Tensor) -> torch.Tensor:
    """The values an NVFP4 tensor stands for: ``elements * block_scale * tensor_scale``.

    Args:
        elements: float tensor ``[..., n]`` (E2M1 values, as :func:`nvfp4_quantize` returns them).
        block_scales: float tensor ``[..., ceil(n / 16)]``, non-negative, finite.
        tensor_scale: 0-dim (or one-element) float tensor, positive and finite.

    Returns:
        torch.Tensor: float32 ``[..., n]``. ``elements * block_scale`` is exact; the product with
        ``tensor_scale`` is rounded once to float32.
    """
    _check_blocked(elements, "elements", NVFP4_BLOCK_SIZE)
    _check_per_block(block_scales, "block_scales", elements, NVFP4_BLOCK_SIZE, FLOAT_DTYPES)
    if bool((block_scales < 0).any()):
        raise ValueError("block_scales must be >= 0")
    check_tensor(tensor_scale, "tensor_scale", dtypes=FLOAT_DTYPES)
    if tensor_scale.numel() != 1 or not bool((tensor_scale > 0).all()):
        raise ValueError(f"tensor_scale must be one positive number, got shape {tuple(tensor_scale.shape)}")
    per_element = _per_element(block_scales.to(torch.float64), NVFP4_BLOCK_SIZE, elements.shape[-1])
    return (elements.to(torch.float64) * per_element * tensor_scale.to(torch.float64).reshape(())).to(torch.float32)


@dataclass(frozen=True)
class BlockFormat:
    """A block-scaled format: small-float elements, one scale per block, optionally one per tensor.

    Attributes:
        name: short name (``"mxfp4"``).
        element: the element format (saturating).
        block_size: elements per block scale.
        scale: ``"e8m0"`` (a power of two, OCP MX) or ``"e4m3"`` (an fp8 number, NVFP4); 8 bits either way.
        tensor_scale_bits: bits of the one scale per tensor (32 for NVFP4's float32, 0 for MX).
    """

    name: str
    element: FloatFormat
    block_size: int
    scale: str = "e8m0"
    tensor_scale_bits: int = 0

    def __post_init__(self):
        check_int(self.block_size, "block_size", low=1)
        check_int(self.tensor_scale_bits, "tensor_scale_bits", low=0, high=64)
        if self.scale == "e8m0":
            _mx_element(self.element)
        elif self.scale == "e4m3":
            if (self.element.name, self.block_size) != ("fp4_e2m1", NVFP4_BLOCK_SIZE):
                raise ValueError("scale='e4m3' is NVFP4's layout: fp4_e2m1 elements in blocks of 16")
        else:
            raise ValueError(f"scale must be 'e8m0' or 'e4m3', got {self.scale!r}")

    def __str__(self) -> str:
        return self.name


#: the block-scaled formats of the OCP MX specification v1.0 and NVIDIA's NVFP4, by name
BLOCK_FORMATS = {f.name: f for f in (
    BlockFormat("mxfp8_e4m3", MX_ELEMENT_FORMATS["fp8_e4m3"], MX_BLOCK_SIZE),
    BlockFormat("mxfp8_e5m2", MX_ELEMENT_FORMATS["fp8_e5m2"], MX_BLOCK_SIZE),
    BlockFormat("mxfp6_e3m2", MX_ELEMENT_FORMATS["fp6_e3m2"], MX_BLOCK_SIZE),
    BlockFormat("mxfp6_e2m3", MX_ELEMENT_FORMATS["fp6_e2m3"], MX_BLOCK_SIZE),
    BlockFormat("mxfp4", MX_ELEMENT_FORMATS["fp4_e2m1"], MX_BLOCK_SIZE),
    BlockFormat("nvfp4", FP4_E2M1, NVFP4_BLOCK_SIZE, scale="e4m3", tensor_scale_bits=32),
)}


def _block_format(fmt) -> BlockFormat:
    if isinstance(fmt, BlockFormat):
        return fmt
    if not isinstance(fmt, str):
        raise TypeError(f"fmt must be a BlockFormat or one of {list(BLOCK_FORMATS)}, got {type(fmt).__name__}")
    if fmt.lower() not in BLOCK_FORMATS:
        raise ValueError(f"fmt must be one of {list(BLOCK_FORMATS)}, got {fmt!r}")
    return BLOCK_FORMATS[fmt.lower()]


def block_format_bits(fmt, numel: int | None = None) -> float:
    """Bits stored per value in a block-scaled format, from its layout.

    ``element bits + 8 / block_size`` (one 8-bit scale per block) ``+ tensor_scale_bits / numel``:
    MXFP8 8.25, MXFP6 6.25, MXFP4 4.25, NVFP4 4.5 plus 32 bits per tensor.

    Args:
        fmt: a :class:`BlockFormat` or a name of ``BLOCK_FORMATS`` (``"mxfp4"``, ``"nvfp4"``, ...).
        numel: values in the tensor, to amortize the per-tensor scale; None leaves it out.

    Returns:
        float: bits per value.
    """
    fmt = _block_format(fmt)
    bits = fmt.element.total_bits + 8 / fmt.block_size
    if numel is not None:
        check_int(numel, "numel", low=1)
        bits += fmt.tensor_scale_bits / numel
    return bits


def block_fake_quantize(x: torch.Tensor, fmt) -> torch.Tensor:
    """Quantize ``x`` to a block-scaled format and back (what a kernel that reads the format computes with).

    Args:
        x: float tensor ``[..., n]``, at least 1-D, finite, not empty (blocks along the last axis).
        fmt: a :class:`BlockFormat` or a name of ``BLOCK_FORMATS`` (``"mxfp8_e4m3"``, ..., ``"nvfp4"``).

    Returns:
        torch.Tensor: float32, ``x``'s shape and device.
    """
    fmt = _block_format(fmt)
    if fmt.scale == "e4m3":
        return nvfp4_dequantize(*nvfp4_quantize(x))
    return mx_dequantize(*mx_quantize(x, fmt.element, fmt.block_size), fmt.block_size)


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
