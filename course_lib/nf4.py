"""Notebook 05: NF4 (4-bit NormalFloat), blockwise absmax, 4-bit packing, double quantization, QLoRA.

Everything here reproduces ``bitsandbytes.functional.quantize_4bit(A, blocksize, quant_type="nf4")``
(and ``"fp4"``) **byte for byte** on the CPU (bitsandbytes 0.50.2; tests/library/test_nf4.py checks it):

- **Codebook.** NF4's 16 values come from quantiles of the standard normal: 8 positive values
  ``ndtri(linspace(offset, 0.5, 9)[:-1])``, 7 negative ones ``-ndtri(linspace(offset, 0.5, 8)[:-1])``,
  and 0, sorted and divided by the largest, with ``offset = 0.9677083`` (``create_normal_map``).
  The probabilities are float32 (``torch.linspace``), the quantiles float64, the result float32:
  this order reproduces bitsandbytes' hard-coded table bit for bit. Code ``i`` is the ``i``-th
  smallest value (code 7 is 0.0, code 15 is 1.0).
- **Blocks.** The tensor is flattened (row-major) and cut into blocks of ``blocksize`` (64)
  consecutive values; each block stores ``absmax = max|x|`` in float32 and its values scaled to
  ``[-1, 1]``. **Ragged last block**: when ``n`` is not a multiple of ``blocksize``, the last block
  holds the ``n % blocksize`` remaining values and gets its own absmax over just those values (it
  is not padded with zeros before the max). Scaling follows bitsandbytes' CPU code exactly: full
  blocks are multiplied by the float32 reciprocal ``1 / absmax``, the ragged block is divided by
  its absmax; an all-zero block is scaled by ``1 / 1e-38`` instead of dividing by zero, and the
  absmax stored for an all-zero *ragged* block is that clamp, ``1e-38`` (a full all-zero block
  stores 0.0). Both decode to exact zeros.
- **Nearest code, ties.** A scaled value ``v`` gets the code whose value is nearest; the decision
  boundaries are the float32 midpoints ``(c[i] + c[i+1]) / 2`` of the sorted codebook, found with
  ``torch.bucketize(v, midpoints)`` (bitsandbytes does the same). A value exactly on a midpoint goes
  to the **lower** code (``bucketize`` with ``right=False``: ``midpoint[i-1] < v <= midpoint[i]``).
- **Packing.** Two codes per byte, **high nibble first**: byte ``k`` holds code ``2k`` in bits 7..4
  and code ``2k+1`` in bits 3..0. An odd count is padded with the code of 0.0 (7 for NF4) as the
  last low nibble. ``packed`` is a 1-D uint8 tensor of ``ceil(n / 2)`` bytes (bitsandbytes returns
  the same bytes with shape ``[ceil(n / 2), 1]``).
- **Dequantization.** ``codebook[code] * absmax[block]`` in float32, then cast to the requested dtype.
- **Double quantization** (QLoRA): the float32 absmax values are themselves quantized: subtract their
  mean, then 8-bit blockwise absmax quantization (block 256) with bitsandbytes' signed dynamic map.
  Here the nearest code is exact (midpoints, ties to the lower code); bitsandbytes' CPU kernel uses an
  approximate binary search and picks a code one or two steps from the nearest for a few values in a thousand.
  A second-level block whose ``max|absmax - mean|`` is below ``1e-38`` (all zero, or subnormal) is divided
  by ``1e-38`` and stores ``1e-38``, so decoding inverts encoding (bitsandbytes stores the raw value there).
  Cost per parameter: ``32 / 64 = 0.5`` bits of absmax without, ``8/64 + 32/(64*256) = 0.127`` with.
- **FP4** (bitsandbytes' ``"fp4"``) is not OCP E2M1: 1 sign bit and the magnitudes
  ``[0, 0.0625, 8, 12, 4, 6, 2, 3] / 12`` indexed by the 3 low bits. Its codebook is in bit-pattern
  order; the nearest code is found in value order and mapped back (the stable sort puts +0, code 0,
  before -0, code 8, so 0.0 and small negatives get code 0 and small positives code 8, as in bitsandbytes).

All functions are device-agnostic: tensors stay on the input's device.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from .validation import FLOAT_DTYPES, check_int, check_module, check_tensor

__all__ = [
    "NF4_OFFSET",
    "QUANT_TYPES",
    "nf4_codebook",
    "fp4_codebook",
    "codebook",
    "dynamic_map",
    "nearest_code",
    "pack_4bit",
    "unpack_4bit",
    "blockwise_absmax",
    "quantize_4bit",
    "dequantize_4bit",
    "quantize_nf4",
    "dequantize_nf4",
    "quantize_fp4",
    "dequantize_fp4",
    "double_quantize_absmax",
    "dequantize_absmax",
    "bits_per_parameter",
    "fake_quantize_4bit",
    "FAKE_QUANT_SCHEMES",
    "NF4Linear",
    "LoRALinear",
    "quantize_linears_nf4",
    "fake_quantize_linears",
    "bnb_linear4bit_model",
    "add_lora",
    "count_parameters",
]

#: ``create_normal_map``'s default: the outermost probability used for NF4's largest positive value.
NF4_OFFSET = 0.9677083
#: The 4-bit codebooks ``quantize_4bit`` knows.
QUANT_TYPES = ("nf4", "fp4")
#: Smallest absmax bitsandbytes divides by (its ``clamp(min=1e-38)``).
_ABSMAX_FLOOR = 1e-38
#: bitsandbytes' FP4 magnitudes (bit patterns 0b000..0b111), before normalization by 12.
_FP4_MAGNITUDES = (0.0, 0.0625, 8.0, 12.0, 4.0, 6.0, 2.0, 3.0)


# ----------------------------------------------------------------------------------------------
# argument checks


def _check_blocksize(blocksize, name: str = "blocksize") -> None:
    if isinstance(blocksize, bool) or not isinstance(blocksize, int):
        raise TypeError(f"{name} must be a positive int, got {type(blocksize).__name__}")
    if blocksize <= 0:
        raise ValueError(f"{name} must be a positive int, got {blocksize}")


def _check_quant_type(quant_type) -> None:
    if quant_type not in QUANT_TYPES:
        raise ValueError(f"quant_type must be one of {QUANT_TYPES}, got {quant_type!r}")


def _check_shape(shape) -> tuple[int, ...]:
    if isinstance(shape, int) and not isinstance(shape, bool):
        shape = (shape,)
    if not isinstance(shape, (tuple, list, torch.Size)):
        raise TypeError(f"shape must be a tuple of ints (e.g. w.shape), got {type(shape).__name__}")
    for d in shape:
        if isinstance(d, bool) or not isinstance(d, int) or d < 0:
            raise ValueError(f"shape must hold non-negative ints, got {tuple(shape)}")
    n = math.prod(shape)
    if n == 0:
        raise ValueError(f"shape must describe at least one element, got {tuple(shape)}")
    return tuple(int(d) for d in shape)


def _device(device) -> torch.device:
    return torch.device("cpu") if device is None else torch.device(device)


# ----------------------------------------------------------------------------------------------
# codebooks


def nf4_codebook(offset: float = NF4_OFFSET, device=None) -> torch.Tensor:
    """NF4's 16 values, derived from normal quantiles (bitsandbytes' table, bit for bit).

    Args:
        offset: the probability of the largest positive quantile, in (0.5, 1). The default
            0.9677083 is bitsandbytes' (``norm.ppf(0.9677083) = 1.848`` standard deviations).
        device: where the tensor goes (default CPU).

    Returns:
        float32 tensor ``[16]``, sorted ascending, from -1.0 to 1.0, with exactly one 0.0 (code 7).
        8 positive values ``ndtri(linspace(offset, 0.5, 9)[:-1])``, 7 negative values
        ``-ndtri(linspace(offset, 0.5, 8)[:-1])`` and 0, divided by the largest. Asymmetric on
        purpose: 0 is exact, and 15 non-zero codes split as 8 positive and 7 negative.
    """
    if isinstance(offset, bool) or not isinstance(offset, (int, float)):
        raise TypeError(f"offset must be a float, got {type(offset).__name__}")
    if not 0.5 < float(offset) < 1.0:
        raise ValueError(f"offset must be in (0.5, 1), got {offset}")
    dev = _device(device)
    # float32 probabilities (torch.linspace), float64 quantiles (scipy's norm.ppf), float32 result
    p_pos = torch.linspace(float(offset), 0.5, 9, dtype=torch.float32)[:-1].double()
    p_neg = torch.linspace(float(offset), 0.5, 8, dtype=torch.float32)[:-1].double()
    values = torch.cat([torch.special.ndtri(p_pos), torch.zeros(1, dtype=torch.float64),
                        -torch.special.ndtri(p_neg)]).float()
    values = values.sort().values
    return (values / values.max()).to(dev)


def fp4_codebook(device=None) -> torch.Tensor:
    """bitsandbytes' FP4 values in bit-pattern order: code ``s.eem`` (sign bit 3) -> value.

    Args:
        device: where the returned tensor lives (default CPU).

    Returns:
        float32 tensor ``[16]``: codes 0..7 are ``[0, 0.0625, 8, 12, 4, 6, 2, 3] / 12``, codes 8..15
        the same with a minus sign (code 8 is -0.0). Not OCP E2M1 (whose magnitudes are
        0, 0.5, 1, 1.5, 2, 3, 4, 6).
    """
    mags = torch.tensor(_FP4_MAGNITUDES, dtype=torch.float32)
    values = torch.cat([mags, -mags])
    return (values / values.abs().max()).to(_device(device))


def codebook(quant_type: str = "nf4", device=None) -> torch.Tensor:
    """The 16-entry codebook of ``quant_type`` ("nf4" or "fp4"), indexed by the 4-bit code.

    Args:
        quant_type: ``"nf4"`` or ``"fp4"``.
        device: where the returned tensor lives (default CPU).

    Returns:
        torch.Tensor: float32 ``[16]``.
    """
    _check_quant_type(quant_type)
    return nf4_codebook(device=device) if quant_type == "nf4" else fp4_codebook(device=device)


def dynamic_map(device=None) -> torch.Tensor:
    """bitsandbytes' signed 8-bit dynamic map (``create_dynamic_map(signed=True)``), 256 sorted values.

    A dynamic-exponent format (Dettmers 2015): for exponents 10^-6 .. 10^0, a linear fraction grid of
    2^i midpoints in [0.1, 1], both signs, plus 0 and 1.0. Range [-0.99297, 1.0]; 0.0 is code 127.
    Used for the second level of double quantization.

    Args:
        device: where the returned tensor lives (default CPU).

    Returns:
        torch.Tensor: float32 ``[256]``, ascending.
    """
    data: list[float] = []
    max_exponent_bits, non_sign_bits = 7, 7
    for i in range(max_exponent_bits):
        fraction_items = int(2 ** (i + non_sign_bits - max_exponent_bits) + 1)
        boundaries = torch.linspace(0.1, 1, fraction_items, dtype=torch.float32)
        means = (boundaries[:-1] + boundaries[1:]) / 2.0
        data += ((10 ** (-(max_exponent_bits - 1) + i)) * means).tolist()
        data += (-(10 ** (-(max_exponent_bits - 1) + i)) * means).tolist()
    data += [0.0, 1.0]
    return torch.tensor(sorted(data), dtype=torch.float32, device=_device(device))


# ----------------------------------------------------------------------------------------------
# nearest code and packing


def nearest_code(x: torch.Tensor, codebook: torch.Tensor) -> torch.Tensor:
    """Index of the nearest codebook value for every element; a tie goes to the lower value.

    Args:
        x: float tensor, any shape, finite (usually scaled to [-1, 1]).
        codebook: 1-D float tensor of at most 256 values, on ``x``'s device, any order (NF4's is
            sorted; FP4's is in bit-pattern order).

    Returns:
        uint8 tensor of ``x``'s shape: the codes. Decision boundaries are the float32 midpoints of
        neighbouring values of the sorted codebook; ``v`` exactly on a midpoint gets the lower value
        (``torch.bucketize(v, midpoints)``, as bitsandbytes quantizes on the CPU). Equal values in the
        codebook keep the order of a stable sort.
    """
    check_tensor(x, "x", dtypes=FLOAT_DTYPES)
    check_tensor(codebook, "codebook", dtypes=FLOAT_DTYPES, ndim=1)
    if codebook.numel() > 256:
        raise ValueError(f"codebook must have at most 256 values (codes are uint8), got {codebook.numel()}")
    if codebook.device != x.device:
        raise ValueError(f"codebook must be on x's device ({x.device}), got {codebook.device}")
    return _nearest_code(x.to(torch.float32), codebook.to(torch.float32))


def _nearest_code(x32: torch.Tensor, cb: torch.Tensor) -> torch.Tensor:
    """``nearest_code`` without the checks (float32 inputs on one device)."""
    order = torch.argsort(cb, stable=True)
    ordered = cb[order]
    midpoints = (ordered[:-1] + ordered[1:]) / 2
    idx = torch.bucketize(x32.contiguous(), midpoints, out_int32=True)
    if bool((order == torch.arange(cb.numel(), device=cb.device)).all()):  # sorted codebook (NF4): no remap
        return idx.to(torch.uint8)
    return order[idx.long()].to(torch.uint8)


def pack_4bit(codes: torch.Tensor, pad: int = 0) -> torch.Tensor:
    """Pack 4-bit codes two per byte, high nibble first.

    Args:
        codes: integer tensor (any integer dtype, any shape) of values in 0..15; flattened row-major.
        pad: the code that fills the last low nibble when the count is odd (0..15).

    Returns:
        uint8 tensor ``[ceil(n / 2)]``: byte ``k = (codes[2k] << 4) | codes[2k+1]``.
    """
    check_tensor(codes, "codes", dtypes=(torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64))
    check_int(pad, "pad", low=0, high=15)
    lo, hi = int(codes.min()), int(codes.max())
    if lo < 0 or hi > 15:
        raise ValueError(f"codes must be in 0..15, got values from {lo} to {hi}")
    return _pack(codes.reshape(-1).to(torch.uint8), pad)


def _pack(flat: torch.Tensor, pad: int) -> torch.Tensor:
    """``pack_4bit`` without the checks (a flat uint8 tensor of codes 0..15)."""
    if flat.numel() % 2:
        flat = torch.cat([flat, torch.full((1,), pad, dtype=torch.uint8, device=flat.device)])
    pairs = flat.reshape(-1, 2)
    return (pairs[:, 0] << 4) | pairs[:, 1]


def unpack_4bit(packed: torch.Tensor, n: int) -> torch.Tensor:
    """Undo ``pack_4bit``: the first ``n`` codes (high nibble first) as a uint8 tensor ``[n]``.

    Args:
        packed: uint8 bytes, two codes each.
        n: number of codes to return.

    Returns:
        torch.Tensor: uint8 ``[n]``, values 0..15.

    Raises:
        ValueError: when ``packed`` does not hold exactly ``ceil(n / 2)`` bytes.
    """
    check_tensor(packed, "packed", dtypes=(torch.uint8,))
    check_int(n, "n", low=1)
    expected = (n + 1) // 2
    if packed.numel() != expected:
        raise ValueError(f"packed must hold ceil(n / 2) = {expected} bytes for n = {n} codes, "
                         f"got {packed.numel()} (shape {tuple(packed.shape)})")
    return _unpack(packed, n)


def _unpack(packed: torch.Tensor, n: int) -> torch.Tensor:
    flat = packed.reshape(-1)
    out = torch.stack([flat >> 4, flat & 0x0F], dim=1).reshape(-1)
    return out[:n]


# ----------------------------------------------------------------------------------------------
# blockwise 4-bit quantization


def blockwise_absmax(w: torch.Tensor, blocksize: int = 64) -> torch.Tensor:
    """``max|w|`` of every block of ``blocksize`` consecutive values of the flattened tensor.

    Args:
        w: any float tensor (flattened).
        blocksize: values per block.

    Returns:
        float32 tensor ``[ceil(n / blocksize)]``; the last (ragged) block covers only the
        ``n % blocksize`` remaining values.
    """
    check_tensor(w, "w", dtypes=FLOAT_DTYPES)
    _check_blocksize(blocksize)
    flat = w.reshape(-1).to(torch.float32)
    n = flat.numel()
    full = n - n % blocksize
    parts = []
    if full:
        parts.append(flat[:full].reshape(-1, blocksize).abs().amax(dim=1))
    if full < n:
        parts.append(flat[full:].abs().amax().reshape(1))
    return torch.cat(parts)


def _scaled_blocks(flat: torch.Tensor, blocksize: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(values scaled to [-1, 1], absmax as stored), with bitsandbytes' exact float32 arithmetic."""
    n = flat.numel()
    rem = n % blocksize
    full = n - rem
    parts, absmaxes = [], []
    if full:
        blocks = flat[:full].reshape(-1, blocksize)
        absmax = blocks.abs().amax(dim=1)
        inv = 1.0 / absmax.clamp(min=_ABSMAX_FLOOR)  # multiply by the float32 reciprocal
        parts.append(torch.clamp(blocks * inv[:, None], -1, 1).reshape(-1))
        absmaxes.append(absmax)
    if rem:
        am = flat[full:].abs().amax().clamp(min=_ABSMAX_FLOOR)  # the ragged block: its clamp is stored
        parts.append(torch.clamp(flat[full:] / am, -1, 1))  # and it is divided, not multiplied
        absmaxes.append(am.reshape(1))
    return torch.cat(parts), torch.cat(absmaxes)


