"""Notebook 13: low-bit kernels, each in three forms side by side.

=====================  ===========================  ==========================  ==========================
operation              PyTorch reference (any dev)  C++ extension (CPU)         CUDA extension (GPU)
=====================  ===========================  ==========================  ==========================
row-wise int8 quant    ``quantize_rows_int8``       csrc/lowbit_cpu.cpp          csrc/lowbit_cuda.cu
NF4 / int4 dequant     ``dequantize_nf4`` / int4    same names                   same names
W4A16 GEMV (B <= 16)   ``gemv_nf4`` / ``gemv_int4``  same names                   v1 naive, v2 warp, v3 fused
ternary GEMV           ``gemv_ternary``             additions only               additions only
=====================  ===========================  ==========================  ==========================

Every public function takes ``backend``: ``"torch"`` (the reference, built from the topic modules
``course_lib.nf4``, ``course_lib.granularity`` and ``course_lib.bitnet``), ``"cpp"``, ``"cuda"``, or
``"auto"`` (the default: the extension for the tensors' device when it builds and the shape is one the
kernel handles, else the reference). The extensions are compiled on first use with
``torch.utils.cpp_extension.load`` (about a minute; a message says so) into a cache folder
(``COURSE_KERNELS_CACHE``, default ``~/.cache/course_lib/kernels``) and load in milliseconds later.
When a build is impossible (no compiler, a CPU-only torch, no GPU), ``"auto"`` prints one message
naming the reason and uses the reference; asking for ``"cpp"`` or ``"cuda"`` explicitly raises.

Layouts (identical in all three forms):

- int8 rows: ``q[M, K]`` int8 and ``absmax[M]`` float32, ``q = round(x * (127 / absmax))`` (0 for an
  all-zero row), ``x ~ q * absmax / 127`` (LLM.int8()'s vector-wise quantization).
- NF4: bitsandbytes' layout, as ``course_lib.nf4.quantize_nf4`` makes it: the flattened weight,
  two codes per byte (high nibble first), one float32 absmax per ``blocksize`` consecutive weights.
- int4: ``packed[N, K/2]`` (high nibble first), ``scale[N, K/G]`` float32, ``zero[N, K/G]`` uint8,
  ``w = (q - zero) * scale`` (``course_lib.granularity``'s RTN quantizer, packed by ``pack_int4``).
- ternary: ``course_lib.bitnet.pack_ternary``'s layout, ``[N, K/4]`` uint8, per-tensor scale.
"""

from __future__ import annotations

import functools
import ctypes
import hashlib
import math
import os
import warnings
from collections.abc import Sequence
from pathlib import Path

import torch

from ..validation import FLOAT_DTYPES, check_int, check_tensor

__all__ = [
    "BACKENDS",
    "backend_status",
    "load_extension",
    "quantize_rows_int8",
    "dequantize_rows_int8",
    "dequantize_nf4",
    "pack_int4",
    "dequantize_int4",
    "gemv_nf4",
    "gemv_int4",
    "gemv_ternary",
    "gemv_bytes",
    "build_c_kernel",
    "call_rows_int8_c",
]

BACKENDS = ("auto", "torch", "cpp", "cuda")
CSRC = Path(__file__).resolve().parent / "csrc"
_SOURCES = {"cpp": ["lowbit_cpu.cpp"], "cuda": ["lowbit_cuda.cu"]}
_modules: dict[str, object] = {}
_failures: dict[str, str] = {}
_announced: set[str] = set()


# ----------------------------------------------------------------------------------------------
# building and loading the extensions


def cache_dir() -> Path:
    """Where compiled extensions are kept (``COURSE_KERNELS_CACHE`` or ``~/.cache/course_lib/kernels``)."""
    return Path(os.environ.get("COURSE_KERNELS_CACHE", Path.home() / ".cache" / "course_lib" / "kernels"))


