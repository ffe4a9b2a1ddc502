"""Notebook 03: granularity: one scale per tensor, per channel, per group or per token.

Notebook 03's references (PyTorch's rounding rule: multiply by the float32 reciprocal of the scale,
so that ``quantize_dequantize`` equals ``torch.fake_quantize_per_channel_affine`` bit for bit):

- ``scale_zero_point(x, bits, dim, symmetric)``: one scale and zero point per slice of ``x``,
  reduced over ``dim`` with ``keepdim`` shapes (``dim=None`` per tensor, ``dim=1`` per output
  channel of a weight ``[out, in]``, ``dim=0`` per input channel, ``dim=-1`` per token);
- ``quantize_dequantize(x, scale, zero, bits)``: the fake quantizer with broadcasting scales;
- ``fake_quantize_per_group``: groups of consecutive values along the last axis;
- ``quantized_linear``: per-token activations x per-output-channel weights, int32 accumulation;
- ``fake_quantize(x, bits, granularity, group_size)`` and ``effective_bits``: every granularity
  of ``GRANULARITIES``, and its storage cost in bits per parameter;
- ``quantized_linears``: fake-quantize every ``nn.Linear`` of a model in place (restored
  afterwards) and report the weight error and the bits stored (``course_lib.evaluate.granularity_sweep``
  measures the sentence-embedding cosine under each setting with it);
- ``QuantLinear`` (codes, scales and zero points in memory, dequantized in ``forward``: the same values as
  ``fake_quantize``) and ``replace_linears`` (swap every ``nn.Linear`` of a model for a replacement).

The weight quantizer of the later notebooks (GPTQ, AWQ, HQQ, the capstone) lives here too:
round-to-nearest (RTN) of a 2-D weight ``[out_features, in_features]`` with one scale and zero
point per output channel (``group_size=None``) or per group of ``group_size`` consecutive
input columns. Codes are unsigned, ``0 .. 2**bits - 1``, as in GPTQ's quantizer; the range
of every group contains 0 (so 0 is exact), following ``course_lib.affine``'s rules.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterable

import torch

from .affine import SCALE_EPS, int32_matmul, int32_max_inner_dim
from .validation import FLOAT_DTYPES, check_bits, check_divides, check_int, check_tensor

__all__ = [
    "weight_scale_zero_point",
    "quantize_weight",
    "dequantize_weight",
    "fake_quantize_weight",
    "GRANULARITIES",
    "scale_zero_point",
    "quantize_dequantize",
    "fake_quantize_per_group",
    "quantized_linear",
    "fake_quantize",
    "effective_bits",
    "linear_weights",
    "quantized_linears",
    "QuantLinear",
    "replace_linears",
]


def _check_weight(w: torch.Tensor, group_size: int | None, name: str = "w") -> int:
    """Validate a 2-D weight and its group size; returns the group size actually used."""
    check_tensor(w, name, dtypes=FLOAT_DTYPES, ndim=2)
    in_features = w.shape[1]
    if group_size is None:
        return in_features
    check_divides(in_features, group_size, size_name=f"{name}.shape[1] (in_features)", group_name="group_size")
    return group_size


def _grouped(w: torch.Tensor, group: int) -> torch.Tensor:
    """``[out, in]`` -> ``[out, in // group, group]`` (a view when ``w`` is contiguous)."""
    return w.reshape(w.shape[0], w.shape[1] // group, group)


def weight_scale_zero_point(w: torch.Tensor, bits: int, group_size: int | None = None,
                            symmetric: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Min-max scale and zero point of each output channel or group of a weight matrix.

    Args:
        w: float weight, shape ``[out_features, in_features]``, finite.
        bits: 2 to 8; codes are ``0 .. 2**bits - 1``.
        group_size: None for one scale per output channel, or a positive divisor of
            ``in_features`` for one scale per ``group_size`` consecutive input columns.
        symmetric: zero point fixed at the middle code ``2**(bits-1)`` and
            ``scale = max|w| / (2**(bits-1) - 1)``, so codes ``1 .. 2**bits - 1`` cover
            ``[-max|w|, max|w|]`` without clipping (the restricted range: -7..7 around 8 at 4 bits);
            otherwise asymmetric min-max (range widened to contain 0).

    Returns:
        (scale, zero): float32 and int32 tensors of shape ``[out_features, in_features // group]``.
        Scales are at least ``SCALE_EPS``: an all-zero group never divides by zero.
    """
    check_bits(bits, "bits", low=2, high=8)
    group = _check_weight(w, group_size)
    if not isinstance(symmetric, bool):
        raise TypeError(f"symmetric must be a bool, got {type(symmetric).__name__}")
    g = _grouped(w.detach().to(torch.float32), group)
    qmax = 2**bits - 1
    lo = g.amin(dim=-1).clamp(max=0.0)
    hi = g.amax(dim=-1).clamp(min=0.0)
    if symmetric:
        amax = torch.maximum(-lo, hi)
        scale = (amax / (2 ** (bits - 1) - 1)).clamp(min=SCALE_EPS)
        zero = torch.full_like(scale, 2 ** (bits - 1), dtype=torch.int32)
    else:
        scale = ((hi - lo) / qmax).clamp(min=SCALE_EPS)
        zero = torch.round(-lo / scale).clamp(0, qmax).to(torch.int32)
    return scale, zero


def _check_params(w: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor, group: int,
                  names: tuple[str, str] = ("scale", "zero")) -> None:
    shape = (w.shape[0], w.shape[1] // group)
    check_tensor(scale, names[0], dtypes=FLOAT_DTYPES, ndim=2)
    check_tensor(zero, names[1], ndim=2)
    if zero.is_floating_point():
        raise TypeError(f"{names[1]} must be an integer tensor, got dtype {str(zero.dtype).replace('torch.', '')}")
    for name, t in zip(names, (scale, zero)):
        if tuple(t.shape) != shape:
            raise ValueError(f"{name} must have shape {shape} (out_features, in_features // group_size), "
                             f"got {tuple(t.shape)}")
        if t.device != w.device:
            raise ValueError(f"{name} is on {t.device} but the weight is on {w.device}: move them to one device")
    if not bool((scale > 0).all()):
        raise ValueError(f"{names[0]} must be positive everywhere")


def quantize_weight(w: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor, bits: int,
                    group_size: int | None = None) -> torch.Tensor:
    """Codes ``clamp(round(w / scale) + zero, 0, 2**bits - 1)``, one scale per channel or group.

    Args:
        w: float weight ``[out_features, in_features]``.
        scale, zero: from ``weight_scale_zero_point`` (shape ``[out_features, in_features // group]``).
        bits: 2 to 8.
        group_size: as used for ``scale`` (None: per output channel).

    Returns:
        int32 codes of ``w``'s shape.
    """
    check_bits(bits, "bits", low=2, high=8)
    group = _check_weight(w, group_size)
    _check_params(w, scale, zero, group)
    g = _grouped(w.to(torch.float32), group)
    q = torch.round(g / scale.to(torch.float32).unsqueeze(-1)) + zero.unsqueeze(-1)
    return q.clamp(0, 2**bits - 1).to(torch.int32).reshape(w.shape)


def dequantize_weight(q: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor,
                      group_size: int | None = None) -> torch.Tensor:
    """Float32 weights ``(q - zero) * scale`` from codes ``[out_features, in_features]``.

    Args:
        q: codes ``[out_features, in_features]``.
        scale, zero: ``[out_features, 1]`` (per channel) or ``[out_features, in_features // group_size]``.
        group_size: None (per output channel) or the group length along ``in_features``.

    Returns:
        torch.Tensor: float32 ``[out_features, in_features]``.
    """
    check_tensor(q, "q", ndim=2)
    if q.is_floating_point():
        raise TypeError(f"q must be an integer tensor of codes, got dtype {str(q.dtype).replace('torch.', '')}")
    group = q.shape[1] if group_size is None else group_size
    if group_size is not None:
        check_divides(q.shape[1], group_size, size_name="q.shape[1] (in_features)", group_name="group_size")
    _check_params(q, scale, zero, group)
    g = _grouped(q.to(torch.float32), group)
    return ((g - zero.unsqueeze(-1).to(torch.float32)) * scale.to(torch.float32).unsqueeze(-1)).reshape(q.shape)


def fake_quantize_weight(w: torch.Tensor, bits: int, group_size: int | None = None,
                         symmetric: bool = False) -> torch.Tensor:
    """Round-to-nearest (RTN) quantize-dequantize of a weight matrix, in ``w``'s dtype.

    The baseline of GPTQ, AWQ and HQQ: min-max scale per output channel or per group, then
    every weight rounded to its nearest code independently.

    Args:
        w: weight ``[out_features, in_features]``.
        bits: code width.
        group_size: None (per output channel) or a divisor of ``in_features``.
        symmetric: symmetric grid (zero point 0) instead of min-max.

    Returns:
        torch.Tensor: the dequantized weight, ``w``'s shape and dtype.
    """
    scale, zero = weight_scale_zero_point(w, bits, group_size, symmetric)
    q = quantize_weight(w, scale, zero, bits, group_size)
    return dequantize_weight(q, scale, zero, group_size).to(w.dtype)


# ----------------------------------------------------------------------------------------------
# Notebook 03: any granularity, with PyTorch's rounding rule

#: The granularities ``fake_quantize`` and ``effective_bits`` know. For a weight ``[out, in]``:
#: ``"tensor"``: one scale; ``"channel"``: one per output channel (row); ``"input_channel"``: one per
#: input channel (column); ``"group"``: one per ``group_size`` consecutive values of a row. For
#: activations ``[tokens, features]``, ``"token"`` is one scale per row: the same reduction as ``"channel"``.
GRANULARITIES = ("tensor", "channel", "input_channel", "group", "token")


def _check_dim(dim, ndim: int) -> tuple[int, ...] | None:
    """``dim`` as a sorted tuple of non-negative axes (None stays None, meaning every axis)."""
    if dim is None:
        return None
    dims = (dim,) if isinstance(dim, int) and not isinstance(dim, bool) else dim
    if not isinstance(dims, (tuple, list)) or len(dims) == 0:
        raise TypeError(f"dim must be None, an int or a non-empty tuple of ints, got {dim!r}")
    out = []
    for d in dims:
        if isinstance(d, bool) or not isinstance(d, int):
            raise TypeError(f"dim must be None, an int or a non-empty tuple of ints, got {dim!r}")
        if not -ndim <= d < ndim:
            raise ValueError(f"dim={d} is out of range for a tensor with {ndim} dimensions "
                             f"(allowed: {-ndim} .. {ndim - 1})")
        out.append(d % ndim)
    if len(set(out)) != len(out):
        raise ValueError(f"dim must not repeat an axis, got {dim!r}")
    return tuple(sorted(out))


def scale_zero_point(x: torch.Tensor, bits: int, dim=None,
                     symmetric: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Min-max (or absmax) scale and zero point of ``x``, one per slice: reduce over ``dim``, keep the rest.

    ``dim`` is the axis (or axes) that share one scale, as in ``x.amax(dim, keepdim=True)``:
    for a weight ``[out, in]``, ``dim=1`` gives one scale per output channel (row), ``dim=0`` one per
    input channel (column); for activations ``[tokens, features]``, ``dim=-1`` gives one per token;
    ``dim=None`` one for the whole tensor. Codes are unsigned ``0 .. 2**bits - 1`` (as in
    ``weight_scale_zero_point``):

    - asymmetric: range ``[lo, hi] = [min(x_min, 0), max(x_max, 0)]``, ``scale = (hi - lo) / (2**bits - 1)``,
      ``zero = clamp(-round(lo / scale), 0, 2**bits - 1)`` (``course_lib.affine``'s rules, with qmin = 0);
    - symmetric: ``scale = max|x| / (2**(bits-1) - 1)``, ``zero = 2**(bits-1)``: codes ``1 .. 2**bits - 1``
      store ``-max|x| .. max|x|`` (the restricted range: -127..127 around 128 at 8 bits).

    Args:
        x: float tensor (float16, bfloat16, float32, float64), any shape, not empty, finite.
        bits: 2 to 8.
        dim: None, an int, or a tuple of ints: the axes reduced over (negative axes allowed).
        symmetric: absmax scale and a fixed middle zero point, or asymmetric min-max.

    Returns:
        (scale, zero): float32 and int32 tensors on ``x``'s device with ``x``'s number of dimensions,
        size 1 on every reduced axis (``keepdim``), so that ``x / scale`` broadcasts. Scales are at least
        ``SCALE_EPS`` (float32's epsilon): an all-zero slice never divides by zero.
    """
    check_bits(bits, "bits", low=2, high=8)
    check_tensor(x, "x", dtypes=FLOAT_DTYPES)
    dims = _check_dim(dim, x.dim())
    _check_symmetric(symmetric)
    return _scale_zero_point(x, bits, tuple(range(x.dim())) if dims is None else dims, symmetric)


def _check_symmetric(symmetric) -> None:
    if not isinstance(symmetric, bool):
        raise TypeError(f"symmetric must be a bool, got {type(symmetric).__name__}")


def _scale_zero_point(x: torch.Tensor, bits: int, dims: tuple[int, ...], symmetric: bool):
    """``scale_zero_point`` on checked arguments (``dims``: the non-negative axes reduced, all of them for None)."""
    xf = x.detach().to(torch.float32)
    if dims:
        lo = xf.amin(dim=dims, keepdim=True).clamp(max=0.0)
        hi = xf.amax(dim=dims, keepdim=True).clamp(min=0.0)
    else:  # a 0-dim tensor
        lo, hi = xf.clamp(max=0.0), xf.clamp(min=0.0)
    qmax = 2**bits - 1
    if symmetric:
        scale = (torch.maximum(-lo, hi) / (2 ** (bits - 1) - 1)).clamp(min=SCALE_EPS)
        zero = torch.full_like(scale, 2 ** (bits - 1), dtype=torch.int32)
    else:
        scale = ((hi - lo) / qmax).clamp(min=SCALE_EPS)
        if not bool(torch.isfinite(scale).all()):
            raise ValueError("x's range overflows float32 (max - min is infinite): rescale the tensor first")
        zero = (-torch.round(lo / scale)).clamp(0, qmax).to(torch.int32)
    return scale, zero


def quantize_dequantize(x: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor, bits: int) -> torch.Tensor:
    """``(clamp(round(x * (1/scale)) + zero, 0, 2**bits - 1) - zero) * scale``, with broadcasting scales.

    PyTorch's rule (``torch.fake_quantize_per_channel_affine``, bit for bit): float32 arithmetic, multiply
    by the float32 reciprocal of the scale, round half to even, add the zero point, clamp.
    (``quantize_weight`` divides by the scale instead, as GPTQ's quantizer does; the two differ only on
    values that sit on a rounding tie to the last bit.)

    Args:
        x: float tensor, any shape, not empty, finite.
        scale: positive float tensor that broadcasts to ``x``'s shape (e.g. from ``scale_zero_point``).
        zero: integer tensor of zero points in ``[0, 2**bits - 1]``, broadcasting to ``x``'s shape.
        bits: 2 to 8.

    Returns:
        The values the grid stores, ``x``'s shape, dtype and device.
    """
    check_bits(bits, "bits", low=2, high=8)
    check_tensor(x, "x", dtypes=FLOAT_DTYPES)
    check_tensor(scale, "scale", dtypes=FLOAT_DTYPES)
    check_tensor(zero, "zero")
    if zero.is_floating_point() or zero.is_complex() or zero.dtype == torch.bool:
        raise TypeError(f"zero must be an integer tensor, got dtype {str(zero.dtype).replace('torch.', '')}")
    for name, t in (("scale", scale), ("zero", zero)):
        if t.device != x.device:
            raise ValueError(f"{name} is on {t.device} but x is on {x.device}: move them to one device")
        try:
            shape = torch.broadcast_shapes(x.shape, t.shape)
        except RuntimeError:
            shape = None
        if shape != x.shape:
            raise ValueError(f"{name} of shape {tuple(t.shape)} must broadcast to x's shape {tuple(x.shape)}")
    if not bool((scale > 0).all()):
        raise ValueError("scale must be positive everywhere")
    qmax = 2**bits - 1
    if bool(((zero < 0) | (zero > qmax)).any()):
        raise ValueError(f"zero must lie in [0, {qmax}] for {bits}-bit codes")
    return _quantize_dequantize(x, scale, zero, bits)


def _quantize_dequantize(x: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor, bits: int) -> torch.Tensor:
    """``quantize_dequantize`` on checked arguments (``scale`` and ``zero`` from ``_scale_zero_point``)."""
    qmax = 2**bits - 1
    s = scale.to(torch.float32)
    z = zero.to(torch.float32)
    q = (torch.round(x.to(torch.float32) * (1.0 / s)) + z).clamp(0, qmax)
    return ((q - z) * s).to(x.dtype)


def fake_quantize_per_group(x: torch.Tensor, bits: int, group_size: int, symmetric: bool = False) -> torch.Tensor:
    """Quantize-dequantize with one scale per ``group_size`` consecutive values of the last axis.

    For a weight ``[out, in]`` that is GPTQ/AWQ-style grouping along the input dimension:
    row ``i``'s columns ``[k * group_size, (k+1) * group_size)`` share one scale and zero point.
    ``group_size = x.shape[-1]`` is one scale per row (per output channel).

    Args:
        x: float tensor ``[..., n]`` (at least 1-D), not empty, finite.
        bits: 2 to 8.
        group_size: a positive divisor of ``n = x.shape[-1]``.
        symmetric: as in ``scale_zero_point``.

    Returns:
        The fake-quantized tensor: ``x``'s shape, dtype and device.
    """
    check_bits(bits, "bits", low=2, high=8)
    check_tensor(x, "x", dtypes=FLOAT_DTYPES)
    _check_groups(x, group_size)
    _check_symmetric(symmetric)
    return _fake_quantize_groups(x, bits, group_size, symmetric)


def _check_groups(x: torch.Tensor, group_size) -> None:
    if x.dim() < 1:
        raise ValueError("x must have at least 1 dimension (groups run along the last one), got a 0-dim tensor")
    check_divides(x.shape[-1], group_size, size_name="x.shape[-1]", group_name="group_size")


def _fake_quantize_groups(x: torch.Tensor, bits: int, group_size: int, symmetric: bool) -> torch.Tensor:
    """``fake_quantize_per_group`` on checked arguments: each finite value of ``x`` is checked once, by the caller."""
    g = x.reshape(*x.shape[:-1], x.shape[-1] // group_size, group_size)
    scale, zero = _scale_zero_point(g, bits, (g.dim() - 1,), symmetric)
    return _quantize_dequantize(g, scale, zero, bits).reshape(x.shape)


def quantized_linear(x: torch.Tensor, w: torch.Tensor, bits: int = 8) -> torch.Tensor:
    """``x @ w.T`` with symmetric per-token activations, per-output-channel weights, int32 accumulation.

    Both scales live outside the sum over the input dimension ``k``:
    ``y[t, o] = sum_k s_x[t] c_x[t, k] * s_w[o] c_w[o, k] = s_x[t] * s_w[o] * sum_k c_x[t, k] c_w[o, k]``
    with signed codes ``c = q - zero`` in ``-(2**(bits-1) - 1) .. 2**(bits-1) - 1``. So one integer
    matmul (``course_lib.affine.int32_matmul``) and one outer product of scales give the result.
    A per-input-channel or per-group scale varies with ``k`` and would not factor out this way.

    Args:
        x: float activations ``[tokens, in_features]``, finite.
        w: float weight ``[out_features, in_features]``, finite, on ``x``'s device.
        bits: 2 to 8 for both operands.

    Returns:
        float32 ``[tokens, out_features]``: ``int32 accumulator * (s_x * s_w.T)``. It equals
        ``fake_x @ fake_w.T`` of the two fake-quantized operands up to float rounding.
    """
    check_bits(bits, "bits", low=2, high=8)
    check_tensor(x, "x", dtypes=FLOAT_DTYPES, ndim=2)
    check_tensor(w, "w", dtypes=FLOAT_DTYPES, ndim=2)
    if w.shape[1] != x.shape[1]:
        raise ValueError(f"w must have {x.shape[1]} columns (x's in_features), got shape {tuple(w.shape)}")
    if w.device != x.device:
        raise ValueError(f"w is on {w.device} but x is on {x.device}: move them to one device")
    cmax = 2 ** (bits - 1) - 1
    if x.shape[1] > int32_max_inner_dim(cmax, cmax):
        raise ValueError(f"in_features={x.shape[1]} could overflow the int32 accumulator at {bits} bits")
    sx, zx = scale_zero_point(x, bits, dim=-1, symmetric=True)
    sw, zw = scale_zero_point(w, bits, dim=-1, symmetric=True)
    qmax = 2**bits - 1
    cx = (torch.round(x.to(torch.float32) * (1.0 / sx)) + zx).clamp(0, qmax).to(torch.int32) - zx
    cw = (torch.round(w.to(torch.float32) * (1.0 / sw)) + zw).clamp(0, qmax).to(torch.int32) - zw
    acc = int32_matmul(cx, cw.T)
    return acc.to(torch.float32) * (sx * sw.T)


def _check_granularity(granularity, group_size) -> None:
    if not isinstance(granularity, str):
        raise TypeError(f"granularity must be a str, one of {GRANULARITIES}, got {type(granularity).__name__}")
    if granularity not in GRANULARITIES:
        raise ValueError(f"granularity must be one of {GRANULARITIES}, got {granularity!r}")
    if granularity == "group" and group_size is None:
        raise ValueError("granularity='group' needs a group_size (a positive divisor of the last axis)")
    if granularity != "group" and group_size is not None:
        raise ValueError(f"group_size is only used with granularity='group', got group_size={group_size!r} "
                         f"with granularity={granularity!r}")


def fake_quantize(x: torch.Tensor, bits: int, granularity: str = "channel", group_size: int | None = None,
                  symmetric: bool = False) -> torch.Tensor:
    """Quantize-dequantize ``x`` at any granularity of ``GRANULARITIES`` (PyTorch's rounding rule).

    Args:
        x: float tensor, ``[out, in]`` for a weight or ``[..., tokens, features]`` for activations.
        bits: 2 to 8.
        granularity: ``"tensor"`` (one scale), ``"channel"`` / ``"token"`` (one per slice of the last
            axis: a weight's output channel, an activation's token), ``"input_channel"`` (one per index
            of the last axis; needs 2 or more dimensions), ``"group"`` (see ``fake_quantize_per_group``).
        group_size: only for ``"group"``: a positive divisor of ``x.shape[-1]``.
        symmetric: as in ``scale_zero_point``.

    Returns:
        ``x``'s shape, dtype and device.
    """
    _check_granularity(granularity, group_size)
    check_tensor(x, "x", dtypes=FLOAT_DTYPES)  # the one pass over x's values: the helpers below skip it
    check_bits(bits, "bits", low=2, high=8)
    _check_symmetric(symmetric)
    if granularity == "group":
        _check_groups(x, group_size)
        return _fake_quantize_groups(x, bits, group_size, symmetric)
    if granularity == "input_channel":
        if x.dim() < 2:
            raise ValueError(f"granularity='input_channel' needs x with 2 or more dimensions, got shape {tuple(x.shape)}")
        dims = tuple(range(x.dim() - 1))
    elif granularity in ("channel", "token"):
        if x.dim() < 1:
            raise ValueError(f"granularity={granularity!r} needs x with 1 or more dimensions, got a 0-dim tensor")
        dims = (x.dim() - 1,)
    else:
        dims = tuple(range(x.dim()))
    scale, zero = _scale_zero_point(x, bits, dims, symmetric)
    return _quantize_dequantize(x, scale, zero, bits)


def effective_bits(shape, bits: int, granularity: str, group_size: int | None = None,
                   scale_bits: int = 16, zero_bits: int = 0) -> float:
    """Bits stored per parameter: the codes plus each scale's (and zero point's) share.

    ``bits + n_scales * (scale_bits + zero_bits) / numel``: an fp16 scale per 128 weights adds
    ``16 / 128 = 0.125`` bits; a 4-bit zero point next to it another ``4 / 128 = 0.03125``.

    Args:
        shape: the tensor's shape, a tuple (or torch.Size) of positive ints; a weight is ``[out, in]``.
        bits: bits per code, 1 to 32.
        granularity: one of ``GRANULARITIES``; the number of scales is 1 (``"tensor"``),
            ``numel / shape[-1]`` (``"channel"``, ``"token"``), ``shape[-1]`` (``"input_channel"``),
            ``numel / group_size`` (``"group"``).
        group_size: only for ``"group"``: a positive divisor of ``shape[-1]``.
        scale_bits: bits of one stored scale (16 for fp16, 32 for fp32), 0 to 64.
        zero_bits: bits of one stored zero point (0 when symmetric, often ``bits`` when asymmetric), 0 to 64.

    Returns:
        A Python float, at least ``bits``.
    """
    if isinstance(shape, torch.Size):
        shape = tuple(shape)
    if not isinstance(shape, (tuple, list)) or len(shape) == 0:
        raise TypeError(f"shape must be a non-empty tuple of positive ints, got {shape!r}")
    for n in shape:
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"shape must hold positive ints, got {tuple(shape)!r}")
    check_bits(bits, "bits", low=1, high=32)
    check_int(scale_bits, "scale_bits", low=0, high=64)
    check_int(zero_bits, "zero_bits", low=0, high=64)
    _check_granularity(granularity, group_size)
    numel = math.prod(shape)
    last = shape[-1]
    if granularity == "tensor":
        n_scales = 1
    elif granularity in ("channel", "token"):
        n_scales = numel // last
    elif granularity == "input_channel":
        if len(shape) < 2:
            raise ValueError(f"granularity='input_channel' needs a shape with 2 or more dimensions, got {tuple(shape)}")
        n_scales = last
    else:
        check_divides(last, group_size, size_name="shape[-1]", group_name="group_size")
        n_scales = numel // group_size
    return bits + n_scales * (scale_bits + zero_bits) / numel


# ----------------------------------------------------------------------------------------------
# whole models: every nn.Linear at once


def linear_weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """``{name: weight}`` of every ``nn.Linear`` in ``model`` (the live parameters, not copies).

    Args:
        model: any module.

    Returns:
        dict[str, torch.Tensor]: qualified Linear name -> its weight parameter.
    """
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    return {name: mod.weight for name, mod in model.named_modules() if isinstance(mod, torch.nn.Linear)}


@contextlib.contextmanager
def quantized_linears(model: torch.nn.Module, bits: int, granularity: str = "channel",
                      group_size: int | None = None, symmetric: bool = False):
    """Fake-quantize every ``nn.Linear`` weight of ``model`` in place; restore the originals on exit.

    Cheaper than a deep copy per setting: only the weights are copied (once, to restore them).
    Yields a dict with ``sse`` (sum of squared weight errors), ``sum_sq`` (sum of squared weights),
    ``numel`` and ``effective_bits`` (fp16 scales; a ``bits``-bit zero point when asymmetric) over all
    the Linear weights together.

    Args:
        model: its Linear weights are replaced for the duration of the ``with`` block.
        bits: code width.
        granularity: ``"tensor"``, ``"channel"`` or ``"group"``.
        group_size: the group length when ``granularity="group"``.
        symmetric: symmetric grid instead of min-max.

    Returns:
        Generator[dict]: the statistics dict, once (a context manager).
    """
    _check_granularity(granularity, group_size)
    check_bits(bits, "bits", low=2, high=8)
    weights = linear_weights(model)
    if not weights:
        raise ValueError("model has no nn.Linear layer to quantize")
    saved = {name: w.detach().clone() for name, w in weights.items()}
    stats = {"sse": 0.0, "sum_sq": 0.0, "numel": 0, "stored_bits": 0.0}
    try:
        with torch.no_grad():
            for name, w in weights.items():
                fq = fake_quantize(saved[name], bits, granularity, group_size, symmetric)
                stats["sse"] += float((fq.float() - saved[name].float()).pow_(2).sum(dtype=torch.float64))
                stats["sum_sq"] += float(saved[name].float().pow(2).sum(dtype=torch.float64))
                stats["numel"] += w.numel()
                stats["stored_bits"] += w.numel() * effective_bits(
                    tuple(w.shape), bits, granularity, group_size, zero_bits=0 if symmetric else bits)
                w.copy_(fq)
        stats["effective_bits"] = stats.pop("stored_bits") / stats["numel"]
        yield stats
    finally:
        with torch.no_grad():
            for name, w in weights.items():
                w.copy_(saved[name])


# ----------------------------------------------------------------------------------------------
# a real quantized layer (codes in memory, not fake-quantized floats) and the walk that swaps it in


class QuantLinear(torch.nn.Module):
    """A weight-only quantized ``nn.Linear``: 8-bit integer codes, one scale and zero point per group.

    The layout of GPTQ/AWQ checkpoints (AutoGPTQ's ``QuantLinear`` stores ``qweight``, ``scales`` and
    ``qzeros``), unpacked: one code per byte. Buffers (``.to(device)`` and ``state_dict`` carry them):

    - ``qweight``: ``torch.uint8`` ``[out_features, in_features]``, codes ``0 .. 2**bits - 1``;
    - ``scales``: ``torch.float32`` ``[out_features, in_features // group_size]``;
    - ``zeros``: ``torch.uint8``, the same shape, zero points in ``0 .. 2**bits - 1``;
    - ``bias``: a copy of the float bias, or None.

    ``forward(x)`` dequantizes the weight, ``W_hat = (qweight - zeros) * scales`` per group in float32, casts it
    to ``x``'s dtype and computes ``x @ W_hat.T + bias``. The codes, scales and zero points are those of
    :func:`scale_zero_point` and :func:`quantize_dequantize` (PyTorch's rounding rule), so ``W_hat`` equals
    ``fake_quantize(weight, bits, "group", group_size, symmetric)`` (``"channel"`` when ``group_size`` is None)
    bit for bit, and the layer's output equals that of an ``nn.Linear`` holding the fake-quantized weight.
    Build it with :meth:`from_float`.

    Args:
        qweight: uint8 codes ``[out_features, in_features]``.
        scales: positive float32 ``[out_features, n_groups]``, ``n_groups`` dividing ``in_features``.
        zeros: uint8 zero points, ``scales``' shape.
        bias: float ``[out_features]`` or None.
        bits: the code width, 2 to 8; every code and zero point lies in ``0 .. 2**bits - 1``.
    """

    def __init__(self, qweight: torch.Tensor, scales: torch.Tensor, zeros: torch.Tensor,
                 bias: torch.Tensor | None = None, bits: int = 4):
        super().__init__()
        check_bits(bits, "bits", low=2, high=8)
        check_tensor(qweight, "qweight", dtypes=(torch.uint8,), ndim=2)
        check_tensor(scales, "scales", dtypes=(torch.float32,), ndim=2)
        check_tensor(zeros, "zeros", dtypes=(torch.uint8,), ndim=2)
        out_features, in_features = qweight.shape
        if in_features % scales.shape[1] != 0:
            raise ValueError(f"scales must have a number of columns (groups) dividing {in_features}, "
                             f"got shape {tuple(scales.shape)}")
        _check_params(qweight, scales, zeros, in_features // scales.shape[1], names=("scales", "zeros"))
        qmax = 2**bits - 1
        if int(qweight.max()) > qmax or int(zeros.max()) > qmax:
            raise ValueError(f"qweight and zeros must lie in [0, {qmax}] for {bits}-bit codes")
        if bias is not None:
            check_tensor(bias, "bias", dtypes=FLOAT_DTYPES, ndim=1)
            if bias.shape[0] != out_features:
                raise ValueError(f"bias must have {out_features} entries (out_features), got {bias.shape[0]}")
        if bias is not None and bias.device != qweight.device:
            raise ValueError(f"bias is on {bias.device} but qweight is on {qweight.device}: move them to one device")
        self.bits = bits
        self.out_features, self.in_features = out_features, in_features
        self.group_size = in_features // scales.shape[1]
        self.register_buffer("qweight", qweight)
        self.register_buffer("scales", scales)
        self.register_buffer("zeros", zeros)
        self.register_buffer("bias", bias)

    @classmethod
    def from_float(cls, linear: torch.nn.Linear, bits: int = 4, group_size: int | None = None,
                   symmetric: bool = False) -> QuantLinear:
        """The quantized copy of ``linear``: its weight as codes, scales and zero points; its bias copied.

        Args:
            linear: a ``torch.nn.Linear`` with a finite float weight ``[out_features, in_features]``.
            bits: 2 to 8.
            group_size: None for one scale per output channel (row), or a positive divisor of
                ``in_features`` for one scale per ``group_size`` consecutive weights of a row.
            symmetric: as in :func:`scale_zero_point` (absmax scale, zero point ``2**(bits-1)``).

        Returns:
            QuantLinear: on ``linear``'s device; ``linear`` itself is left unchanged.
        """
        if not isinstance(linear, torch.nn.Linear):
            raise TypeError(f"linear must be a torch.nn.Linear, got {type(linear).__name__}")
        group = _check_weight(linear.weight, group_size, name="linear.weight")
        check_bits(bits, "bits", low=2, high=8)
        _check_symmetric(symmetric)
        w = linear.weight.detach()
        g = _grouped(w, group)
        scale, zero = _scale_zero_point(g, bits, (2,), symmetric)
        q = (torch.round(g.to(torch.float32) * (1.0 / scale)) + zero).clamp(0, 2**bits - 1)
        bias = None if linear.bias is None else linear.bias.detach().clone()
        return cls(q.to(torch.uint8).reshape(w.shape), scale.squeeze(-1), zero.squeeze(-1).to(torch.uint8), bias, bits)

    def dequantized_weight(self) -> torch.Tensor:
        """The float32 weight the codes store, ``(qweight - zeros) * scales`` per group.

        Returns:
            torch.Tensor: float32 ``[out_features, in_features]``.
        """
        g = _grouped(self.qweight, self.group_size).to(torch.int32) - self.zeros.to(torch.int32).unsqueeze(-1)
        return (g.to(torch.float32) * self.scales.unsqueeze(-1)).reshape(self.out_features, self.in_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x @ W_hat.T + bias`` in ``x``'s dtype, for ``x`` of shape ``[..., in_features]``.

        Args:
            x: float input whose last dimension is ``in_features``.

        Returns:
            torch.Tensor: ``[..., out_features]``, ``x``'s dtype.
        """
        check_tensor(x, "x", dtypes=FLOAT_DTYPES, allow_empty=True, allow_nonfinite=True)
        if x.dim() == 0 or x.shape[-1] != self.in_features:
            raise ValueError(f"x must have in_features={self.in_features} as its last dimension, got shape {tuple(x.shape)}")
        bias = None if self.bias is None else self.bias.to(x.dtype)
        return torch.nn.functional.linear(x, self.dequantized_weight().to(x.dtype), bias)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, bits={self.bits}, "
                f"group_size={self.group_size}, bias={self.bias is not None}")


def replace_linears(model: torch.nn.Module, factory, skip=()) -> torch.nn.Module:
    """Replace every ``nn.Linear`` of ``model`` by ``factory(linear)``, in place, except those named in ``skip``.

    The walk behind every "quantize this model" call (``transformers``' ``replace_with_bnb_linear``,
    torch.ao's ``swap_module``): find each Linear by its qualified name (``model.named_modules()``), then set
    the replacement on its parent module (``setattr(parent, last_part_of_the_name, new)``). Subclasses of
    ``nn.Linear`` count as Linear layers; the replacements are not walked again.

    Args:
        model: the module to walk. If it is itself an ``nn.Linear`` (and ``""`` is not in ``skip``), the
            replacement of the whole model is returned.
        factory: a callable taking an ``nn.Linear`` and returning the ``nn.Module`` that replaces it, e.g.
            ``lambda linear: QuantLinear.from_float(linear, 4, 128)``.
        skip: qualified names of Linear layers to keep (``"pooler.dense"``); each must name a Linear of ``model``.

    Returns:
        torch.nn.Module: ``model`` itself, its Linear layers replaced (or the replacement, for a Linear root).
    """
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if not callable(factory):
        raise TypeError(f"factory must be a callable that takes an nn.Linear, got {type(factory).__name__}")
    if isinstance(skip, str) or not isinstance(skip, Iterable):
        raise TypeError(f"skip must be a collection of qualified module names (str), got {skip!r}")
    skip = tuple(skip)
    if not all(isinstance(name, str) for name in skip):
        raise TypeError(f"skip must hold qualified module names (str), got {skip!r}")
    linears = [name for name, module in model.named_modules() if isinstance(module, torch.nn.Linear)]
    unknown = sorted(set(skip) - set(linears))
    if unknown:
        raise ValueError(f"skip names {unknown}, which are not nn.Linear layers of model "
                         f"(its Linear layers: {linears[:5]}{' ...' if len(linears) > 5 else ''})")
    replaced, done = model, []
    for name in linears:
        if name in skip or any(name.startswith(f"{d}.") or d == "" for d in done):
            continue  # kept, or inside a Linear already replaced (the replacement is not walked)
        done.append(name)
        parent_name, _, attr = name.rpartition(".")
        new = factory(model.get_submodule(name))
        if not isinstance(new, torch.nn.Module):
            raise TypeError(f"factory must return an nn.Module, got {type(new).__name__} for {name!r}")
        if name == "":
            replaced = new
        else:
            setattr(model.get_submodule(parent_name), attr, new)
    return replaced
