"""The public kernel functions of notebook 13, and the ``course_lib::`` custom ops behind them.

Each function checks its arguments (shapes, dtypes, devices: host-side only, no device-to-host copy, so that
it runs inside CUDA graphs and ``torch.compile(fullgraph=True)``), picks the backend, and calls either the
PyTorch reference or the custom op ``torch.ops.course_lib.<name>``, whose CPU kernel comes from the C++
extension and whose CUDA kernel comes from the CUDA extension (``build.py`` builds and loads them). The ops'
fake implementations here give output shapes to ``torch.compile``.

NaN and Inf: the reference path (``backend="torch"``) rejects them with a clear error, as every course_lib
function does; the compiled kernels do not scan for them (a scan is a device-to-host synchronization on every
call) and, like ``torch.matmul``, carry them into the output.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from ..validation import FLOAT_DTYPES, check_int, check_tensor
from .build import _pick

__all__ = [
    "quantize_rows_int8",
    "dequantize_rows_int8",
    "dequantize_nf4",
    "nf4_byte_table",
    "pack_int4",
    "dequantize_int4",
    "gemv_nf4",
    "gemv_int4",
    "gemv_ternary",
    "gemv_bytes",
]

# ----------------------------------------------------------------------------------------------
# the custom ops: schemas (the extensions register CPU and CUDA kernels for them) and fake kernels

OP_SCHEMAS = {
    "quantize_rows_int8": "(Tensor x) -> (Tensor, Tensor)",
    "dequantize_nf4": "(Tensor packed, Tensor absmax, int n, int blocksize, ScalarType dtype) -> Tensor",
    "dequantize_int4": "(Tensor packed, Tensor scale, Tensor zero, int group_size, ScalarType dtype) -> Tensor",
    "gemv_nf4": "(Tensor x, Tensor packed, Tensor absmax, int out_features, int blocksize, int version) -> Tensor",
    "gemv_int4": "(Tensor x, Tensor packed, Tensor scale, Tensor zero, int group_size, int version) -> Tensor",
    "gemv_ternary": "(Tensor x, Tensor packed, float scale) -> Tensor",
}
_LIB = torch.library.Library("course_lib", "FRAGMENT")


def _fake_quantize_rows_int8(x):
    return x.new_empty(x.shape, dtype=torch.int8), x.new_empty(x.shape[0], dtype=torch.float32)


def _fake_dequantize_nf4(packed, absmax, n, blocksize, dtype):
    return packed.new_empty(n, dtype=dtype)


def _fake_dequantize_int4(packed, scale, zero, group_size, dtype):
    return packed.new_empty((packed.shape[0], packed.shape[1] * 2), dtype=dtype)


def _fake_gemv_nf4(x, packed, absmax, out_features, blocksize, version):
    return x.new_empty((x.shape[0], out_features))


def _fake_gemv_int4(x, packed, scale, zero, group_size, version):
    return x.new_empty((x.shape[0], packed.shape[0]))


def _fake_gemv_ternary(x, packed, scale):
    return x.new_empty((x.shape[0], packed.shape[0]))


def _defined(name: str) -> bool:
    try:
        torch._C._dispatch_find_schema_or_throw(f"course_lib::{name}", "")
        return True
    except RuntimeError:
        return False


def _define_ops() -> None:
    """Define each op once per process. Reloading this module (the grading guard reloads a tampered module)
    frees the previous ``_LIB``, which takes its definitions with it: they are then defined again here."""
    for name, schema in OP_SCHEMAS.items():
        if _defined(name):
            continue
        _LIB.define(name + schema)
        torch.library.register_fake(f"course_lib::{name}", globals()[f"_fake_{name}"], lib=_LIB)


_define_ops()


# ----------------------------------------------------------------------------------------------
# argument checks (host-side: no device-to-host copy on the compiled paths)


def _check_x(x: torch.Tensor, name: str = "x", dtypes=FLOAT_DTYPES) -> None:
    check_tensor(x, name, dtypes=dtypes, ndim=2, allow_nonfinite=True)


def _check_finite(**tensors: torch.Tensor) -> None:
    """The reference path's NaN/Inf check (a device-to-host synchronization: never on a compiled path)."""
    for name, t in tensors.items():
        check_tensor(t, name)