def _why_not(kind: str) -> str | None:
    """Why the ``kind`` extension cannot be built here (None when it can be tried)."""
    from torch.utils import cpp_extension

    try:
        cpp_extension.verify_ninja_availability()
    except RuntimeError:
        return "ninja is not installed (pip install ninja)"
    if kind == "cuda":
        if torch.version.cuda is None:
            return "this torch build has no CUDA support"
        if not torch.cuda.is_available():
            return "no CUDA GPU is visible"
        if cpp_extension.CUDA_HOME is None:
            return "the CUDA toolkit (nvcc) was not found; set CUDA_HOME"
    return None


def _prefer_own_ninja() -> None:
    """Put this Python's bin/ first on PATH, so every build uses the same ninja (pip's, installed with the
    course): another ninja version on PATH writes a different build file and forces a full rebuild."""
    import sys

    bindir = os.path.dirname(sys.executable)
    path = os.environ.get("PATH", "")
    if not path.startswith(bindir + os.pathsep) and os.path.exists(os.path.join(bindir, "ninja")):
        os.environ["PATH"] = bindir + os.pathsep + path


def load_extension(kind: str, verbose: bool = False):
    """Build (first time) or load (later) the ``"cpp"`` or ``"cuda"`` extension; returns the module.

    Raises:
        RuntimeError: naming the reason when the extension cannot be built or loaded here.
    """
    if kind not in ("cpp", "cuda"):
        raise ValueError(f"kind must be 'cpp' or 'cuda', got {kind!r}")
    if kind in _modules:
        return _modules[kind]
    if kind in _failures:
        raise RuntimeError(_failures[kind])
    reason = _why_not(kind)
    if reason is None:
        from torch.utils import cpp_extension

        _prefer_own_ninja()

        sources = [CSRC / name for name in _SOURCES[kind]]
        # extra nvcc flags for kernel work, e.g. "-Xptxas=-v" for the compiler's register report
        extra = os.environ.get("COURSE_KERNELS_EXTRA_CUDA_FLAGS", "").split() if kind == "cuda" else []
        digest = hashlib.sha1(b"".join(p.read_bytes() for p in sources) + " ".join(extra).encode()).hexdigest()[:12]
        tag = f"torch{torch.__version__}".replace("+", "_")
        name = f"course_lowbit_{kind}_{digest}"
        build = cache_dir() / tag / name
        build.mkdir(parents=True, exist_ok=True)
        if not list(build.glob(f"{name}*.so")) and not list(build.glob(f"{name}*.pyd")):
            print(f"course_lib.kernels: compiling the {kind.upper()} extension (first use only, about a minute)...",
                  flush=True)
        flags = dict(extra_cflags=["-O3", "-fopenmp-simd"])
        if kind == "cuda":
            flags["extra_cuda_cflags"] = ["-O3", "-lineinfo", *extra]
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                module = cpp_extension.load(name=name, sources=[str(s) for s in sources], build_directory=str(build),
                                            verbose=verbose, **flags)
        except Exception as exc:  # a compiler error, a missing header: report it, don't crash callers
            reason = f"building it failed ({type(exc).__name__}: {str(exc).strip().splitlines()[-1][:300]})"
        else:
            _modules[kind] = module
            return module
    _failures[kind] = f"the {kind.upper()} extension is unavailable: {reason}"
    raise RuntimeError(_failures[kind])


def backend_status() -> dict[str, str]:
    """``{"cpp": "ready" | reason, "cuda": "ready" | reason}`` (tries to build each once)."""
    status = {}
    for kind in ("cpp", "cuda"):
        try:
            load_extension(kind)
            status[kind] = "ready"
        except RuntimeError as exc:
            status[kind] = str(exc)
    return status