def quantize_4bit(w: torch.Tensor, blocksize: int = 64, quant_type: str = "nf4") -> tuple[torch.Tensor, torch.Tensor]:
    """Blockwise absmax 4-bit quantization with a codebook, packed two codes per byte.

    Args:
        w: float tensor (float16, bfloat16, float32, float64; computed in float32), any shape, finite,
            not empty.
        blocksize: values per block (positive; bitsandbytes uses 64 and accepts 32..4096).
        quant_type: "nf4" or "fp4".

    Returns:
        (packed, absmax): ``packed`` uint8 ``[ceil(n / 2)]`` (high nibble first, an odd count padded
        with the code of 0.0), ``absmax`` float32 ``[ceil(n / blocksize)]``, on ``w``'s device.
        Identical to ``bitsandbytes.functional.quantize_4bit(w, blocksize=blocksize, quant_type=...)``
        on the CPU (its packed bytes flattened, its ``quant_state.absmax``).
    """
    check_tensor(w, "w", dtypes=FLOAT_DTYPES)
    _check_blocksize(blocksize)
    _check_quant_type(quant_type)
    codes, absmax, pad = _codes_4bit(w, blocksize, quant_type)
    return _pack(codes, pad), absmax


def _codes_4bit(w: torch.Tensor, blocksize: int, quant_type: str) -> tuple[torch.Tensor, torch.Tensor, int]:
    """(unpacked uint8 codes [n], absmax, the code of 0.0) for a checked tensor."""
    cb = codebook(quant_type, device=w.device)
    scaled, absmax = _scaled_blocks(w.reshape(-1).to(torch.float32), blocksize)
    codes = _nearest_code(scaled, cb)
    pad = int(_nearest_code(torch.zeros(1, device=w.device), cb))  # bitsandbytes pads the scaled values with 0
    return codes, absmax, pad