def _check_same_device(**tensors: torch.Tensor) -> torch.device:
    devices = {name: t.device for name, t in tensors.items()}
    first = next(iter(devices.values()))
    for name, dev in devices.items():
        if dev != first:
            raise ValueError(f"{name} is on {dev} but {next(iter(devices))} is on {first}: move them to one device")
    return first


def _check_nf4(packed, absmax, n: int, blocksize: int) -> None:
    check_tensor(packed, "packed", dtypes=(torch.uint8,))
    check_tensor(absmax, "absmax", dtypes=(torch.float32,), ndim=1, allow_nonfinite=True)
    check_int(blocksize, "blocksize", low=2)
    if blocksize % 2:
        raise ValueError(f"blocksize must be even (two codes per byte), got {blocksize}")
    if packed.numel() != (n + 1) // 2:
        raise ValueError(f"packed must hold ceil(n / 2) = {(n + 1) // 2} bytes for {n} weights, got {packed.numel()}")
    blocks = -(-n // blocksize)
    if absmax.numel() != blocks:
        raise ValueError(f"absmax must hold ceil(n / blocksize) = {blocks} values, got {absmax.numel()}")


def _check_int4(packed, scale, zero, group_size: int) -> tuple[int, int]:
    check_tensor(packed, "packed", dtypes=(torch.uint8,), ndim=2)
    check_tensor(scale, "scale", dtypes=(torch.float32,), ndim=2, allow_nonfinite=True)
    check_tensor(zero, "zero", dtypes=(torch.uint8,), ndim=2)
    n, k = packed.shape[0], packed.shape[1] * 2
    check_int(group_size, "group_size", low=2)
    if k % group_size or group_size % 2:
        raise ValueError(f"group_size must be even and divide in_features = 2 * packed.shape[1] = {k}, got {group_size}")
    for name, t in (("scale", scale), ("zero", zero)):
        if tuple(t.shape) != (n, k // group_size):
            raise ValueError(f"{name} must have shape {(n, k // group_size)} (out_features, in_features // group_size), "
                             f"got {tuple(t.shape)}")
    return n, k


# ----------------------------------------------------------------------------------------------
# 1. row-wise absmax int8


def _quantize_rows_int8_torch(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    xf = x.to(torch.float32)
    absmax = xf.abs().amax(dim=1)
    # a true float32 division, as in the kernels (``127.0 / tensor`` would be ``reciprocal() * 127``)
    inv = torch.where(absmax > 0, torch.full_like(absmax, 127.0) / absmax.clamp(min=torch.finfo(torch.float32).tiny),
                      torch.zeros_like(absmax))
    return torch.round(xf * inv[:, None]).to(torch.int8), absmax


def quantize_rows_int8(x: torch.Tensor, backend: str = "auto") -> tuple[torch.Tensor, torch.Tensor]:
    """Per-row (per-token) absmax int8 quantization.

    Args:
        x: float tensor ``[M, K]`` (float32, float16 or bfloat16); the reference rejects NaN/Inf.
        backend: "auto", "torch", "cpp" or "cuda".

    Returns:
        (q, absmax): int8 ``[M, K]`` with ``q = round(x * 127 / absmax)`` (round half to even) and
        float32 ``[M]``; an all-zero row gets ``absmax = 0`` and codes 0 (no division by zero).
    """
    _check_x(x, dtypes=(torch.float32, torch.float16, torch.bfloat16))
    if _pick(backend, x.device) == "torch":
        _check_finite(x=x)
        return _quantize_rows_int8_torch(x)
    return torch.ops.course_lib.quantize_rows_int8(x.contiguous())


def dequantize_rows_int8(q: torch.Tensor, absmax: torch.Tensor) -> torch.Tensor:
    """``q * absmax / 127`` per row, float32 ``[M, K]`` (the inverse of ``quantize_rows_int8``)."""
    check_tensor(q, "q", dtypes=(torch.int8,), ndim=2)
    check_tensor(absmax, "absmax", dtypes=(torch.float32,), ndim=1)
    if absmax.shape[0] != q.shape[0]:
        raise ValueError(f"absmax must have one value per row of q ({q.shape[0]}), got {absmax.shape[0]}")
    _check_same_device(q=q, absmax=absmax)
    return q.to(torch.float32) * (absmax / 127.0)[:, None]


# ----------------------------------------------------------------------------------------------
# 2. 4-bit dequantization


def dequantize_nf4(packed: torch.Tensor, absmax: torch.Tensor, shape: Sequence[int], blocksize: int = 64,
                   dtype: torch.dtype = torch.float32, backend: str = "auto") -> torch.Tensor:
    """NF4 codes (bitsandbytes' layout) back to a ``dtype`` tensor of ``shape``.

    Args:
        packed: uint8 ``[ceil(n / 2)]`` from ``course_lib.nf4.quantize_nf4``.
        absmax: float32 ``[ceil(n / blocksize)]``.
        shape: the weight's shape (``n`` = its number of elements).
        blocksize: weights per absmax (even, >= 2; 64 in bitsandbytes and QLoRA).
        dtype: float32, float16 or bfloat16.
        backend: "auto", "torch", "cpp" or "cuda".
    """
    from ..nf4 import dequantize_nf4 as reference

    shape = tuple(int(s) for s in shape)
    n = 1
    for s in shape:
        n *= s
    check_int(n, "prod(shape)", low=1)
    _check_nf4(packed, absmax, n, blocksize)
    if dtype not in (torch.float32, torch.float16, torch.bfloat16):
        raise TypeError(f"dtype must be float32, float16 or bfloat16, got {dtype}")
    device = _check_same_device(packed=packed, absmax=absmax)
    if _pick(backend, device) == "torch":
        return reference(packed.reshape(-1), absmax, shape, blocksize).to(dtype)
    out = torch.ops.course_lib.dequantize_nf4(packed.reshape(-1).contiguous(), absmax.contiguous(), n, blocksize, dtype)
    return out.reshape(shape)


def nf4_byte_table(codebook: torch.Tensor) -> torch.Tensor:
    """The decode table of one packed NF4 byte (two codes), for kernels that decode a byte with one lookup.

    Args:
        codebook: the 16 code values, float (``course_lib.nf4.nf4_codebook()``).

    Returns:
        float32 ``[256, 2]`` on ``codebook``'s device: row ``v`` is ``(codebook[v >> 4], codebook[v & 15])``,
        the unscaled weights of the high (first) and low (second) nibble of a byte of value ``v``.
    """
    check_tensor(codebook, "codebook", ndim=1)
    if codebook.numel() != 16:
        raise ValueError(f"codebook must hold 16 values, got {codebook.numel()}")
    v = torch.arange(256, device=codebook.device)
    return torch.stack([codebook[v >> 4], codebook[v & 15]], dim=1).to(torch.float32)


def pack_int4(w: torch.Tensor, group_size: int = 128) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """RTN 4-bit quantization of a weight ``[N, K]`` with one scale and zero point per group, packed.

    Returns:
        (packed uint8 ``[N, K/2]`` high nibble first, scale float32 ``[N, K/G]``, zero uint8 ``[N, K/G]``),
        the codes of ``course_lib.granularity.quantize_weight(w, ..., bits=4, group_size)``.
    """
    from ..granularity import quantize_weight, weight_scale_zero_point
    from ..nf4 import pack_4bit

    check_tensor(w, "w", dtypes=FLOAT_DTYPES, ndim=2)
    if w.shape[1] % 2:
        raise ValueError(f"in_features (w.shape[1]) must be even to pack two codes per byte, got {w.shape[1]}")
    scale, zero = weight_scale_zero_point(w, 4, group_size)
    q = quantize_weight(w, scale, zero, 4, group_size)
    return pack_4bit(q).reshape(w.shape[0], w.shape[1] // 2), scale.contiguous(), zero.to(torch.uint8).contiguous()


def _dequantize_int4_torch(packed, scale, zero, group_size):
    from ..granularity import dequantize_weight
    from ..nf4 import unpack_4bit

    n, k = packed.shape[0], packed.shape[1] * 2
    q = unpack_4bit(packed.reshape(-1), n * k).reshape(n, k)
    return dequantize_weight(q, scale, zero.to(torch.int32), group_size)


def dequantize_int4(packed: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor, group_size: int,
                    dtype: torch.dtype = torch.float32, backend: str = "auto") -> torch.Tensor:
    """``(q - zero) * scale`` for packed int4 weights (``pack_int4``'s layout); returns ``[N, K]`` in ``dtype``."""
    _check_int4(packed, scale, zero, group_size)
    if dtype not in (torch.float32, torch.float16, torch.bfloat16):
        raise TypeError(f"dtype must be float32, float16 or bfloat16, got {dtype}")
    device = _check_same_device(packed=packed, scale=scale, zero=zero)
    if _pick(backend, device) == "torch":
        _check_finite(scale=scale)
        return _dequantize_int4_torch(packed, scale, zero, group_size).to(dtype)
    return torch.ops.course_lib.dequantize_int4(packed.contiguous(), scale.contiguous(), zero.contiguous(), group_size,
                                                dtype)


# ----------------------------------------------------------------------------------------------
# 3. fused W4A16 GEMV and 4. ternary GEMV


def gemv_nf4(x: torch.Tensor, packed: torch.Tensor, absmax: torch.Tensor, out_features: int, blocksize: int = 64,
             backend: str = "auto", version: int | None = None) -> torch.Tensor:
    """``x @ W.T`` with NF4 weights ``W [out_features, K]``, fp32 accumulation, for small batches.

    Args:
        x: activations ``[B, K]``: float16 or bfloat16 (CUDA kernel), any float dtype otherwise.
        packed, absmax: ``course_lib.nf4.quantize_nf4(W, blocksize)``.
        out_features: ``N``, the weight's number of rows.
        blocksize: weights per absmax.
        backend: "auto", "torch", "cpp" or "cuda". The CUDA kernels need ``K % 32 == 0`` and
            ``blocksize % 32 == 0`` (32 weights per lane share one absmax); other shapes use the
            reference under "auto".
        version: CUDA only, the kernel's development steps (benchmarks/kernels.py times each):
            1 naive (one thread per output), 2 one warp per row with 16-byte loads (batch 1),
            3 fused (several rows per warp share each activation load, batch up to 16 per launch),
            4 block (a block's threads split K for a few rows and meet in shared memory: enough
            loads in flight to fill the GPU, which v3's small grid could not), 5 as 4 with 8 rows
            per block, 6 persistent (one wave of blocks; each thread keeps its slice of the
            activations in registers and has the next rows' weights in flight while it computes;
            K <= 16384, larger K runs v4), 7 tensor cores (``mma.sync`` on weights decoded in
            registers, the absmax applied in fp32, any batch; needs K % 64 == 0 and blocksize % 64
            == 0 and sm_80+ code on an sm_80+ GPU; otherwise it runs v4), 8 byte-table decode for batch 1-4 (one PRMT and one
            shared-memory load decode a packed byte into a half2 pair of codes, multiplied with
            HFMA2 for fp16, widened to fp32 for bf16; one balanced wave of warps, each streaming
            R rows with the next weights in flight; the absmax stays fp32; GPUs without 64 KB of
            shared memory per block run v4; fp16 sums 8 products in half precision before fp32,
            so |x| must stay below ~8000; at batch 1 in fp16 with 6144-12287 rows it is launched with
            programmatic dependent launch on sm_90+, waiting for the kernel before it before any
            read), 9 v8 for inference with fixed weights: on sm_90+ it is
            launched with programmatic dependent launch and reads its first weights before the
            kernel just before it in the stream has finished, so it is correct only when that kernel
            does not write ``packed`` or ``absmax`` (the default never picks it; where the sweep found
            no gain, at other shapes, dtypes and batches, it runs v8), 10 tensor cores for batch 1-16
            (16 per launch, loops above): v7's mma.sync with each block reading the activations once
            (a warp owns every W-th 128-wide chunk of K and runs over all of its block's 16-row tiles
            with that chunk's activations in registers; v7 re-read all of x for every 16 rows, at
            batch 16 as many bytes from L2 as the fp16 weights), 16-byte weight loads (two lanes swap
            halves so that each mma still covers one absmax block, applied in fp32), the next tiles'
            weights in flight, v8's byte table built once per block of 2-8 tiles; needs K % 64
            == 0 and blocksize % 64 == 0 and sm_80+ code on an sm_80+ GPU, else it runs what the
            default runs without tensor cores.
            The default (None) is chosen by the CUDA op for the GPU, dtype, shape and batch. Where the GPU
            and the loaded code are sm_80+ and K and the blocksize are multiples of 64: v10 up to batch 16
            (in float16 at batch 1 only from 10240 rows or with at most 4096 rows of at least 4096 values,
            else v8), v7 above batch 16; without tensor cores (sm_75: T4, RTX 20xx) v8 below batch 4 for
            float16, v4 for bfloat16 and from batch 4.
            ``build.cuda_arch()`` says which code is loaded; benchmarks/results/kernels_h100.md has the
            measurements behind the rule. Above batch 4, versions 4-6 and 8 dequantize the weight to x's
            dtype (16-byte loads and stores) and call cuBLAS.

    Returns:
        ``[B, out_features]`` in ``x``'s dtype.
    """
    _check_x(x)
    check_int(out_features, "out_features", low=1)
    k = x.shape[1]
    _check_nf4(packed, absmax, out_features * k, blocksize)
    if version is not None:
        check_int(version, "version", low=1, high=10)
    device = _check_same_device(x=x, packed=packed, absmax=absmax)
    cuda_ok = x.dtype in (torch.float16, torch.bfloat16) and k % 32 == 0 and blocksize % 32 == 0
    if _pick(backend, device, supported=cuda_ok if device.type == "cuda" else True) == "torch":
        _check_finite(x=x, absmax=absmax)
        w = dequantize_nf4(packed, absmax, (out_features, k), blocksize, backend="torch")
        return (x.to(torch.float32) @ w.T).to(x.dtype)
    return torch.ops.course_lib.gemv_nf4(x.contiguous(), packed.reshape(-1).contiguous(), absmax.contiguous(),
                                         out_features, blocksize, version or 0)


def gemv_int4(x: torch.Tensor, packed: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor, group_size: int,
              backend: str = "auto", version: int = 4) -> torch.Tensor:
    """``x @ W.T`` with int4 weights in ``pack_int4``'s layout; CUDA needs ``group_size % 32 == 0``.

    ``version`` (CUDA only): 4 (a block's threads split K for a few rows) or 6 (persistent, one wave).
    """
    _check_x(x)
    n, k = _check_int4(packed, scale, zero, group_size)
    if x.shape[1] != k:
        raise ValueError(f"x must have in_features = {k} columns (2 * packed.shape[1]), got {x.shape[1]}")
    device = _check_same_device(x=x, packed=packed, scale=scale, zero=zero)
    check_int(version, "version", low=4, high=6)
    cuda_ok = x.dtype in (torch.float16, torch.bfloat16) and group_size % 32 == 0
    if _pick(backend, device, supported=cuda_ok if device.type == "cuda" else True) == "torch":
        _check_finite(x=x, scale=scale)
        return (x.to(torch.float32) @ _dequantize_int4_torch(packed, scale, zero, group_size).T).to(x.dtype)
    return torch.ops.course_lib.gemv_int4(x.contiguous(), packed.contiguous(), scale.contiguous(), zero.contiguous(),
                                          group_size, version)


def gemv_ternary(x: torch.Tensor, packed: torch.Tensor, scale: float, backend: str = "auto") -> torch.Tensor:
    """``x @ (scale * W).T`` for ternary ``W`` packed by ``course_lib.bitnet.pack_ternary``; additions only.

    Args:
        x: ``[B, K]`` activations; the CUDA kernel needs float16/bfloat16 and ``K % 64 == 0``.
        packed: uint8 ``[N, K/4]``.
        scale: the per-tensor weight scale (``mean|W|`` of BitNet's absmean quantizer), a positive float (a
            one-element tensor is read once with ``float()``, a device-to-host copy: pass a float on hot paths).
    """
    from ..bitnet import unpack_ternary

    _check_x(x)
    check_tensor(packed, "packed", dtypes=(torch.uint8,), ndim=2)
    if packed.shape[1] * 4 != x.shape[1]:
        raise ValueError(f"packed must have K / 4 = {x.shape[1] / 4:g} columns for x with K = {x.shape[1]}, "
                         f"got shape {tuple(packed.shape)}")
    if isinstance(scale, torch.Tensor):
        scale = float(scale)
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not (0 < scale < float("inf")):
        raise ValueError(f"scale must be a positive finite number, got {scale!r}")
    device = _check_same_device(x=x, packed=packed)
    cuda_ok = x.dtype in (torch.float16, torch.bfloat16) and x.shape[1] % 64 == 0
    if _pick(backend, device, supported=cuda_ok if device.type == "cuda" else True) == "torch":
        _check_finite(x=x)
        w = unpack_ternary(packed, x.shape[1]).to(torch.float32)
        return ((x.to(torch.float32) @ w.T) * scale).to(x.dtype)
    return torch.ops.course_lib.gemv_ternary(x.contiguous(), packed.contiguous(), float(scale))


# ----------------------------------------------------------------------------------------------
# the memory-bound argument


def gemv_bytes(n: int, k: int, batch: int = 1, weight_bits: float = 16, group_size: int | None = None,
               scale_bits: int = 0, act_bytes: int = 2) -> int:
    """Bytes a GEMV ``y[batch, n] = x[batch, k] @ W[n, k].T`` must move at least once.

    Args:
        n, k: the weight's shape (out_features, in_features), positive.
        batch: activation rows (>= 1).
        weight_bits: bits per stored weight (16 for fp16, 4 for NF4/int4, 2 for packed ternary, ...).
        group_size: weights per scale along ``k`` (None: no scales, e.g. fp16).
        scale_bits: bits per stored scale (+ zero point), e.g. 32 for NF4's float32 absmax.
        act_bytes: bytes per activation and per output element (2 for fp16).

    Returns:
        ``ceil(n*k*weight_bits/8) + n*ceil(k/group_size)*scale_bits/8 + batch*(k + n)*act_bytes``. At batch
        1 the weights dominate: the kernel's time is at least these bytes / memory bandwidth.
    """
    for value, name in ((n, "n"), (k, "k"), (batch, "batch"), (act_bytes, "act_bytes")):
        check_int(value, name, low=1)
    if isinstance(weight_bits, bool) or not isinstance(weight_bits, (int, float)) or not 0 < weight_bits <= 64:
        raise ValueError(f"weight_bits must be a number in (0, 64], got {weight_bits!r}")
    check_int(scale_bits, "scale_bits", low=0)
    scales = 0
    if group_size is not None:
        check_int(group_size, "group_size", low=1)
        scales = n * math.ceil(k / group_size) * scale_bits
    return math.ceil(n * k * weight_bits / 8) + math.ceil(scales / 8) + batch * (k + n) * act_bytes