def _pick(backend: str, device: torch.device, supported: bool = True) -> str:
    """Resolve ``backend`` for tensors on ``device``; ``supported``: the kernel handles this shape."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    kind = "cuda" if device.type == "cuda" else "cpp"
    if backend == "torch":
        return "torch"
    if backend in ("cpp", "cuda"):
        if backend != kind:
            raise ValueError(f"backend={backend!r} needs tensors on {'a CUDA device' if backend == 'cuda' else 'the CPU'}, "
                             f"got tensors on {device}")
        if not supported:
            raise ValueError(f"backend={backend!r} does not handle this shape (see the function's docstring); "
                             "use backend='torch' or 'auto'")
        load_extension(kind)
        return kind
    if device.type not in ("cpu", "cuda") or not supported:
        return "torch"
    try:
        load_extension(kind)
        return kind
    except RuntimeError as exc:
        if kind not in _announced:
            _announced.add(kind)
            print(f"course_lib.kernels: {exc}; using the PyTorch reference instead.", flush=True)
        return "torch"


# ----------------------------------------------------------------------------------------------
# argument checks


def _check_x(x: torch.Tensor, name: str = "x", dtypes=FLOAT_DTYPES) -> None:
    check_tensor(x, name, dtypes=dtypes, ndim=2)


def _check_same_device(**tensors: torch.Tensor) -> torch.device:
    devices = {name: t.device for name, t in tensors.items()}
    first = next(iter(devices.values()))
    for name, dev in devices.items():
        if dev != first:
            raise ValueError(f"{name} is on {dev} but {next(iter(devices))} is on {first}: move them to one device")
    return first


def _check_nf4(packed, absmax, n: int, blocksize: int) -> None:
    check_tensor(packed, "packed", dtypes=(torch.uint8,))
    check_tensor(absmax, "absmax", dtypes=(torch.float32,), ndim=1)
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
    check_tensor(scale, "scale", dtypes=(torch.float32,), ndim=2)
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
        x: float tensor ``[M, K]`` (float32, float16 or bfloat16), finite.
        backend: "auto", "torch", "cpp" or "cuda".

    Returns:
        (q, absmax): int8 ``[M, K]`` with ``q = round(x * 127 / absmax)`` (round half to even) and
        float32 ``[M]``; an all-zero row gets ``absmax = 0`` and codes 0 (no division by zero).
    """
    _check_x(x, dtypes=(torch.float32, torch.float16, torch.bfloat16))
    kind = _pick(backend, x.device)
    if kind == "torch":
        return _quantize_rows_int8_torch(x)
    if kind == "cpp":
        q, absmax = _modules["cpp"].quantize_rows_int8(x.to(torch.float32).contiguous())
    else:
        q, absmax = _modules["cuda"].quantize_rows_int8(x.contiguous())
    return q, absmax


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


@functools.lru_cache(maxsize=1)
def _nf4_code() -> torch.Tensor:
    """The NF4 codebook as a CPU float32 tensor (the CUDA extension copies it to constant memory once)."""
    from ..nf4 import nf4_codebook

    return nf4_codebook(device="cpu").to(torch.float32).contiguous()


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
    kind = _pick(backend, device)
    if kind == "torch":
        return reference(packed.reshape(-1), absmax, shape, blocksize).to(dtype)
    code = _nf4_code()
    if kind == "cpp":
        out = _modules["cpp"].dequantize_nf4(packed.reshape(-1).contiguous(), absmax.contiguous(), n, blocksize, code)
        return out.to(dtype).reshape(shape)
    out = _modules["cuda"].dequantize_nf4(packed.reshape(-1).contiguous(), absmax.contiguous(), n, blocksize, code, dtype)
    return out.reshape(shape)


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
    kind = _pick(backend, device)
    if kind == "torch":
        return _dequantize_int4_torch(packed, scale, zero, group_size).to(dtype)
    if kind == "cpp":
        return _modules["cpp"].dequantize_int4(packed.contiguous(), scale.contiguous(), zero.contiguous(),
                                               group_size).to(dtype)
    return _modules["cuda"].dequantize_int4(packed.contiguous(), scale.contiguous(), zero.contiguous(), group_size, dtype)


# ----------------------------------------------------------------------------------------------
# 3. fused W4A16 GEMV and 4. ternary GEMV