def _check_packed_args(packed, absmax, shape, blocksize) -> tuple[tuple[int, ...], int]:
    check_tensor(packed, "packed", dtypes=(torch.uint8,))
    _check_blocksize(blocksize)
    shape = _check_shape(shape)
    n = math.prod(shape)
    if packed.numel() != (n + 1) // 2:
        raise ValueError(f"packed must hold ceil(n / 2) = {(n + 1) // 2} bytes for shape {shape} (n = {n}), "
                         f"got {packed.numel()}")
    check_tensor(absmax, "absmax", dtypes=FLOAT_DTYPES)
    n_blocks = -(-n // blocksize)
    if absmax.numel() != n_blocks:
        raise ValueError(f"absmax must hold ceil(n / blocksize) = {n_blocks} values for n = {n}, "
                         f"blocksize = {blocksize}, got {absmax.numel()}")
    if absmax.device != packed.device:
        raise ValueError(f"absmax must be on packed's device ({packed.device}), got {absmax.device}")
    return shape, n


def dequantize_4bit(packed: torch.Tensor, absmax: torch.Tensor, shape: Sequence[int], blocksize: int = 64,
                    quant_type: str = "nf4", dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Undo ``quantize_4bit``: ``codebook[code] * absmax[block]`` (float32), reshaped and cast.

    Args:
        packed: uint8 ``[ceil(n / 2)]`` (any shape with that many bytes).
        absmax: float ``[ceil(n / blocksize)]`` on ``packed``'s device.
        shape: the original tensor's shape (``n`` = its number of elements).
        blocksize, quant_type: as given to ``quantize_4bit``.
        dtype: float dtype of the result.

    Returns:
        tensor of ``shape`` and ``dtype`` on ``packed``'s device.
    """
    shape, n = _check_packed_args(packed, absmax, shape, blocksize)
    _check_quant_type(quant_type)
    if dtype not in FLOAT_DTYPES:
        raise TypeError(f"dtype must be one of {[str(d) for d in FLOAT_DTYPES]}, got {dtype}")
    cb = codebook(quant_type, device=packed.device)
    values = cb[_unpack(packed, n).long()]
    return _times_block_scale(values, absmax.to(torch.float32).reshape(-1), blocksize).reshape(shape).to(dtype)


def _times_block_scale(values: torch.Tensor, scales: torch.Tensor, blocksize: int) -> torch.Tensor:
    """``values[i] * scales[i // blocksize]`` for a flat tensor whose last block may be ragged."""
    n = values.numel()
    full = n - n % blocksize
    out = torch.empty_like(values)
    if full:
        out[:full] = (values[:full].reshape(-1, blocksize) * scales[: full // blocksize, None]).reshape(-1)
    if full < n:
        out[full:] = values[full:] * scales[-1]
    return out


def quantize_nf4(w: torch.Tensor, blocksize: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """NF4: ``quantize_4bit(w, blocksize, "nf4")``; returns (packed uint8 ``[ceil(n/2)]``, absmax float32 ``[n_blocks]``).

    Args:
        w: any float tensor (flattened).
        blocksize: values per block.

    Returns:
        tuple[torch.Tensor, torch.Tensor]: packed codes and absmax.
    """
    return quantize_4bit(w, blocksize, "nf4")


def dequantize_nf4(packed: torch.Tensor, absmax: torch.Tensor, shape: Sequence[int], blocksize: int = 64) -> torch.Tensor:
    """Float32 tensor of ``shape`` from NF4 ``packed`` codes and per-block ``absmax``.

    Args:
        packed: uint8 ``[ceil(n / 2)]`` codes, two per byte (from ``pack_4bit``).
        absmax: float32 ``[n_blocks]``, one per block.
        shape: shape of the original tensor (``n`` = its number of elements).
        blocksize: values per block.

    Returns:
        torch.Tensor: float32 of ``shape``.
    """
    return dequantize_4bit(packed, absmax, shape, blocksize, "nf4")


def quantize_fp4(w: torch.Tensor, blocksize: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """bitsandbytes' FP4: ``quantize_4bit(w, blocksize, "fp4")``.

    Args:
        w: any float tensor (flattened).
        blocksize: values per block.

    Returns:
        tuple[torch.Tensor, torch.Tensor]: packed uint8 ``[ceil(n/2)]`` codes and float32 absmax ``[n_blocks]``.
    """
    return quantize_4bit(w, blocksize, "fp4")


def dequantize_fp4(packed: torch.Tensor, absmax: torch.Tensor, shape: Sequence[int], blocksize: int = 64) -> torch.Tensor:
    """Float32 tensor of ``shape`` from FP4 ``packed`` codes and per-block ``absmax``.

    Args:
        packed, absmax, shape, blocksize: as in :func:`dequantize_nf4`, with FP4 codes.

    Returns:
        torch.Tensor: float32 of ``shape``.
    """
    return dequantize_4bit(packed, absmax, shape, blocksize, "fp4")


# ----------------------------------------------------------------------------------------------
# double quantization


def double_quantize_absmax(absmax: torch.Tensor, blocksize: int = 256) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Quantize the first-level absmax values to 8 bits (QLoRA's double quantization).

    ``offset = mean(absmax)``; ``c = absmax - offset`` is cut into blocks of ``blocksize``; each block
    stores ``absmax2 = max|c|`` (float32) and its values ``c / absmax2`` as the nearest of the 256
    values of ``dynamic_map()`` (ties to the lower value). A block whose ``max|c|`` is below
    ``1e-38`` (all zero, or subnormal) is divided by ``1e-38`` instead, and ``1e-38`` is what it
    stores as ``absmax2``: the stored scale is always the one used to encode, so
    ``dequantize_absmax`` inverts this function (an all-zero block decodes to ``offset`` exactly).
    bitsandbytes' CPU kernel divides by the raw ``max|c|`` there (its codes saturate when that is
    subnormal); on normal values the two store the same ``absmax2``.

    Args:
        absmax: float tensor ``[n_blocks]`` (from ``quantize_4bit``), finite, not empty.
        blocksize: values per second-level block (positive; 256 in QLoRA and bitsandbytes).

    Returns:
        (qabsmax uint8 ``[n_blocks]``, absmax2 float32 ``[ceil(n_blocks / blocksize)]``, offset float32 0-dim).
    """
    check_tensor(absmax, "absmax", dtypes=FLOAT_DTYPES)
    _check_blocksize(blocksize)
    flat = absmax.reshape(-1).to(torch.float32)
    offset = flat.mean()
    centred = flat - offset
    # the floored scale is both the divisor and what is stored, so decoding inverts encoding
    divisor = blockwise_absmax(centred, blocksize).clamp(min=_ABSMAX_FLOOR)
    n, full = centred.numel(), centred.numel() - centred.numel() % blocksize
    normed = torch.empty_like(centred)  # divided, as bitsandbytes' kernel does
    if full:
        normed[:full] = (centred[:full].reshape(-1, blocksize) / divisor[: full // blocksize, None]).reshape(-1)
    if full < n:
        normed[full:] = centred[full:] / divisor[-1]
    q = _nearest_code(normed, dynamic_map(device=flat.device))
    return q, divisor, offset


def dequantize_absmax(qabsmax: torch.Tensor, absmax2: torch.Tensor, offset, blocksize: int = 256) -> torch.Tensor:
    """Undo ``double_quantize_absmax``: ``dynamic_map()[q] * absmax2[block] + offset``, float32 ``[n_blocks]``.

    Args:
        qabsmax: uint8 ``[n_blocks]``, codes into ``dynamic_map()``.
        absmax2: float32, one per block of ``blocksize`` codes.
        offset: the mean subtracted before quantizing (a float).
        blocksize: absmax values per second-level block.

    Returns:
        torch.Tensor: float32 ``[n_blocks]``.
    """
    check_tensor(qabsmax, "qabsmax", dtypes=(torch.uint8,))
    check_tensor(absmax2, "absmax2", dtypes=FLOAT_DTYPES)
    _check_blocksize(blocksize)
    n = qabsmax.numel()
    if absmax2.numel() != -(-n // blocksize):
        raise ValueError(f"absmax2 must hold ceil(n / blocksize) = {-(-n // blocksize)} values, got {absmax2.numel()}")
    offset = torch.as_tensor(offset, dtype=torch.float32, device=qabsmax.device)
    if offset.numel() != 1 or not bool(torch.isfinite(offset).all()):
        raise ValueError("offset must be one finite number")
    values = dynamic_map(device=qabsmax.device)[qabsmax.reshape(-1).long()]
    return _times_block_scale(values, absmax2.reshape(-1).to(torch.float32), blocksize) + offset.reshape(())


def bits_per_parameter(blocksize: int = 64, double_quant: bool = False, blocksize2: int = 256) -> float:
    """Storage per weight of blockwise 4-bit quantization, in bits.

    ``4 + 32 / blocksize`` (a float32 absmax per block); with double quantization the absmax is
    8 bits and each block of ``blocksize2`` absmax values adds a float32 ``absmax2``:
    ``4 + 8 / blocksize + 32 / (blocksize * blocksize2)`` (the one float32 offset is not counted).
    Block 64: 4.5 without, 4.127 with (QLoRA: the absmax cost drops from 0.5 to 0.127 bits).

    Args:
        blocksize: weights per absmax.
        double_quant: absmax stored in 8 bits (QLoRA).
        blocksize2: absmax values per second-level block.

    Returns:
        float: bits per weight.
    """
    _check_blocksize(blocksize)
    _check_blocksize(blocksize2, "blocksize2")
    if not isinstance(double_quant, bool):
        raise TypeError(f"double_quant must be a bool, got {type(double_quant).__name__}")
    if double_quant:
        return 4 + 8 / blocksize + 32 / (blocksize * blocksize2)
    return 4 + 32 / blocksize


# ----------------------------------------------------------------------------------------------
# comparing 4-bit formats


def _int4_absmax(flat: torch.Tensor, blocksize: int) -> torch.Tensor:
    """Symmetric int4 per block: codes -7..7, scale absmax / 7, round half to even."""
    n = flat.numel()
    pad = (-n) % blocksize
    blocks = torch.nn.functional.pad(flat, (0, pad)).reshape(-1, blocksize)
    scale = blocks.abs().amax(dim=1, keepdim=True).clamp(min=_ABSMAX_FLOOR) / 7
    return (torch.round(blocks / scale).clamp(-7, 7) * scale).reshape(-1)[:n]


def _int4_asymmetric(flat: torch.Tensor, blocksize: int) -> torch.Tensor:
    """Asymmetric (min-max) int4 per block: codes 0..15, range widened to contain 0 (course_lib.affine's rules)."""
    n = flat.numel()
    rem = n % blocksize
    blocks = flat[: n - rem].reshape(-1, blocksize)
    outs = []
    for part in ([blocks] if rem == 0 else [blocks, flat[n - rem:].reshape(1, -1)]):
        if part.numel() == 0:
            continue
        lo = part.amin(dim=1, keepdim=True).clamp(max=0)
        hi = part.amax(dim=1, keepdim=True).clamp(min=0)
        scale = ((hi - lo) / 15).clamp(min=torch.finfo(torch.float32).eps)
        zero = (-torch.round(lo / scale)).clamp(0, 15)
        q = (torch.round(part * (1.0 / scale)) + zero).clamp(0, 15)
        outs.append(((q - zero) * scale).reshape(-1))
    return torch.cat(outs)


#: Schemes ``fake_quantize_4bit`` knows.
FAKE_QUANT_SCHEMES = ("nf4", "fp4", "int4", "int4_asym")


def fake_quantize_4bit(w: torch.Tensor, scheme: str = "nf4", blocksize: int = 64) -> torch.Tensor:
    """Quantize and dequantize ``w`` blockwise with a 4-bit scheme, same shape, float32.

    Schemes: "nf4" and "fp4" (codebook times absmax, as ``quantize_4bit``), "int4" (symmetric absmax,
    codes -7..7), "int4_asym" (min-max per block, codes 0..15, one float scale and zero point per block:
    twice the metadata of the others).

    Args:
        w: any float tensor (flattened in blocks).
        scheme: ``"nf4"``, ``"fp4"``, ``"int4"`` or ``"int4_asym"``.
        blocksize: values per block.

    Returns:
        torch.Tensor: float32, ``w``'s shape.
    """
    check_tensor(w, "w", dtypes=FLOAT_DTYPES)
    _check_blocksize(blocksize)
    if scheme not in FAKE_QUANT_SCHEMES:
        raise ValueError(f"scheme must be one of {FAKE_QUANT_SCHEMES}, got {scheme!r}")
    if scheme in QUANT_TYPES:  # quantize_4bit then dequantize_4bit, without packing in between
        codes, absmax, _ = _codes_4bit(w, blocksize, scheme)
        values = codebook(scheme, device=w.device)[codes.long()]
        return _times_block_scale(values, absmax, blocksize).reshape(w.shape)
    flat = w.reshape(-1).to(torch.float32)
    out = _int4_absmax(flat, blocksize) if scheme == "int4" else _int4_asymmetric(flat, blocksize)
    return out.reshape(w.shape)


# ----------------------------------------------------------------------------------------------
# modules: an NF4 linear layer and a LoRA adapter (QLoRA)


class NF4Linear(torch.nn.Module):
    """A frozen linear layer whose weight is stored in NF4 (packed codes + absmax, optionally double-quantized).

    The forward pass dequantizes the weight to the input's dtype and calls ``F.linear``, as
    bitsandbytes' ``Linear4bit`` does on the CPU. The weight has no gradient; the bias (if any) is
    kept in float and frozen too.
    """

    def __init__(self, linear: torch.nn.Linear, blocksize: int = 64, double_quant: bool = False):
        super().__init__()
        if not isinstance(linear, torch.nn.Linear):
            raise TypeError(f"linear must be a torch.nn.Linear, got {type(linear).__name__}")
        _check_blocksize(blocksize)
        w = linear.weight.detach()
        packed, absmax = quantize_nf4(w, blocksize)
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.shape = tuple(w.shape)
        self.blocksize = blocksize
        self.double_quant = bool(double_quant)
        self.register_buffer("packed", packed)
        if double_quant:
            q, absmax2, offset = double_quantize_absmax(absmax)
            self.register_buffer("qabsmax", q)
            self.register_buffer("absmax2", absmax2)
            self.register_buffer("offset", offset)
        else:
            self.register_buffer("absmax", absmax)
        bias = None if linear.bias is None else linear.bias.detach().clone()
        self.register_buffer("bias", bias)

    def weight_absmax(self) -> torch.Tensor:
        """The first-level absmax (dequantized from 8 bits when double-quantized)."""
        if self.double_quant:
            return dequantize_absmax(self.qabsmax, self.absmax2, self.offset)
        return self.absmax

    def dequantized_weight(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        return dequantize_nf4(self.packed, self.weight_absmax(), self.shape, self.blocksize).to(dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.dequantized_weight(x.dtype)
        bias = None if self.bias is None else self.bias.to(x.dtype)
        return torch.nn.functional.linear(x, w, bias)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, blocksize={self.blocksize}, "
                f"double_quant={self.double_quant}")


class LoRALinear(torch.nn.Module):
    """``base(x) + (alpha / rank) * x A^T B^T``: a frozen base layer plus a trainable low-rank update.

    ``A`` ``[rank, in]`` starts small and random (Kaiming-uniform, as in the LoRA reference code),
    ``B`` ``[out, rank]`` starts at zero, so the adapted layer starts exactly equal to the base.
    Only ``A`` and ``B`` are trainable: ``rank * (in + out)`` parameters.
    """

    def __init__(self, base: torch.nn.Module, rank: int = 4, alpha: float = 8.0, generator: torch.Generator | None = None):
        super().__init__()
        in_features, out_features = getattr(base, "in_features", None), getattr(base, "out_features", None)
        if in_features is None or out_features is None:
            raise TypeError(f"base must have in_features and out_features (nn.Linear or NF4Linear), got {type(base).__name__}")
        check_int(rank, "rank", low=1)
        for p in base.parameters():
            p.requires_grad_(False)
        self.base = base
        self.rank, self.alpha = rank, float(alpha)
        self.in_features, self.out_features = in_features, out_features
        a = torch.empty(rank, in_features)
        bound = 1 / math.sqrt(in_features)
        a.uniform_(-bound, bound, generator=generator)
        self.lora_A = torch.nn.Parameter(a)
        self.lora_B = torch.nn.Parameter(torch.zeros(out_features, rank))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        update = (x @ self.lora_A.to(x.dtype).T) @ self.lora_B.to(x.dtype).T
        return self.base(x) + (self.alpha / self.rank) * update


def _replace_linears(model: torch.nn.Module, make, skip: Sequence[str]) -> int:
    count = 0
    for name, module in list(model.named_modules()):
        for child_name, child in list(module.named_children()):
            full = f"{name}.{child_name}" if name else child_name
            if isinstance(child, torch.nn.Linear) and not any(s in full for s in skip):
                setattr(module, child_name, make(child))
                count += 1
    return count


def quantize_linears_nf4(model: torch.nn.Module, blocksize: int = 64, double_quant: bool = False,
                         skip: Sequence[str] = ()) -> torch.nn.Module:
    """Replace every ``nn.Linear`` of ``model`` (in place) by an ``NF4Linear``; returns the model.

    Args:
        skip: substrings of module names to leave in float (e.g. ``("classifier",)``).

    Returns:
        torch.nn.Module: ``model`` itself.
    """
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    _check_blocksize(blocksize)
    _replace_linears(model, lambda lin: NF4Linear(lin, blocksize, double_quant), skip)
    return model


def fake_quantize_linears(model: torch.nn.Module, scheme: str = "nf4", blocksize: int = 64,
                          skip: Sequence[str] = ()) -> torch.nn.Module:
    """Replace the weight of every ``nn.Linear`` (in place) by ``fake_quantize_4bit(weight, scheme)``; returns the model.

    The layers stay float ``nn.Linear``: a quick way to measure a scheme's effect on a model's outputs.

    Args:
        model: changed in place.
        scheme, blocksize: as in :func:`fake_quantize_4bit`.
        skip: substrings of module names to leave unchanged.

    Returns:
        torch.nn.Module: ``model`` itself.
    """
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if scheme not in FAKE_QUANT_SCHEMES:
        raise ValueError(f"scheme must be one of {FAKE_QUANT_SCHEMES}, got {scheme!r}")
    with torch.no_grad():
        for name, module in model.named_modules():
            if isinstance(module, torch.nn.Linear) and not any(s_ in name for s_ in skip):
                module.weight.copy_(fake_quantize_4bit(module.weight, scheme, blocksize).to(module.weight.dtype))
    return model


def bnb_linear4bit_model(model: torch.nn.Module, quant_type: str = "nf4", blocksize: int = 64,
                         compress_statistics: bool = True, skip: Sequence[str] = ()) -> torch.nn.Module:
    """Replace every ``nn.Linear`` (in place) by bitsandbytes' ``Linear4bit`` (float32 compute); returns the model.

    ``compress_statistics=True`` (bitsandbytes' default) is double quantization. Needs bitsandbytes; import
    ``course_lib`` before it (that silences its import warning). The layers are quantized on the model's device.

    Args:
        model: changed in place.
        quant_type: ``"nf4"`` or ``"fp4"``.
        blocksize: values per block.
        compress_statistics: double quantization of the absmax.
        skip: substrings of module names to leave in float.

    Returns:
        torch.nn.Module: ``model`` itself.
    """
    check_module(model, "model")
    import bitsandbytes as bnb

    _check_quant_type(quant_type)
    _check_blocksize(blocksize)

    def make(lin: torch.nn.Linear):
        layer = bnb.nn.Linear4bit(lin.in_features, lin.out_features, bias=lin.bias is not None,
                                  compute_dtype=torch.float32, compress_statistics=compress_statistics,
                                  quant_type=quant_type, device="meta")
        layer.weight = bnb.nn.Params4bit(lin.weight.data.detach().clone().cpu(), requires_grad=False,
                                         quant_type=quant_type, blocksize=blocksize,
                                         compress_statistics=compress_statistics)
        if lin.bias is not None:
            layer.bias = torch.nn.Parameter(lin.bias.data.detach().clone().cpu(), requires_grad=False)
        return layer.to(lin.weight.device)

    _replace_linears(model, make, skip)
    return model


def add_lora(model: torch.nn.Module, rank: int = 4, alpha: float = 8.0, targets: Sequence[type] = (NF4Linear,),
             seed: int = 0) -> torch.nn.Module:
    """Freeze every parameter of ``model`` and wrap each module of a ``targets`` type in a ``LoRALinear``.

    Returns the model (changed in place); only the adapters' ``lora_A`` / ``lora_B`` are trainable.

    Args:
        model: changed in place.
        rank: rank r of the adapters.
        alpha: scaling numerator (the update is ``alpha / rank * B A``).
        targets: module types to wrap.
        seed: initialization seed of ``lora_A``.

    Returns:
        torch.nn.Module: ``model`` itself.
    """
    check_module(model, "model")
    check_int(rank, "rank", low=1)
    for p in model.parameters():
        p.requires_grad_(False)
    gen = torch.Generator().manual_seed(seed)
    targets = tuple(targets)
    for name, module in list(model.named_modules()):
        for child_name, child in list(module.named_children()):
            if isinstance(child, targets) and not isinstance(module, LoRALinear):
                device = next((b.device for b in child.buffers()), None) or next(
                    (p.device for p in child.parameters()), torch.device("cpu"))
                setattr(module, child_name, LoRALinear(child, rank, alpha, generator=gen).to(device))
    return model


def count_parameters(model: torch.nn.Module) -> dict:
    """``{"trainable": ..., "frozen": ..., "total": ...}`` over parameters (packed NF4 buffers not included).

    Args:
        model: any module.

    Returns:
        dict: ints ``trainable``, ``frozen``, ``total``.
    """
    check_module(model, "model")
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return {"trainable": trainable, "frozen": total - trainable, "total": total}
