"""Notebook 03 (sections 9 and 10, "GGUF: what people download", "A model in a GGUF file"): llama.cpp's block
formats, in torch, and whole models in GGUF files.

A GGUF file stores each weight row as a sequence of fixed-size *blocks*: a few scales in fp16 followed by
packed integer codes. The byte layout of one block is the whole format; the bytes produced here are the
bytes ``gguf.quants.quantize`` produces (llama.cpp's Python package, ``pip install gguf``) and the values
decoded here are the values ``gguf.quants.dequantize`` decodes, bit for bit (``tests/library/test_gguf_formats.py``):

- ``Q8_0``: 32 weights, one fp16 scale ``d = absmax / 127`` and 32 int8 codes, rounded half away from zero
  (34 bytes: 8.5 bits per weight, not 8);
- ``Q4_0``: 32 weights, one fp16 scale and 32 4-bit codes. The scale is the *signed* value of largest
  magnitude divided by -8, so that value lands exactly on code 0 (= -8 after the offset) and the grid
  ``-8 .. 7`` is used asymmetrically on its side; codes are ``trunc(x / d + 8.5)`` clipped to 15. Code ``i``
  of the first half goes into the low nibble of byte ``i``, code ``i`` of the second half into its high
  nibble (18 bytes: 4.5 bits);
- ``Q4_K``: a super-block of 256 weights in 8 sub-blocks of 32; each sub-block has its own scale and
  minimum (``x = d_j * q - m_j``, ``q`` in ``0 .. 15``), and these 16 numbers are themselves quantized to
  6 bits against two fp16 super-scales ``d`` and ``dmin`` (12 bytes of packed 6-bit values; 144 bytes:
  4.5 bits);
- ``Q6_K``: 256 weights in 16 sub-blocks of 16, symmetric 6-bit codes, one int8 scale per sub-block and
  one fp16 super-scale (210 bytes: 6.5625 bits).

``gguf.quants`` (0.19) quantizes ``Q4_0``, ``Q8_0`` and a few others but only *decodes* the K-quants; the K
quantizers here take the steps of llama.cpp's reference quantizers (``quantize_row_q4_K_ref`` and
``quantize_row_q6_K_ref`` in ``ggml/src/ggml-quants.c``), their bytes decode through ``gguf.quants`` to exactly
``q4_k_dequantize`` / ``q6_k_dequantize`` of them, and they gave the bytes of those C functions (transcribed and
compiled with gcc 12 -O2 -ffp-contract=off, outside the repository) on every super-block tried; two of those
outputs are pinned by hash in ``tests/library/test_gguf_formats.py``. Three details matter for that: the search's sums
are added one element at a time in the C loops' order (``_sums``), the square root is taken in float64 (C's
``sqrtf`` is correctly rounded, torch's vectorized float32 one may be 1 ulp off), and llama.cpp's stretched grids
start from the best offset found so far. A build that fuses multiply-adds (``-ffp-contract=fast`` with FMA)
can round differently and pick another candidate on a near-tie.

The K-quantizers' search, in the course's words:

- ``Q4_K``, per sub-block of 32: weight each value by ``rms(sub-block) + |x|`` (large values matter more),
  start from the min-max grid ``[min(x, 0), max(x)]`` with 15 steps, then try 21 slightly stretched grids
  (``15 - 1 + 0.1 k`` steps from the best offset so far up to ``max(x)``, ``k = 0 .. 20``); for each, round the values to codes and
  solve the weighted least-squares line ``x ~ scale * q + min`` for the best scale and offset (the offset
  clamped to ``<= 0``); keep the grid with the smallest weighted squared error. Then quantize the 8 scales
  and 8 offsets to 6 bits against their maxima, and round every value once more with the scales as
  stored;
- ``Q6_K``, per sub-block of 16: a symmetric grid through the value of largest magnitude (``-32 .. 31``),
  and 18 nearby grids (``32 +- 0.1 k`` steps); for each, the least-squares scale for the rounded codes with
  weights ``x**2``; keep the one that explains most of the (weighted) signal. The 16 scales are quantized
  to int8 against the largest, and the values rounded again with the scales as stored.

Bits per weight come from the layouts (``GGUF_LAYOUTS``: every field of a block, its bit width and its
count), not from a table: ``bits_per_weight("Q8_0") == 8.5``.

Every quantizer takes a float tensor ``[..., n]`` (fp16, bf16, fp32 or fp64; computed in fp32 like
llama.cpp) with ``n`` a multiple of the block size and returns ``uint8`` bytes ``[..., n / block *
block_bytes]``, the layout ``gguf.quants.quantize`` returns; every dequantizer takes such bytes and returns
float32 ``[..., n]``. CPU and CUDA (little-endian byte order of fp16, as in the file format).
``quantize_blocks(x, fmt)`` and ``dequantize_blocks(blocks, fmt)`` choose them by name.

Files: ``export_gguf(model, path, tensor_types)`` writes a model's ``state_dict()`` with the ``gguf`` package's
``GGUFWriter``, each tensor in the type ``tensor_types`` names (F32 by default, F16, or a block format, its
bytes from the quantizers here), a tensor shared under two names (tied embeddings) once; ``read_gguf(path)``
reads a file back with ``GGUFReader``, and ``GGUFTensors.values()`` decodes it with ``gguf.quants``. The
tensors keep PyTorch's names: llama.cpp runs only files from its own converter (see ``export_gguf``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch

from .validation import FLOAT_DTYPES, check_int, check_module, check_tensor

__all__ = [
    "BlockLayout",
    "GGUF_LAYOUTS",
    "block_layout",
    "bits_per_weight",
    "mixture_bits_per_weight",
    "q8_0_quantize",
    "q8_0_dequantize",
    "q4_0_quantize",
    "q4_0_dequantize",
    "q4_k_quantize",
    "q4_k_dequantize",
    "q6_k_quantize",
    "q6_k_dequantize",
    "TENSOR_TYPES",
    "quantize_blocks",
    "dequantize_blocks",
    "GGUFTensors",
    "export_gguf",
    "read_gguf",
]


@dataclass(frozen=True)
class BlockLayout:
    """The layout of one block of a GGUF format.

    Attributes:
        name: the format's name in llama.cpp (``"Q4_K"``).
        block_size: weights per block (32, or 256 for the K-quants' super-blocks).
        fields: ``(field, bits per entry, entries per block)`` for every field of the block, in the
            order of the C struct (``("d", 16, 1)``: one fp16 scale).
    """

    name: str
    block_size: int
    fields: tuple[tuple[str, int, int], ...]

    @property
    def block_bits(self) -> int:
        """Bits of one block: the sum over its fields."""
        return sum(bits * count for _, bits, count in self.fields)

    @property
    def block_bytes(self) -> int:
        """Bytes of one block (every layout fills whole bytes)."""
        return self.block_bits // 8

    @property
    def bits_per_weight(self) -> float:
        """Bits stored per weight, scales included: ``block_bits / block_size``."""
        return self.block_bits / self.block_size


_FP16 = 16
#: Every block format the course measures, with the fields of llama.cpp's ``block_*`` structs
#: (``ggml/src/ggml-common.h``); the K-quants' 6-bit scales and mins are packed into 12 bytes.
GGUF_LAYOUTS: dict[str, BlockLayout] = {layout.name: layout for layout in (
    BlockLayout("Q8_0", 32, (("d", _FP16, 1), ("qs", 8, 32))),
    BlockLayout("Q4_0", 32, (("d", _FP16, 1), ("qs", 4, 32))),
    BlockLayout("Q4_1", 32, (("d", _FP16, 1), ("m", _FP16, 1), ("qs", 4, 32))),
    BlockLayout("Q5_0", 32, (("d", _FP16, 1), ("qh", 1, 32), ("qs", 4, 32))),
    BlockLayout("Q5_1", 32, (("d", _FP16, 1), ("m", _FP16, 1), ("qh", 1, 32), ("qs", 4, 32))),
    BlockLayout("Q2_K", 256, (("scales", 4, 16), ("mins", 4, 16), ("qs", 2, 256), ("d", _FP16, 1),
                              ("dmin", _FP16, 1))),
    BlockLayout("Q3_K", 256, (("hmask", 1, 256), ("qs", 2, 256), ("scales", 6, 16), ("d", _FP16, 1))),
    BlockLayout("Q4_K", 256, (("d", _FP16, 1), ("dmin", _FP16, 1), ("scales", 6, 8), ("mins", 6, 8),
                              ("qs", 4, 256))),
    BlockLayout("Q5_K", 256, (("d", _FP16, 1), ("dmin", _FP16, 1), ("scales", 6, 8), ("mins", 6, 8),
                              ("qh", 1, 256), ("qs", 4, 256))),
    BlockLayout("Q6_K", 256, (("ql", 4, 256), ("qh", 2, 256), ("scales", 8, 16), ("d", _FP16, 1))),
)}

_QK = 256           # weights per K-quant super-block
# values searched at once: the search's many small operations then stay under torch's grain size for splitting
# work between threads (32768 elements), whose synchronisation costs more than such an operation (10x on 2 cores)
_CHUNK = 32768
_GROUP_MAX_EPS = 1e-15  # llama.cpp: a Q6_K super-block whose largest scale is below this is stored as zeros


def block_layout(fmt: str) -> BlockLayout:
    """The layout of one block of ``fmt``.

    Args:
        fmt: a format name of ``GGUF_LAYOUTS`` (``"Q8_0"``, ``"Q4_K"``, ...).

    Returns:
        Its ``BlockLayout``.
    """
    if not isinstance(fmt, str):
        raise TypeError(f"fmt must be a str, got {type(fmt).__name__}")
    if fmt not in GGUF_LAYOUTS:
        raise ValueError(f"fmt must be one of {sorted(GGUF_LAYOUTS)}, got {fmt!r}")
    return GGUF_LAYOUTS[fmt]


def bits_per_weight(fmt: str) -> float:
    """Bits stored per weight by ``fmt``, computed from its block layout (scales included).

    Args:
        fmt: a format name of ``GGUF_LAYOUTS``.

    Returns:
        ``8 * block_bytes / block_size``: 8.5 for Q8_0, 4.5 for Q4_0 and Q4_K, 6.5625 for Q6_K.
    """
    return block_layout(fmt).bits_per_weight


def mixture_bits_per_weight(weights_per_format: Mapping[str, int]) -> float:
    """Bits per weight of a model whose tensors use several formats (Q4_K_M mixes Q4_K and Q6_K).

    Args:
        weights_per_format: number of weights stored in each format, ``{"Q4_K": n1, "Q6_K": n2}``.

    Returns:
        Total bits divided by total weights.
    """
    if not isinstance(weights_per_format, Mapping):
        raise TypeError(f"weights_per_format must be a mapping, got {type(weights_per_format).__name__}")
    if not weights_per_format:
        raise ValueError("weights_per_format must not be empty")
    for fmt, n in weights_per_format.items():
        check_int(n, f"weights_per_format[{fmt!r}]", low=0)
    total = sum(weights_per_format.values())
    if total == 0:
        raise ValueError("weights_per_format must count at least one weight, got 0 in all")
    return sum(bits_per_weight(fmt) * n for fmt, n in weights_per_format.items()) / total


# ----------------------------------------------------------------------------------------------
# shared plumbing: blocks in, bytes out and back


def _blocks(x: torch.Tensor, fmt: str, name: str = "x") -> torch.Tensor:
    """``x [..., n]`` as float32 blocks ``[n_blocks, block_size]``, after checking it."""
    check_tensor(x, name, dtypes=FLOAT_DTYPES)
    if x.dim() == 0:
        raise ValueError(f"{name} must have at least 1 dimension, got a scalar")
    size = GGUF_LAYOUTS[fmt].block_size
    if x.shape[-1] % size != 0:
        raise ValueError(f"{name}'s last dimension must be a multiple of the {fmt} block size {size}, "
                         f"got shape {tuple(x.shape)}")
    return x.float().reshape(-1, size)


def _byte_blocks(blocks: torch.Tensor, fmt: str, name: str = "blocks") -> torch.Tensor:
    """``blocks [..., m]`` (uint8) as ``[n_blocks, block_bytes]``, after checking it."""
    check_tensor(blocks, name, dtypes=(torch.uint8,))
    if blocks.dim() == 0:
        raise ValueError(f"{name} must have at least 1 dimension, got a scalar")
    size = GGUF_LAYOUTS[fmt].block_bytes
    if blocks.shape[-1] % size != 0:
        raise ValueError(f"{name}'s last dimension must be a multiple of the {fmt} block's {size} bytes, "
                         f"got shape {tuple(blocks.shape)}")
    return blocks.reshape(-1, size)


def _out_shape(shape: torch.Size, fmt: str, *, to_bytes: bool) -> tuple[int, ...]:
    layout = GGUF_LAYOUTS[fmt]
    last = (shape[-1] // layout.block_size * layout.block_bytes if to_bytes
            else shape[-1] // layout.block_bytes * layout.block_size)
    return (*shape[:-1], last)


def _fp16_bytes(v: torch.Tensor) -> torch.Tensor:
    """fp32 ``[n]`` -> its fp16 (round to nearest even) as 2 little-endian bytes ``[n, 2]``."""
    return v.to(torch.float16).reshape(-1, 1).contiguous().view(torch.uint8)


def _fp16_value(two_bytes: torch.Tensor) -> torch.Tensor:
    """2 bytes ``[n, 2]`` -> the fp16 they hold, as float32 ``[n, 1]``."""
    return two_bytes.contiguous().view(torch.float16).float()


def _round_half_away(v: torch.Tensor) -> torch.Tensor:
    """C's ``roundf``: halves go away from zero (``torch.round`` sends them to the even neighbour)."""
    a = v.abs()
    whole = torch.floor(a)
    return torch.sign(v) * (whole + torch.floor(2 * (a - whole)))


def _nearest_int(v: torch.Tensor) -> torch.Tensor:
    """Round float32 to the nearest integer, halves to even, as llama.cpp's ``nearest_int``: adding
    ``1.5 * 2**23`` leaves no fraction bits, so the float addition itself rounds (exact for ``|v| < 2**22``;
    beyond, every caller clamps to a few bits anyway). Several times faster than ``torch.round`` on the CPU."""
    magic = 12582912.0
    return (v + magic) - magic


def _reciprocal_or_zero(d: torch.Tensor) -> torch.Tensor:
    """``1 / d`` where ``d != 0``, else 0 (an all-zero block gets codes from 0, not NaN)."""
    return torch.where(d == 0, torch.zeros_like(d), 1.0 / torch.where(d == 0, torch.ones_like(d), d))


def _pack_nibbles(low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
    """Two code tensors in ``0 .. 15`` -> one byte each: ``low | high << 4``."""
    return (low.to(torch.int32) | (high.to(torch.int32) << 4)).to(torch.uint8)


def _nibbles(packed: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Bytes -> (low nibble, high nibble), as int32."""
    p = packed.to(torch.int32)
    return p & 0xF, p >> 4


def _sums(t: torch.Tensor) -> torch.Tensor:
    """Sums over the first axis of ``t [k, r]`` (the ``k`` values of ``r`` sub-blocks) in float32, one element at
    a time from first to last, as llama.cpp's C loops add them (``t.sum(dim=0)`` adds in another order, and a
    near-tie between two candidate scales can then go the other way)."""
    acc = t[0].clone()
    for row in t[1:]:
        acc += row
    return acc


# ----------------------------------------------------------------------------------------------
# Q8_0 and Q4_0: 32 weights, one fp16 scale


def q8_0_quantize(x: torch.Tensor) -> torch.Tensor:
    """Quantize to Q8_0: per block of 32, ``d = absmax / 127`` (fp16) and ``round(x / d)`` in int8.

    Args:
        x: float tensor ``[..., n]``, ``n`` a multiple of 32.

    Returns:
        uint8 ``[..., n / 32 * 34]``: per block, ``d`` as 2 fp16 bytes then 32 int8 codes.
    """
    b = _blocks(x, "Q8_0")
    d = b.abs().amax(dim=1, keepdim=True) / 127
    q = _round_half_away(b * _reciprocal_or_zero(d)).to(torch.int8).view(torch.uint8)
    out = torch.cat([_fp16_bytes(d), q], dim=1)
    return out.reshape(_out_shape(x.shape, "Q8_0", to_bytes=True))


def q8_0_dequantize(blocks: torch.Tensor) -> torch.Tensor:
    """Decode Q8_0 bytes: ``d * q``.

    Args:
        blocks: uint8 ``[..., m]`` from ``q8_0_quantize`` (``m`` a multiple of 34).

    Returns:
        float32 ``[..., m / 34 * 32]``.
    """
    b = _byte_blocks(blocks, "Q8_0")
    q = b[:, 2:].contiguous().view(torch.int8).float()
    return (q * _fp16_value(b[:, :2])).reshape(_out_shape(blocks.shape, "Q8_0", to_bytes=False))


def q4_0_quantize(x: torch.Tensor) -> torch.Tensor:
    """Quantize to Q4_0: per block of 32, ``d = (value of largest magnitude) / -8``, codes ``0 .. 15``.

    Args:
        x: float tensor ``[..., n]``, ``n`` a multiple of 32.

    Returns:
        uint8 ``[..., n / 32 * 18]``: per block, ``d`` as 2 fp16 bytes then 16 bytes whose low nibbles hold
        the codes of weights 0..15 and high nibbles those of weights 16..31 (``x ~ d * (code - 8)``).
    """
    b = _blocks(x, "Q4_0")
    extreme = b.gather(1, b.abs().argmax(dim=1, keepdim=True))  # signed; the first one on a tie
    d = extreme / -8
    q = torch.trunc(b * _reciprocal_or_zero(d) + 8.5).clamp(0, 15)
    out = torch.cat([_fp16_bytes(d), _pack_nibbles(q[:, :16], q[:, 16:])], dim=1)
    return out.reshape(_out_shape(x.shape, "Q4_0", to_bytes=True))


def q4_0_dequantize(blocks: torch.Tensor) -> torch.Tensor:
    """Decode Q4_0 bytes: ``d * (code - 8)``.

    Args:
        blocks: uint8 ``[..., m]`` from ``q4_0_quantize`` (``m`` a multiple of 18).

    Returns:
        float32 ``[..., m / 18 * 32]``.
    """
    b = _byte_blocks(blocks, "Q4_0")
    low, high = _nibbles(b[:, 2:])
    q = torch.cat([low, high], dim=1).float() - 8
    return (_fp16_value(b[:, :2]) * q).reshape(_out_shape(blocks.shape, "Q4_0", to_bytes=False))


# ----------------------------------------------------------------------------------------------
# Q4_K: 256 weights = 8 sub-blocks of 32, each x = d * sc_j * q - dmin * m_j


def _pack_q4_k_scales(sc: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """8 six-bit scales and 8 six-bit mins per super-block ``[n, 8]`` -> the 12 packed bytes ``[n, 12]``.

    Bytes 0-3: scales 0-3 in the low 6 bits, the top 2 bits of scales 4-7 above them; bytes 4-7: the same
    with the mins; bytes 8-11: the low 4 bits of scale ``4 + i`` and, above, of min ``4 + i``.
    """
    sc, m = sc.to(torch.int32), m.to(torch.int32)
    first = sc[:, :4] | ((sc[:, 4:] >> 4) << 6)
    second = m[:, :4] | ((m[:, 4:] >> 4) << 6)
    third = (sc[:, 4:] & 0xF) | ((m[:, 4:] & 0xF) << 4)
    return torch.cat([first, second, third], dim=1).to(torch.uint8)


def _unpack_q4_k_scales(packed: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The 12 packed bytes ``[n, 12]`` -> (scales, mins), int32 ``[n, 8]`` each, in ``0 .. 63``."""
    p = packed.to(torch.int32)
    first, second, third = p[:, :4], p[:, 4:8], p[:, 8:]
    sc = torch.cat([first & 63, (third & 0xF) | ((first >> 6) << 4)], dim=1)
    m = torch.cat([second & 63, (third >> 4) | ((second >> 6) << 4)], dim=1)
    return sc, m


def q4_k_dequantize(blocks: torch.Tensor) -> torch.Tensor:
    """Decode Q4_K super-blocks: weight ``i`` of sub-block ``j`` is ``(d * sc_j) * q_i - (dmin * m_j)``.

    Args:
        blocks: uint8 ``[..., m]`` (``m`` a multiple of 144): per super-block, ``d`` and ``dmin`` (fp16),
            12 bytes of packed 6-bit scales and mins, 128 bytes of codes (byte ``32 c + l`` holds weight
            ``64 c + l`` in its low nibble and ``64 c + 32 + l`` in its high nibble).

    Returns:
        float32 ``[..., m / 144 * 256]``.
    """
    b = _byte_blocks(blocks, "Q4_K")
    n = b.shape[0]
    d, dmin = _fp16_value(b[:, 0:2]), _fp16_value(b[:, 2:4])
    sc, m = _unpack_q4_k_scales(b[:, 4:16])
    low, high = _nibbles(b[:, 16:].reshape(n, 4, 32))
    q = torch.stack([low, high], dim=2).reshape(n, 8, 32).float()
    scale = (d * sc.float()).unsqueeze(-1)
    offset = (dmin * m.float()).unsqueeze(-1)
    return (scale * q - offset).reshape(_out_shape(blocks.shape, "Q4_K", to_bytes=False))


def _fit_scale_min(x: torch.Tensor, w: torch.Tensor, nmax: int, rmin: float, rdelta: float,
                   nstep: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Weighted search of an asymmetric grid for each column of ``x [k, r]`` (``r`` sub-blocks of ``k`` values,
    weights ``w``): ``x ~ scale * L + min``, ``L`` in ``0 .. nmax``, ``min <= 0``. Returns (scale ``[r]``,
    ``-min`` ``[r]``, codes ``[k, r]``)."""
    f32 = torch.float32
    lo = x.amin(dim=0).clamp(max=0)
    hi = x.amax(dim=0)
    flat = hi == lo                                     # all zero, or constant and negative: no grid to fit
    sum_w = _sums(w)
    sum_x = _sums(w * x)

    def codes(stretch: torch.Tensor, offset: torch.Tensor) -> torch.Tensor:
        span = hi - offset
        span = torch.where(span > 0, span, torch.ones_like(span))
        return _nearest_int((stretch / span) * (x - offset)).clamp_(0, nmax)

    def error(scale: torch.Tensor, offset: torch.Tensor, L: torch.Tensor) -> torch.Tensor:
        diff = scale * L + offset - x
        return _sums(w * diff.square_())

    span = torch.where(flat, torch.ones_like(hi), hi - lo)
    scale = 1 / (nmax / span)
    best_min = lo.clone()
    L = codes(torch.tensor(nmax, dtype=f32), lo)
    best_err = error(scale, lo, L)
    for step in range(nstep + 1):
        # as in llama.cpp, each stretched grid starts from the best offset found so far, not from min(x, 0)
        stretch = (torch.tensor(rmin, dtype=f32) + torch.tensor(rdelta, dtype=f32) * step) + nmax
        trial = codes(stretch, best_min)
        wl = w * trial
        sum_l = _sums(wl)
        sum_l2 = _sums(wl * trial)
        sum_xl = _sums(wl * x)
        det = sum_w * sum_l2 - sum_l * sum_l
        ok = det > 0
        det_safe = torch.where(ok, det, torch.ones_like(det))
        this_scale = (sum_w * sum_xl - sum_x * sum_l) / det_safe
        this_min = (sum_l2 * sum_x - sum_l * sum_xl) / det_safe
        positive = this_min > 0                         # an offset above 0 is not allowed: refit without it
        l2_safe = torch.where(sum_l2 > 0, sum_l2, torch.ones_like(sum_l2))
        this_scale = torch.where(positive, sum_xl / l2_safe, this_scale)
        this_min = torch.where(positive, torch.zeros_like(this_min), this_min)
        err = error(this_scale, this_min, trial)
        better = ok & (err < best_err)
        L = torch.where(better, trial, L)
        best_err = torch.where(better, err, best_err)
        scale = torch.where(better, this_scale, scale)
        best_min = torch.where(better, this_min, best_min)
    scale = torch.where(flat, torch.zeros_like(scale), scale)
    best_min = torch.where(flat, lo, best_min)
    L = torch.where(flat, torch.zeros_like(L), L)
    return scale, -best_min, L


def _six_bit(values: torch.Tensor, top: torch.Tensor) -> torch.Tensor:
    """Per super-block, ``round(63 * values / top)`` capped at 63 (0 where ``top`` is 0)."""
    inv = torch.where(top > 0, 63 / torch.where(top > 0, top, torch.ones_like(top)), torch.zeros_like(top))
    level = _nearest_int(inv[:, None] * values)
    # llama.cpp stores the rounded value in a uint8 before capping it: a negative one wraps, then caps at 63
    return torch.where(level < 0, torch.full_like(level, 63), level.clamp(max=63))


def q4_k_quantize(x: torch.Tensor) -> torch.Tensor:
    """Quantize to Q4_K with the search of llama.cpp's reference quantizer (the module docstring says it
    in words): per sub-block of 32 a weighted least-squares scale and offset, then both quantized to 6 bits
    against the super-block's largest, then the codes rounded again with the stored scales.

    Args:
        x: float tensor ``[..., n]``, ``n`` a multiple of 256.

    Returns:
        uint8 ``[..., n / 256 * 144]`` in the layout ``q4_k_dequantize`` (and ``gguf.quants``) decodes.
    """
    b = _blocks(x, "Q4_K")
    n = b.shape[0]
    sub = b.reshape(n * 8, 32)
    columns = sub.t().contiguous()                      # [32, sub-blocks]: the sums below run down the values
    # C's sqrtf is correctly rounded; torch's vectorized float32 sqrt may be 1 ulp off: take it in float64
    rms = _sums(columns * columns).div(32).double().sqrt().float()
    fits = [_fit_scale_min(c, r + c.abs(), nmax=15, rmin=-1.0, rdelta=0.1, nstep=20)
            for c, r in zip(columns.split(_CHUNK // 32, dim=1), rms.split(_CHUNK // 32))]
    scales, mins, L = (torch.cat([f[i] for f in fits], dim=-1) for i in range(3))
    out = _q4_k_bytes(sub.reshape(n, 8, 32), scales.reshape(n, 8), mins.reshape(n, 8), L.t().reshape(n, 8, 32))
    return out.reshape(_out_shape(x.shape, "Q4_K", to_bytes=True))


def _q4_k_bytes(sub: torch.Tensor, scales: torch.Tensor, mins: torch.Tensor, L: torch.Tensor) -> torch.Tensor:
    """The bytes ``[n, 144]`` of super-blocks ``sub [n, 8, 32]`` from each sub-block's fit ``x ~ scale * L - min``
    (``scales``, ``mins`` ``[n, 8]``, codes ``L [n, 8, 32]``): the scales and mins in 6 bits against their
    largest, then the codes rounded again with the scales as stored."""
    n = sub.shape[0]
    # the largest scale and min, or +0 (C starts from 0 and keeps it unless a value is larger: never -0)
    max_scale, max_min = (torch.where(v > 0, v, torch.zeros_like(v)) for v in (scales.amax(dim=1), mins.amax(dim=1)))
    sc, m = _six_bit(scales, max_scale), _six_bit(mins, max_min)
    d16, dmin16 = _fp16_bytes(max_scale / 63), _fp16_bytes(max_min / 63)
    # the codes again, with the scales as stored; a sub-block whose stored scale is 0 keeps the search's codes
    step = _fp16_value(d16) * sc
    offset = _fp16_value(dmin16) * m
    live = step != 0
    again = _nearest_int((sub + offset[..., None]) / torch.where(live, step, torch.ones_like(step))[..., None])
    again = again.clamp(0, 15)
    L = torch.where(live[..., None], again, L).reshape(n, 4, 2, 32)
    qs = _pack_nibbles(L[:, :, 0], L[:, :, 1]).reshape(n, 128)
    return torch.cat([d16, dmin16, _pack_q4_k_scales(sc, m), qs], dim=1)


# ----------------------------------------------------------------------------------------------
# Q6_K: 256 weights = 16 sub-blocks of 16, x = d * scale_j * (q - 32)


def _fit_symmetric(x: torch.Tensor, nmax: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Search of a symmetric grid for each column of ``x [k, r]`` (``r`` sub-blocks of ``k`` values):
    ``x ~ scale * l``, ``l`` in ``-nmax .. nmax-1``, weights ``x**2``. Returns (scale ``[r]``, codes
    ``l + nmax`` ``[k, r]``)."""
    f32 = torch.float32
    extreme = x.gather(0, x.abs().argmax(dim=0, keepdim=True)).squeeze(0)  # signed, the first on a tie
    zero = extreme.abs() < _GROUP_MAX_EPS
    extreme = torch.where(zero, torch.ones_like(extreme), extreme)
    w = x * x

    def fit(iscale: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        ll = _nearest_int(iscale * x).clamp(-nmax, nmax - 1)
        return ll, _sums(w * x * ll), _sums(w * ll * ll)

    L, sum_lx, sum_l2 = fit(-nmax / extreme)
    scale = torch.where(sum_l2 != 0, sum_lx / torch.where(sum_l2 != 0, sum_l2, torch.ones_like(sum_l2)),
                        torch.zeros_like(sum_lx))
    best = scale * sum_lx
    for k in range(-9, 10):
        if k == 0:
            continue
        trial, t_lx, t_l2 = fit(-(nmax + torch.tensor(0.1, dtype=f32) * k) / extreme)
        better = (t_l2 > 0) & (t_lx * t_lx > best * t_l2)
        L = torch.where(better, trial, L)
        scale = torch.where(better, t_lx / torch.where(t_l2 > 0, t_l2, torch.ones_like(t_l2)), scale)
        best = torch.where(better, scale * t_lx, best)
    scale = torch.where(zero, torch.zeros_like(scale), scale)
    L = torch.where(zero, torch.full_like(L, -nmax), L)
    return scale, L + nmax


def q6_k_quantize(x: torch.Tensor) -> torch.Tensor:
    """Quantize to Q6_K with the search of llama.cpp's reference quantizer (module docstring): per
    sub-block of 16 the best of 19 symmetric grids, the 16 scales in int8 against the largest, the codes
    rounded again with the stored scales.

    Args:
        x: float tensor ``[..., n]``, ``n`` a multiple of 256.

    Returns:
        uint8 ``[..., n / 256 * 210]``: per super-block, 128 bytes of low 4 bits, 64 bytes of high 2 bits,
        16 int8 scales and ``d`` (fp16), the layout ``q6_k_dequantize`` (and ``gguf.quants``) decodes.
    """
    b = _blocks(x, "Q6_K")
    n = b.shape[0]
    sub = b.reshape(n * 16, 16)
    fits = [_fit_symmetric(c, 32) for c in sub.t().contiguous().split(_CHUNK // 16, dim=1)]  # sums run down the values
    scales, L = (torch.cat([f[i] for f in fits], dim=-1) for i in range(2))
    scales, L = scales.reshape(n, 16), L.t().reshape(n, 16, 16)
    top = scales.gather(1, scales.abs().argmax(dim=1, keepdim=True)).squeeze(1)  # signed, first on a tie
    empty = top.abs() < _GROUP_MAX_EPS
    iscale = -128 / torch.where(empty, torch.ones_like(top), top)
    d16 = _fp16_bytes(torch.where(empty, torch.zeros_like(top), 1 / iscale))
    sc = _nearest_int(iscale[:, None] * scales).clamp(max=127)
    sc = torch.where(empty[:, None], torch.zeros_like(sc), sc)
    step = _fp16_value(d16) * sc
    live = step != 0
    again = _nearest_int(sub.reshape(n, 16, 16) / torch.where(live, step, torch.ones_like(step))[..., None])
    L = torch.where(live[..., None], again.clamp(-32, 31) + 32, L)
    L = torch.where(empty[:, None, None], torch.zeros_like(L), L).to(torch.int32).reshape(n, 2, 4, 32)
    low = _pack_nibbles(torch.cat([L[:, :, 0], L[:, :, 1]], dim=2) & 0xF,
                        torch.cat([L[:, :, 2], L[:, :, 3]], dim=2) & 0xF).reshape(n, 128)
    high = L >> 4
    qh = (high[:, :, 0] | (high[:, :, 1] << 2) | (high[:, :, 2] << 4) | (high[:, :, 3] << 6))
    out = torch.cat([low, qh.to(torch.uint8).reshape(n, 64), sc.to(torch.int8).view(torch.uint8), d16], dim=1)
    return out.reshape(_out_shape(x.shape, "Q6_K", to_bytes=True))


def q6_k_dequantize(blocks: torch.Tensor) -> torch.Tensor:
    """Decode Q6_K super-blocks: weight ``i`` of sub-block ``j`` is ``(d * scale_j) * (q_i - 32)``.

    Args:
        blocks: uint8 ``[..., m]`` (``m`` a multiple of 210) from ``q6_k_quantize``: per super-block, two
            halves of 128 weights; in half ``h``, byte ``64 h + l`` of ``ql`` holds the low 4 bits of weight
            ``l`` (low nibble) and ``64 + l`` (high nibble), byte ``32 h + l`` of ``qh`` the high 2 bits of
            weights ``l``, ``32 + l``, ``64 + l``, ``96 + l``; then 16 int8 scales and ``d`` (fp16).

    Returns:
        float32 ``[..., m / 210 * 256]``.
    """
    b = _byte_blocks(blocks, "Q6_K")
    n = b.shape[0]
    low, high = _nibbles(b[:, :128].reshape(n, 2, 64))
    low4 = torch.cat([low, high], dim=2).reshape(n, 2, 4, 32)
    qh = b[:, 128:192].to(torch.int32).reshape(n, 2, 1, 32)
    high2 = (qh >> torch.tensor([0, 2, 4, 6], device=b.device).reshape(1, 1, 4, 1)) & 3
    q = ((low4 | (high2 << 4)) - 32).reshape(n, 16, 16).float()
    sc = b[:, 192:208].contiguous().view(torch.int8).float()
    step = (_fp16_value(b[:, 208:210]) * sc).unsqueeze(-1)
    return (step * q).reshape(_out_shape(blocks.shape, "Q6_K", to_bytes=False))


# ----------------------------------------------------------------------------------------------
# the formats by name, and whole models in GGUF files

_CODECS = {
    "Q8_0": (q8_0_quantize, q8_0_dequantize),
    "Q4_0": (q4_0_quantize, q4_0_dequantize),
    "Q4_K": (q4_k_quantize, q4_k_dequantize),
    "Q6_K": (q6_k_quantize, q6_k_dequantize),
}
_FLOAT_TYPES = {"F32": torch.float32, "F16": torch.float16}
#: The storage types ``export_gguf`` writes: two float types and the block formats this module quantizes.
TENSOR_TYPES: tuple[str, ...] = (*_FLOAT_TYPES, *_CODECS)
_INT_DTYPES = (torch.int8, torch.int16, torch.int32, torch.int64)
_METADATA_TYPES = (str, bool, int, float)


def _check_codec(fmt) -> None:
    if not isinstance(fmt, str):
        raise TypeError(f"fmt must be a str, got {type(fmt).__name__}")
    if fmt not in _CODECS:
        raise ValueError(f"fmt must be one of the formats course_lib quantizes {sorted(_CODECS)}, got {fmt!r}")


def quantize_blocks(x: torch.Tensor, fmt: str) -> torch.Tensor:
    """The bytes of ``x`` in the block format ``fmt``: ``q8_0_quantize``, ``q4_0_quantize``, ``q4_k_quantize`` or
    ``q6_k_quantize``, chosen by name (as ``gguf.quants.quantize(data, qtype)`` chooses).

    Args:
        x: float tensor ``[..., n]``, ``n`` a multiple of the format's block size.
        fmt: ``"Q8_0"``, ``"Q4_0"``, ``"Q4_K"`` or ``"Q6_K"``.

    Returns:
        uint8 ``[..., n / block_size * block_bytes]``.
    """
    _check_codec(fmt)
    return _CODECS[fmt][0](x)


def dequantize_blocks(blocks: torch.Tensor, fmt: str) -> torch.Tensor:
    """Decode the bytes of the block format ``fmt`` (the inverse direction of ``quantize_blocks``).

    Args:
        blocks: uint8 ``[..., m]``, ``m`` a multiple of the format's block bytes.
        fmt: ``"Q8_0"``, ``"Q4_0"``, ``"Q4_K"`` or ``"Q6_K"``.

    Returns:
        float32 ``[..., m / block_bytes * block_size]``.
    """
    _check_codec(fmt)
    return _CODECS[fmt][1](blocks)


@dataclass(frozen=True, eq=False)
class GGUFTensors:
    """Tensors as a GGUF file stores them, with the file's key-value metadata: what ``export_gguf`` wrote, or
    what ``read_gguf`` read.

    Attributes:
        types: tensor name -> its storage type in the file (``"F32"``, ``"F16"``, ``"Q4_K"``, ... as
            ``gguf.GGMLQuantizationType`` names it), in the file's order.
        data: tensor name -> the stored data, on the CPU: for a block format the uint8 bytes
            ``[..., n / block_size * block_bytes]`` (rows as in the model, the bytes of each row's blocks); for a
            float or integer type the values in that dtype, with the model's shape.
        metadata: key -> value of the file's key-value pairs (``"general.architecture": "llama"``, ...).
    """

    types: dict[str, str]
    data: dict[str, torch.Tensor]
    metadata: dict[str, object]

    def values(self) -> dict[str, torch.Tensor]:
        """Every tensor as a model uses it: block formats decoded by ``gguf.quants.dequantize`` (llama.cpp's
        own decoder, not this module's), float types as float32, integer types as stored.

        Returns:
            tensor name -> tensor with the model's shape.
        """
        import numpy as np
        from gguf import GGMLQuantizationType, quants

        out = {}
        for name, kind in self.types.items():
            stored = self.data[name]
            if kind in _FLOAT_TYPES or stored.dtype != torch.uint8:
                out[name] = stored.to(torch.float32, copy=True) if stored.is_floating_point() else stored.clone()
            else:
                decoded = quants.dequantize(stored.numpy(), GGMLQuantizationType[kind])
                out[name] = torch.from_numpy(np.ascontiguousarray(decoded, dtype=np.float32))
        return out

    def same_as(self, other: GGUFTensors) -> bool:
        """Whether ``other`` holds the same tensors (names, order, types, every byte) and the same metadata.

        Args:
            other: another ``GGUFTensors`` (the same file read back, say).

        Returns:
            True when nothing differs.
        """
        if not isinstance(other, GGUFTensors):
            raise TypeError(f"other must be a GGUFTensors, got {type(other).__name__}")
        return (list(self.types.items()) == list(other.types.items()) and self.metadata == other.metadata
                and all(self.data[n].dtype == other.data[n].dtype and torch.equal(self.data[n], other.data[n])
                        for n in self.types))


def _check_path(path) -> None:
    import os

    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a str or os.PathLike, got {type(path).__name__}")


def _stored_tensors(model: torch.nn.Module) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """The model's state dict with each shared tensor once, under its first name (a tied embedding and output
    matrix are one tensor), and ``{other name: first name}`` for the names left out."""
    kept: dict[str, torch.Tensor] = {}
    aliases: dict[str, str] = {}
    seen: dict[tuple, str] = {}
    for name, t in model.state_dict().items():
        key = (t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape), tuple(t.stride()), t.dtype)
        if t.numel() > 0 and key in seen:
            aliases[name] = seen[key]
            continue
        seen[key] = name
        kept[name] = t.detach()
    return kept, aliases


def export_gguf(model: torch.nn.Module, path, tensor_types: Mapping[str, str], *, name: str | None = None,
                metadata: Mapping[str, object] | None = None) -> GGUFTensors:
    """Write the tensors of ``model.state_dict()`` to a GGUF file with the ``gguf`` package's ``GGUFWriter``.

    Each tensor is stored in the type ``tensor_types`` names for it: ``"F32"`` (the default for float tensors),
    ``"F16"``, or a block format of ``TENSOR_TYPES`` (``"Q8_0"``, ``"Q4_0"``, ``"Q4_K"``, ``"Q6_K"``), whose
    bytes come from this module's quantizers, row by row. Integer tensors are stored as they are. A tensor
    shared under several names (a tied embedding and output matrix) is written once, under its first name.
    The keys ``general.architecture`` (``model.config.model_type`` when the model has one, else its class
    name in lower case), ``general.name`` and ``general.quantization_version`` are written, then
    ``metadata``.

    The tensors keep PyTorch's names and layout: the file round-trips through ``read_gguf`` and ``gguf``'s
    reader, but llama.cpp itself runs only files made by its converter (``convert_hf_to_gguf.py``), which
    renames every tensor (``model.layers.0.self_attn.q_proj.weight`` -> ``blk.0.attn_q.weight``), reorders
    the rows of the query and key matrices for its rotary embedding, and adds the hyperparameters and the
    tokenizer.

    Args:
        model: the model whose ``state_dict()`` is written.
        path: the file to write (overwritten if it exists).
        tensor_types: tensor name (as in ``state_dict()``) -> storage type; unnamed float tensors are F32.
            A block format needs a float tensor whose last dimension is a multiple of its block size.
        name: ``general.name``; default the model's class name.
        metadata: more key-value pairs (``str``, ``bool``, ``int`` (written as int64) or ``float`` (float64)).

    Returns:
        What was written (``GGUFTensors``): ``read_gguf(path)`` gives the same (``same_as``).
    """
    import numpy as np
    from gguf import GGML_QUANT_VERSION, GGMLQuantizationType, GGUFValueType, GGUFWriter

    check_module(model)
    _check_path(path)
    if not isinstance(tensor_types, Mapping):
        raise TypeError(f"tensor_types must be a mapping of tensor name -> type, got {type(tensor_types).__name__}")
    if name is not None and not isinstance(name, str):
        raise TypeError(f"name must be a str or None, got {type(name).__name__}")
    metadata = dict(metadata or {})
    for key, value in metadata.items():
        if not isinstance(key, str) or not key:
            raise TypeError(f"metadata keys must be non-empty str, got {key!r}")
        if not isinstance(value, _METADATA_TYPES):
            raise TypeError(f"metadata[{key!r}] must be a str, bool, int or float, got {type(value).__name__}")
        if key in ("general.architecture", "general.name", "general.quantization_version"):
            raise ValueError(f"metadata must not set {key!r}: export_gguf writes it (name= sets general.name)")

    tensors, aliases = _stored_tensors(model)
    for key, kind in tensor_types.items():
        if key not in tensors:
            if key in aliases:
                raise ValueError(f"tensor_types names {key!r}, which shares its data with {aliases[key]!r}: the file "
                                 f"stores that tensor once, under {aliases[key]!r}; give its type there")
            raise ValueError(f"tensor_types names {key!r}, which is not a tensor of the model's state_dict()")
        if kind not in TENSOR_TYPES:
            raise ValueError(f"tensor_types[{key!r}] must be one of {list(TENSOR_TYPES)}, got {kind!r}")
        t = tensors[key]
        if not t.is_floating_point():
            raise ValueError(f"tensor_types[{key!r}] = {kind!r} needs a float tensor; {key!r} has dtype "
                             f"{str(t.dtype).replace('torch.', '')} (integer tensors are stored as they are)")
        if kind in _CODECS:
            size = GGUF_LAYOUTS[kind].block_size
            if t.dim() == 0 or t.shape[-1] % size != 0:
                raise ValueError(f"tensor_types[{key!r}] = {kind!r} needs a last dimension that is a multiple of "
                                 f"the {kind} block size {size}; {key!r} has shape {tuple(t.shape)}")
    for key, t in tensors.items():
        if key not in tensor_types and not (t.is_floating_point() or t.dtype in _INT_DTYPES):
            raise TypeError(f"model's tensor {key!r} has dtype {str(t.dtype).replace('torch.', '')}; GGUF stores "
                            f"float and int8/16/32/64 tensors")
        if t.dim() == 0:
            raise ValueError(f"model's tensor {key!r} is a 0-d tensor; GGUF tensors have at least one dimension")

    config = getattr(model, "config", None)
    architecture = getattr(config, "model_type", None) or type(model).__name__.lower()
    written_types: dict[str, str] = {}
    written: dict[str, torch.Tensor] = {}
    for key, t in tensors.items():
        kind = tensor_types.get(key, "F32" if t.is_floating_point() else None)
        if kind in _CODECS:
            data = quantize_blocks(t, kind).cpu()
        elif kind in _FLOAT_TYPES:
            data = t.to(_FLOAT_TYPES[kind]).cpu().contiguous()
        else:
            data = t.cpu().contiguous()
            kind = {torch.int8: "I8", torch.int16: "I16", torch.int32: "I32", torch.int64: "I64"}[t.dtype]
        written_types[key], written[key] = kind, data
    kv = {"general.architecture": architecture, "general.name": name or type(model).__name__,
          "general.quantization_version": GGML_QUANT_VERSION, **metadata}

    writer = GGUFWriter(path, architecture)  # writes general.architecture
    try:
        writer.add_name(kv["general.name"])
        writer.add_quantization_version(GGML_QUANT_VERSION)
        for key, value in metadata.items():
            vtype = (GGUFValueType.STRING if isinstance(value, str) else GGUFValueType.BOOL if isinstance(value, bool)
                     else GGUFValueType.INT64 if isinstance(value, int) else GGUFValueType.FLOAT64)
            writer.add_key_value(key, value, vtype)
        for key, data in written.items():
            kind = written_types[key]
            raw = GGMLQuantizationType[kind] if kind in _CODECS else None
            writer.add_tensor(key, np.ascontiguousarray(data.numpy()), raw_dtype=raw)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
    finally:
        writer.close()
    return GGUFTensors(written_types, written, kv)


def read_gguf(path) -> GGUFTensors:
    """Read a GGUF file with the ``gguf`` package's ``GGUFReader``: every tensor as stored, and the metadata.

    Args:
        path: a GGUF file (written by ``export_gguf``, or any other: ``values()`` decodes every type that
            ``gguf.quants`` decodes).

    Returns:
        ``GGUFTensors`` with the data copied out of the file (the file is closed afterwards).
    """
    import os

    import numpy as np
    from gguf import GGUFReader

    _check_path(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"path {os.fspath(path)!r} is not a file")
    try:
        reader = GGUFReader(path)
    except (ValueError, IndexError, OSError, KeyError) as exc:
        raise ValueError(f"path {os.fspath(path)!r} is not a GGUF file that gguf can read: {exc}") from None
    types = {t.name: t.tensor_type.name for t in reader.tensors}
    data = {t.name: torch.from_numpy(np.array(t.data)) for t in reader.tensors}  # copies: no view of the mapped file
    metadata = {key: field.contents() for key, field in reader.fields.items() if not key.startswith("GGUF.")}
    return GGUFTensors(types, data, metadata)  # the reader, its memory map and the file go with this frame