def _gemv_out(y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return y.to(x.dtype)


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
            == 0, other shapes run v4), 8 byte-table decode for batch 1-4 (one PRMT and one
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
            no gain, at other shapes, dtypes and batches, it runs v8).
            The default (None) is the fastest measured on the H200
            (benchmarks/results/kernels_h200.md): v8 below batch 4 for float16, v4 below batch 4
            for bfloat16, v7 from batch 4. Above batch
            4, versions 4-6 and 8 dequantize the weight to x's dtype (16-byte loads and stores) and
            call cuBLAS.

    Returns:
        ``[B, out_features]`` in ``x``'s dtype.
    """
    _check_x(x)
    check_int(out_features, "out_features", low=1)
    k = x.shape[1]
    _check_nf4(packed, absmax, out_features * k, blocksize)
    if version is None:
        if x.shape[0] >= 4:
            version = 7 if k % 64 == 0 and blocksize % 64 == 0 else 4
        else:  # v8's fp16 path (HFMA2) measured faster than v4; its bf16 path (fp32 FMAs) was not everywhere
            version = 8 if x.dtype == torch.float16 else 4
    check_int(version, "version", low=1, high=9)
    device = _check_same_device(x=x, packed=packed, absmax=absmax)
    cuda_ok = x.dtype in (torch.float16, torch.bfloat16) and k % 32 == 0 and blocksize % 32 == 0
    kind = _pick(backend, device, supported=cuda_ok if device.type == "cuda" else True)
    if kind == "torch":
        w = dequantize_nf4(packed, absmax, (out_features, k), blocksize, backend="torch")
        return _gemv_out(x.to(torch.float32) @ w.T, x)
    code = _nf4_code()
    if kind == "cpp":
        y = _modules["cpp"].gemv_nf4(x.to(torch.float32).contiguous(), packed.reshape(-1).contiguous(),
                                     absmax.contiguous(), out_features, blocksize, code)
        return _gemv_out(y, x)
    return _modules["cuda"].gemv_nf4(x.contiguous(), packed.reshape(-1).contiguous(), absmax.contiguous(),
                                     out_features, blocksize, code, version)


def gemv_int4(x: torch.Tensor, packed: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor, group_size: int,
              backend: str = "auto", version: int = 4) -> torch.Tensor:
    """``x @ W.T`` with int4 weights in ``pack_int4``'s layout; CUDA needs ``group_size % 32 == 0``."""
    _check_x(x)
    n, k = _check_int4(packed, scale, zero, group_size)
    if x.shape[1] != k:
        raise ValueError(f"x must have in_features = {k} columns (2 * packed.shape[1]), got {x.shape[1]}")
    device = _check_same_device(x=x, packed=packed, scale=scale, zero=zero)
    check_int(version, "version", low=4, high=6)
    cuda_ok = x.dtype in (torch.float16, torch.bfloat16) and group_size % 32 == 0
    kind = _pick(backend, device, supported=cuda_ok if device.type == "cuda" else True)
    if kind == "torch":
        return _gemv_out(x.to(torch.float32) @ _dequantize_int4_torch(packed, scale, zero, group_size).T, x)
    if kind == "cpp":
        y = _modules["cpp"].gemv_int4(x.to(torch.float32).contiguous(), packed.contiguous(), scale.contiguous(),
                                      zero.contiguous(), group_size)
        return _gemv_out(y, x)
    return _modules["cuda"].gemv_int4(x.contiguous(), packed.contiguous(), scale.contiguous(), zero.contiguous(),
                                      group_size, version)


