"""Notebook 03: granularity: one scale per tensor, per channel, per group or per token.

The weight quantizer of the later notebooks (GPTQ, AWQ, HQQ, the capstone) lives here too:
round-to-nearest (RTN) of a 2-D weight ``[out_features, in_features]`` with one scale and zero
point per output channel (``group_size=None``) or per group of ``group_size`` consecutive
input columns. Codes are unsigned, ``0 .. 2**bits - 1``, as in GPTQ's quantizer; the range
of every group contains 0 (so 0 is exact), following ``course_lib.affine``'s rules.
"""

from __future__ import annotations

import torch

from .affine import SCALE_EPS
from .validation import FLOAT_DTYPES, check_bits, check_divides, check_tensor

__all__ = [
    "weight_scale_zero_point",
    "quantize_weight",
    "dequantize_weight",
    "fake_quantize_weight",
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


def _check_params(w: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor, group: int) -> None:
    shape = (w.shape[0], w.shape[1] // group)
    check_tensor(scale, "scale", dtypes=FLOAT_DTYPES, ndim=2)
    check_tensor(zero, "zero", ndim=2)
    if zero.is_floating_point():
        raise TypeError(f"zero must be an integer tensor, got dtype {str(zero.dtype).replace('torch.', '')}")
    for name, t in (("scale", scale), ("zero", zero)):
        if tuple(t.shape) != shape:
            raise ValueError(f"{name} must have shape {shape} (out_features, in_features // group_size), "
                             f"got {tuple(t.shape)}")
        if t.device != w.device:
            raise ValueError(f"{name} is on {t.device} but the weight is on {w.device}: move them to one device")
    if not bool((scale > 0).all()):
        raise ValueError("scale must be positive everywhere")


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
    """Float32 weights ``(q - zero) * scale`` from codes ``[out_features, in_features]``."""
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
    """
    scale, zero = weight_scale_zero_point(w, bits, group_size, symmetric)
    q = quantize_weight(w, scale, zero, bits, group_size)
    return dequantize_weight(q, scale, zero, group_size).to(w.dtype)