def gemv_ternary(x: torch.Tensor, packed: torch.Tensor, scale: float, backend: str = "auto") -> torch.Tensor:
    """``x @ (scale * W).T`` for ternary ``W`` packed by ``course_lib.bitnet.pack_ternary``; additions only.

    Args:
        x: ``[B, K]`` activations; the CUDA kernel needs float16/bfloat16 and ``K % 64 == 0``.
        packed: uint8 ``[N, K/4]``.
        scale: the per-tensor weight scale (``mean|W|`` of BitNet's absmean quantizer), a positive float.
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
    kind = _pick(backend, device, supported=cuda_ok if device.type == "cuda" else True)
    if kind == "torch":
        w = unpack_ternary(packed, x.shape[1]).to(torch.float32)
        return _gemv_out((x.to(torch.float32) @ w.T) * scale, x)
    if kind == "cpp":
        return _gemv_out(_modules["cpp"].gemv_ternary(x.to(torch.float32).contiguous(), packed.contiguous(),
                                                      float(scale)), x)
    return _modules["cuda"].gemv_ternary(x.contiguous(), packed.contiguous(), float(scale))


# ----------------------------------------------------------------------------------------------
# the memory-bound argument, and a fast path for learners' own C++ kernels


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


def build_c_kernel(name: str, source: str, verbose: bool = False) -> ctypes.CDLL:
    """Compile C++ source with plain ``extern "C"`` functions (no torch headers) and load it with ctypes.

    The build goes through ``torch.utils.cpp_extension.load(..., is_python_module=False)`` (ninja, the
    torch toolchain's flags, a cache keyed by the source), but without torch's headers it compiles in a
    second or two instead of the ~40 s of a full extension: quick enough to edit and rebuild in a notebook.

    Args:
        name: a Python identifier naming the library.
        source: the C++ code; functions to call from Python must be declared ``extern "C"``.
        verbose: print the compiler's commands and output.

    Returns:
        The loaded library; set ``argtypes`` on its functions before calling them.

    Raises:
        RuntimeError: with the compiler's error messages when the source does not compile.
    """
    from torch.utils import cpp_extension

    if not isinstance(name, str) or not name.isidentifier():
        raise ValueError(f"name must be a Python identifier, got {name!r}")
    if not isinstance(source, str) or not source.strip():
        raise ValueError("source must be a non-empty string of C++ code")
    reason = _why_not("cpp")
    if reason is not None:
        raise RuntimeError(f"cannot build C++ code here: {reason}")
    _prefer_own_ninja()
    digest = hashlib.sha1(source.encode()).hexdigest()[:12]
    full = f"{name}_{digest}"
    build = cache_dir() / f"torch{torch.__version__}".replace("+", "_") / "c" / full
    build.mkdir(parents=True, exist_ok=True)
    src = build / f"{full}.cpp"
    if not src.exists() or src.read_text() != source:
        src.write_text(source)
    libs = list(build.glob(f"{full}*.so"))
    if not libs:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                cpp_extension.load(name=full, sources=[str(src)], build_directory=str(build), verbose=verbose,
                                   is_python_module=False, extra_cflags=["-O3", "-fopenmp-simd"])
        except RuntimeError as exc:
            raise RuntimeError(f"your C++ code did not compile:\n{exc}") from None
        libs = list(build.glob(f"{full}*.so"))
    return ctypes.CDLL(str(libs[0]))


def call_rows_int8_c(lib: ctypes.CDLL, x: torch.Tensor, function: str = "quantize_rows_int8") -> tuple[torch.Tensor, torch.Tensor]:
    """Run a learner's C function ``void f(const float* x, int8_t* q, float* absmax, int64_t M, int64_t K)``.

    Args:
        lib: from ``build_c_kernel``.
        x: float32 CPU tensor ``[M, K]`` (made contiguous here).
        function: the function's name in ``lib``.

    Returns:
        (q int8 ``[M, K]``, absmax float32 ``[M]``), the outputs the function wrote.
    """
    check_tensor(x, "x", dtypes=(torch.float32,), ndim=2)
    if x.device.type != "cpu":
        raise ValueError(f"x must be on the CPU for a C function, got {x.device}")
    fn = getattr(lib, function, None)
    if fn is None:
        raise AttributeError(f'the library has no function {function!r}: declare it extern "C" with that name')
    fn.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64]
    fn.restype = None
    x = x.contiguous()
    q = torch.zeros(x.shape, dtype=torch.int8)
    absmax = torch.zeros(x.shape[0], dtype=torch.float32)
    fn(x.data_ptr(), q.data_ptr(), absmax.data_ptr(), x.shape[0], x.shape[1])
    return q, absmax
